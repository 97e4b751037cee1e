"""`keras-local analyze`: how well a saved model's layers separate the classes."""

from keras_local.cli.common import add_saved_model_arguments
from keras_local.cli.common import check_positive
from keras_local.cli.common import dataset_of_saved_model
from keras_local.cli.common import usage_errors

NAME = "analyze"


def add_parser(commands):
    parser = commands.add_parser(
        NAME,
        help="measure how well a saved model's layers separate the classes",
        description="Measure the representation quality of a saved model's layers, as "
        "Kao & Chen (Associated Learning, Table 4): for every layer, the inter-class "
        "distance (between class centroids), the intra-class distance (between two "
        "examples of a class, averaged over classes) and their ratio (higher = better "
        "separated), on a fixed-seed stratified subset of a data split. Optionally "
        "writes a t-SNE plot of one layer (the paper's Figures 3-4), and, with "
        "--alignment, the angle per block between the rule's update and backprop's "
        "gradient of the output loss on one batch.",
    )
    add_saved_model_arguments(parser)
    parser.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="'input', block numbers from 1 (or block1, ...) and 'output' "
        "(default: every block and output)",
    )
    parser.add_argument(
        "--split", choices=("test", "train"), default="test", help="default: test"
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=2000,
        metavar="N",
        help="measure about N examples, a fixed-seed subset with every class in "
        "proportion (default: 2000)",
    )
    parser.add_argument(
        "--tsne-layer",
        metavar="LAYER",
        help="write a t-SNE plot of this layer (default with --tsne-out: output)",
    )
    parser.add_argument(
        "--tsne-out",
        metavar="PATH",
        help="where to write the t-SNE PNG (default with --tsne-layer: "
        "MODEL-tsne-LAYER.png beside the model)",
    )
    parser.add_argument(
        "--alignment",
        action="store_true",
        help="also print, per block, the angle between the rule's update and the "
        "backprop gradient of the output loss (and between feedback and forward "
        "weights), on one batch of the split (keras_local.analysis.alignment)",
    )
    parser.add_argument(
        "--alignment-examples",
        type=int,
        default=256,
        metavar="N",
        help="the batch of --alignment: N examples drawn at random with --seed "
        "(default: 256)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="default: 256")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the subset and the t-SNE (default: 0)"
    )
    return parser


def run(args, print_fn=print):
    import os

    import keras_local  # noqa: F401 - registers the classes `load_model` needs
    from keras_local import analysis
    from keras_local import data
    from keras_local.optional import require
    from keras_local.run_files import load_model_file

    with usage_errors():
        model = load_model_file(args.model)
        if args.tsne_layer is not None or args.tsne_out is not None:
            # Before the measurements, not after them.
            require("sklearn", feature="t-SNE plots (keras-local analyze)")
            require("matplotlib", feature="t-SNE plots (keras-local analyze)")
        dataset = dataset_of_saved_model(args)
        check_positive(args, "examples", "batch_size", "alignment_examples")
        layers = args.layers or [*range(1, len(model.hidden_blocks) + 1), "output"]
        for layer in [*layers, args.tsne_layer or "output"]:
            analysis.resolve_layer(model, layer)  # a bad layer fails before the data loads

    (x_train, y_train), (x_test, y_test) = data.load(dataset)
    x, y = (x_test, y_test) if args.split == "test" else (x_train, y_train)
    with usage_errors():
        model.check_data(x[:1], y)
    alignment_batch = None
    if args.alignment:
        subset = alignment_subset(len(y), args.alignment_examples, args.seed)
        alignment_batch = x[subset], y[subset]
    subset = analysis.stratified_subset(y, args.examples, args.seed)
    x, y = x[subset], y[subset]

    tsne_layer, tsne_out = args.tsne_layer, args.tsne_out
    if tsne_out is not None or tsne_layer is not None:
        tsne_layer = tsne_layer or "output"
        if tsne_out is None:
            name = analysis.layer_name(analysis.resolve_layer(model, tsne_layer))
            tsne_out = f"{os.path.splitext(args.model)[0]}-tsne-{name}.png"
    wanted = list(layers) + ([tsne_layer] if tsne_layer is not None else [])
    features = analysis.activations(model, x, wanted, args.batch_size)

    print_fn(
        f"Class distances of {model.name} ({args.model}) on {len(x)} {args.split} "
        f"examples of {dataset}: inter = mean distance between class centroids, "
        "intra = mean distance within a class; higher inter:intra = better separated"
    )
    rows = []
    for layer in layers:
        distances = analysis.class_distances(features[layer], y, max_examples=None)
        name = analysis.layer_name(analysis.resolve_layer(model, layer))
        rows.append({"layer": name, **distances.as_dict()})
    for line in analysis.format_report(rows):
        print_fn(line)

    if alignment_batch is not None:
        result = analysis.alignment(model, *alignment_batch)
        print_fn(result.format(examples=f"{args.split} examples of {dataset}"))

    if tsne_layer is not None:
        name = analysis.layer_name(analysis.resolve_layer(model, tsne_layer))
        analysis.tsne_plot(
            features[tsne_layer],
            y,
            tsne_out,
            title=f"{model.name} {name}, {dataset} {args.split} (t-SNE)",
            max_examples=None,
            seed=args.seed,
            class_names=analysis.CLASS_NAMES.get(dataset),
        )
        print_fn(f"t-SNE of {name} written to {tsne_out}")
    return rows


def alignment_subset(num_examples, size, seed):
    """The indices of the `--alignment` batch: `size` examples (at most all)
    drawn without replacement by a generator seeded with `seed`, sorted."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(num_examples)[: min(size, num_examples)])
