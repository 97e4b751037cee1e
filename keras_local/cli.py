"""The `keras-local` command.

    keras-local train --model vgg8b --rule predsim --dataset fashion_mnist --epochs 200
    keras-local run zoo/fashion_mnist-mlp-predsim.toml --epochs 2 --train-examples 2000
    keras-local list

Errors in what the user asked for (an unknown name, a parameter the rule does
not take, a bad number) are reported as `keras-local: error: ...` with exit
status 2, like argparse's own usage errors, without a traceback.
"""

import argparse
import sys

PROG = "keras-local"


def _number(text):
    """An int when the text is integral (`2`), else a float (`1.5`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    return int(value) if value.is_integer() and "." not in text else value


def _rule_option(text):
    """`name=value`, the value read as a bool, int, float or string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    try:
        return name, _number(value)
    except argparse.ArgumentTypeError:
        return name, value


def _first_paragraph(text):
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def _add_subset_arguments(parser):
    parser.add_argument(
        "--train-examples",
        type=int,
        metavar="N",
        help="train on the first N training examples only (quick runs); default: all",
    )
    parser.add_argument(
        "--test-examples",
        type=int,
        metavar="N",
        help="evaluate on the first N test examples only; default: all",
    )


def _add_run_arguments(parser):
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="where to save the model, a path ending in .keras; a JSON summary goes "
        "to PATH.json (default: saved_models/<model>-<rule>-<dataset>.keras). An "
        "interrupted run resumes when run again with the same settings and output",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: not seeded)")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="one line per epoch instead of a progress bar (for logs)",
    )


def build_parser():
    """The argument parser of `keras-local`."""
    from keras_local import data
    from keras_local import rules
    from keras_local import zoo

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train deep networks with local learning rules (Keras 3).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train",
        help="train a model with a rule on a data set",
        description="Train a zoo model with a learning rule on a data set, as in "
        "Nøkland & Eidnes (2019): Adam, the learning rate multiplied by 0.25 at "
        "the milestones, the paper's augmentation of the data set, the test set "
        "evaluated after every epoch. Prints a table of every block's local losses "
        "and accuracy each epoch, then the test error, and saves the model.",
    )
    train.add_argument("--model", default="mlp", choices=zoo.names(), help="default: mlp")
    train.add_argument(
        "--rule", default="predsim", choices=rules.names(), help="default: predsim"
    )
    train.add_argument(
        "--dataset",
        default="fashion_mnist",
        choices=data.DATASETS,
        help="default: fashion_mnist",
    )
    train.add_argument("--epochs", type=int, default=1, help="default: 1")
    train.add_argument("--batch-size", type=int, default=128, help="default: 128")
    train.add_argument(
        "--learning-rate", type=float, default=5e-4, help="initial learning rate (default: 5e-4)"
    )
    train.add_argument(
        "--milestones",
        type=int,
        nargs="+",
        metavar="EPOCH",
        help="epochs after which the learning rate is multiplied by 0.25 (default: "
        "50%%, 75%%, 89%% and 94%% of --epochs, as in the paper)",
    )
    train.add_argument(
        "--width",
        type=_number,
        default=1,
        help="width multiplier: conv filters of a VGG (2 = the paper's '(2x)'), "
        "units of an MLP (default: 1)",
    )
    train.add_argument(
        "--dropout", type=float, default=0.0, help="dropout rate of the hidden blocks (default: 0)"
    )
    train.add_argument(
        "--beta",
        type=float,
        help="predsim only: weight of the similarity loss (default: the rule's, 0.99)",
    )
    train.add_argument(
        "--dim-in-decoder",
        type=int,
        metavar="N",
        help="pred and predsim only: largest input size of the local classifiers "
        "of conv blocks (default: the rule's, 4096)",
    )
    train.add_argument(
        "--no-layer-report",
        dest="layer_report",
        action="store_false",
        help="skip the final pass over the training set that reports every layer's "
        "train accuracy beside its test accuracy",
    )
    train.add_argument(
        "--rule-option",
        action="append",
        type=_rule_option,
        default=[],
        metavar="NAME=VALUE",
        help="another parameter of the rule, e.g. --rule-option feedback=scfb for "
        "random-classifier (repeatable; `keras-local list` shows each rule's)",
    )
    train.add_argument(
        "--activation",
        help="hidden activation, e.g. relu, leaky_relu (default: the rule's: relu for "
        "backprop and pred, leaky_relu for sim and predsim)",
    )
    train.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="train without the paper's augmentation of the data set (for "
        "fashion_mnist: 2-pixel jitter and horizontal flips)",
    )
    train.add_argument(
        "--cutout",
        type=int,
        nargs="?",
        const=True,
        metavar="LENGTH",
        help="add cutout with holes of LENGTH pixels; without LENGTH, the paper's "
        "length for the data set (14 for the MNIST family)",
    )
    _add_subset_arguments(train)
    _add_run_arguments(train)

    run = commands.add_parser(
        "run",
        help="run a recipe from zoo/ and record its result",
        description="Run a recipe (a TOML file in zoo/ with the settings of one "
        "cell of a paper's table) and append its test error, next to the paper's, "
        "to a markdown results table.",
    )
    run.add_argument(
        "recipe",
        metavar="RECIPE",
        help="a recipe file, e.g. zoo/fashion_mnist-mlp-predsim.toml",
    )
    run.add_argument(
        "--epochs",
        type=int,
        help="train this many epochs instead of the recipe's; the learning-rate "
        "milestones are scaled to match",
    )
    _add_subset_arguments(run)
    run.add_argument(
        "--results",
        default="zoo/results.md",
        metavar="PATH",
        help="the markdown table the result is appended to (default: zoo/results.md)",
    )
    _add_run_arguments(run)

    _add_analyze_parser(commands)

    commands.add_parser(
        "list",
        help="list the models, rules and data sets",
        description="List the models, the rules with their parameters, and the data sets.",
    )
    return parser


def _add_analyze_parser(commands):
    from keras_local import data

    analyze = commands.add_parser(
        "analyze",
        help="measure how well a saved model's layers separate the classes",
        description="Measure the representation quality of a saved model's layers, as "
        "Kao & Chen (Associated Learning, Table 4): for every layer, the inter-class "
        "distance (between class centroids), the intra-class distance (between two "
        "examples of a class, averaged over classes) and their ratio (higher = better "
        "separated), on a fixed-seed stratified subset of a data split. Optionally "
        "writes a t-SNE plot of one layer (the paper's Figures 3-4).",
    )
    analyze.add_argument("model", metavar="MODEL", help="a saved model, a .keras file")
    analyze.add_argument(
        "--dataset",
        choices=data.DATASETS,
        help="default: the data set in MODEL.json, the summary `train` writes",
    )
    analyze.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="'input', block numbers from 1 (or block1, ...) and 'output' "
        "(default: every block and output)",
    )
    analyze.add_argument(
        "--split", choices=("test", "train"), default="test", help="default: test"
    )
    analyze.add_argument(
        "--examples",
        type=int,
        default=2000,
        metavar="N",
        help="measure about N examples, a fixed-seed subset with every class in "
        "proportion (default: 2000)",
    )
    analyze.add_argument(
        "--tsne-layer",
        metavar="LAYER",
        help="write a t-SNE plot of this layer (default with --tsne-out: output)",
    )
    analyze.add_argument(
        "--tsne-out",
        metavar="PATH",
        help="where to write the t-SNE PNG (default with --tsne-layer: "
        "MODEL-tsne-LAYER.png beside the model)",
    )
    analyze.add_argument("--batch-size", type=int, default=256, help="default: 256")
    analyze.add_argument(
        "--seed", type=int, default=0, help="seed of the subset and the t-SNE (default: 0)"
    )


def list_components(print_fn=print):
    """Prints the models, rules (with parameters and defaults) and data sets."""
    from keras_local import data
    from keras_local import rules
    from keras_local import zoo

    width = max(map(len, [*zoo.names(), *rules.names()]))
    print_fn("Models:")
    for name in zoo.names():
        print_fn(f"  {name:{width}s} {_first_paragraph(zoo.get(name).__doc__)}")
    print_fn("")
    print_fn("Rules (parameters with their defaults):")
    for name in rules.names():
        rule = rules.get(name)
        parameters = rules.parameters(name)
        settings = ", ".join(f"{k}={v!r}" for k, v in parameters.items()) or "no parameters"
        print_fn(f"  {name:{width}s} {settings}; activation {rule.default_activation}")
        print_fn(f"  {'':{width}s} {_first_paragraph(type(rule).__doc__)}")
    print_fn("")
    print_fn("Data sets:")
    for name in data.DATASETS:
        info = data.info(name)
        shape = "x".join(map(str, info.input_shape))
        print_fn(f"  {name:14s} {info.num_classes} classes, images {shape}")


def _train(args):
    from keras_local import experiment

    return experiment.train(
        model=args.model,
        rule=args.rule,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        width=args.width,
        dropout=args.dropout,
        learning_rate=args.learning_rate,
        beta=args.beta,
        dim_in_decoder=args.dim_in_decoder,
        activation=args.activation,
        augment=args.augment,
        cutout=args.cutout,
        milestones=args.milestones,
        train_examples=args.train_examples,
        test_examples=args.test_examples,
        seed=args.seed,
        output=args.output,
        verbose=2 if args.quiet else 1,
        rule_options=dict(args.rule_option),
        layer_report=args.layer_report,
    )


def _run(args):
    from keras_local import recipes

    return recipes.run_recipe(
        args.recipe,
        epochs=args.epochs,
        train_examples=args.train_examples,
        test_examples=args.test_examples,
        results=args.results,
        output=args.output,
        seed=args.seed,
        verbose=2 if args.quiet else 1,
    )


def _dataset_of_saved_model(path):
    """The data set a `train` run recorded in `<path>.json`, or None."""
    import json
    import os

    summary = f"{path}.json"
    if not os.path.exists(summary):
        return None
    with open(summary) as f:
        return json.load(f).get("parameters", {}).get("dataset")


def _analyze(args, print_fn=print):
    import os

    import keras

    import keras_local  # noqa: F401 - registers the classes `load_model` needs
    from keras_local import analysis
    from keras_local import data

    if not os.path.isfile(args.model):
        raise ValueError(f"No saved model at {args.model!r}.")
    dataset = args.dataset or _dataset_of_saved_model(args.model)
    if dataset is None:
        raise ValueError(
            f"Which data set? {args.model}.json does not say; pass --dataset."
        )
    if args.examples < 1 or args.batch_size < 1:
        raise ValueError("--examples and --batch-size must be positive.")
    model = keras.saving.load_model(args.model, compile=False)
    if not hasattr(model, "hidden_blocks"):
        raise ValueError(f"{args.model} is not a keras_local LocalModel.")
    layers = args.layers or [*range(1, len(model.hidden_blocks) + 1), "output"]
    for layer in [*layers, args.tsne_layer or "output"]:
        analysis.resolve_layer(model, layer)  # a bad layer fails before the data loads

    (x_train, y_train), (x_test, y_test) = data.load(dataset)
    x, y = (x_test, y_test) if args.split == "test" else (x_train, y_train)
    model.check_data(x[:1], y)
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


def main(argv=None):
    """Runs `keras-local` with `argv` (default: the command line); returns
    the exit status."""
    from keras_local.data import DatasetUnavailableError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            _train(args)
        elif args.command == "run":
            _run(args)
        elif args.command == "analyze":
            _analyze(args)
        else:
            list_components()
    except ValueError as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    except DatasetUnavailableError as e:
        parser.exit(1, f"{PROG}: error: {e}\n")
    except KeyboardInterrupt:
        if args.command in ("list", "analyze"):
            raise
        parser.exit(
            130,
            f"\n{PROG}: interrupted. Run the same command again to resume after the "
            "last finished epoch.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
