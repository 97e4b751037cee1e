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
    from keras_local import __version__
    from keras_local import data
    from keras_local import rules
    from keras_local import zoo

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train deep networks with local learning rules (Keras 3).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
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
        help="a recipe file, e.g. zoo/fashion_mnist-mlp-predsim.toml; a bare name "
        "(fashion_mnist-mlp-predsim.toml) or a zoo/ path that does not exist here "
        "is looked up among the recipes shipped with keras_local",
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
        help="the markdown table the result is appended to (default: zoo/results.md, "
        "from the working directory)",
    )
    _add_run_arguments(run)

    _add_analyze_parser(commands)
    _add_tune_parser(commands)
    _add_export_parser(commands)
    _add_early_exit_parser(commands)

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


def _dataset_of_saved_model(args):
    """`--dataset`, or else the data set a `train` run recorded in
    `MODEL.json`; `ValueError` when neither says."""
    import json
    import os

    if args.dataset:
        return args.dataset
    summary = f"{args.model}.json"
    dataset = None
    if os.path.exists(summary):
        with open(summary) as f:
            dataset = json.load(f).get("parameters", {}).get("dataset")
    if dataset is None:
        raise ValueError(f"Which data set? {args.model}.json does not say; pass --dataset.")
    return dataset


def _analyze(args, print_fn=print):
    import os

    import keras

    import keras_local  # noqa: F401 - registers the classes `load_model` needs
    from keras_local import analysis
    from keras_local import data

    if not os.path.isfile(args.model):
        raise ValueError(f"No saved model at {args.model!r}.")
    dataset = _dataset_of_saved_model(args)
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


def _add_tune_parser(commands):
    # Not `keras_local.tuning` (it imports keras-tuner): only `tune` needs it.
    from keras_local import data
    from keras_local import rules
    from keras_local import zoo

    tune = commands.add_parser(
        "tune",
        help="search hyperparameters with keras-tuner, then retrain the best",
        description="Search the learning rate (log scale), the dropout rate and, for "
        "rules that take it, beta, with keras-tuner (Hyperband by default). The "
        "objective is the output layer's accuracy on a held-out part of the "
        "training set (never the test set). The search is stored in "
        "DIRECTORY/PROJECT/ with best_hyperparameters.json and the results of every "
        "trial (results.json, results.md); running the same command again resumes "
        "it. The best configuration is then retrained on the whole training set and "
        "saved (default saved_models/PROJECT/model.keras). Options given here "
        "override those of a recipe.",
    )
    tune.add_argument(
        "recipe",
        nargs="?",
        metavar="RECIPE",
        help="a search recipe, e.g. tuning/fashion_mnist-vgg8b-predsim.toml (its "
        "file name is the default project name)",
    )
    tune.add_argument("--model", choices=zoo.names(), help="default: mlp")
    tune.add_argument("--rule", choices=rules.names(), help="default: predsim")
    tune.add_argument("--dataset", choices=data.DATASETS, help="default: fashion_mnist")
    tune.add_argument(
        "--tuner", choices=("hyperband", "random", "bayesian"), help="default: hyperband"
    )
    tune.add_argument(
        "--max-trials",
        type=int,
        metavar="N",
        help="trials of random search and Bayesian optimisation (default: 10); a cap "
        "for Hyperband. Raise it to extend a finished search",
    )
    tune.add_argument(
        "--max-epochs",
        type=int,
        metavar="N",
        help="epochs per trial; for Hyperband the most any configuration gets "
        "(default: 3)",
    )
    tune.add_argument("--factor", type=int, help="Hyperband's reduction factor (default: 3)")
    tune.add_argument(
        "--validation-fraction",
        type=float,
        metavar="F",
        help="share of the training set held out for the objective (default: 0.1)",
    )
    for name, what in (
        ("learning-rate", "the learning rate, sampled on a log scale (default: 1e-4 3e-3)"),
        ("dropout", "the dropout rate (default: 0 0.3 in steps of 0.05)"),
        (
            "beta",
            "beta, for rules that take it, sampled linearly (default: 0.001 0.999 with "
            "1 - beta log-uniform for predsim, beta log-uniform for predsim-bpf)",
        ),
    ):
        tune.add_argument(
            f"--{name}", type=float, nargs=2, metavar=("MIN", "MAX"), help=f"range of {what}"
        )
    tune.add_argument(
        "--fixed",
        action="append",
        type=_rule_option,
        default=[],
        metavar="NAME=VALUE",
        help="a builder argument held fixed, e.g. --fixed dim_in_decoder=1024 or "
        "--fixed units=256 (repeatable)",
    )
    tune.add_argument(
        "--rule-option",
        action="append",
        type=_rule_option,
        default=[],
        metavar="NAME=VALUE",
        help="another parameter of the rule (repeatable)",
    )
    tune.add_argument("--batch-size", type=int, help="default: 128")
    tune.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        default=None,
        help="train without the paper's augmentation of the data set",
    )
    tune.add_argument(
        "--seed",
        type=int,
        help="seeds the validation split, the tuner and the initial weights (default: 0)",
    )
    _add_subset_arguments(tune)
    tune.add_argument(
        "--directory", default="tuning", help="where searches are stored (default: tuning)"
    )
    tune.add_argument(
        "--project",
        help="name of the search (default: the recipe's file name, else "
        "<dataset>-<model>-<rule>)",
    )
    tune.add_argument(
        "--overwrite", action="store_true", help="start over instead of resuming"
    )
    tune.add_argument(
        "--no-retrain",
        dest="retrain",
        action="store_false",
        help="do not retrain and save the best configuration",
    )
    tune.add_argument(
        "--no-export",
        dest="export",
        action="store_false",
        help="do not export the retrained model as a SavedModel (saved_model/ beside "
        "the .keras file)",
    )
    tune.add_argument(
        "--retrain-epochs",
        type=int,
        metavar="N",
        help="epochs of the retraining (default: --max-epochs)",
    )
    tune.add_argument(
        "--output",
        metavar="PATH",
        help="where to save the retrained model, a .keras path (default: "
        "saved_models/<project>/model.keras)",
    )
    tune.add_argument(
        "--no-xla",
        dest="jit_compile",
        action="store_const",
        const=False,
        help="compile without XLA (starts faster; for very small models)",
    )
    tune.add_argument(
        "--quiet",
        action="store_true",
        help="one line per epoch instead of a progress bar (for logs)",
    )


def _tune(args, print_fn=print):
    from keras_local import tuning

    settings = tuning.load_recipe(args.recipe) if args.recipe else {}
    given = {
        "model": args.model,
        "rule": args.rule,
        "data": args.dataset,
        "tuner": args.tuner,
        "max_trials": args.max_trials,
        "max_epochs": args.max_epochs,
        "factor": args.factor,
        "validation_fraction": args.validation_fraction,
        "batch_size": args.batch_size,
        "augment": args.augment,
        "seed": args.seed,
        "train_examples": args.train_examples,
        "retrain_epochs": args.retrain_epochs,
        "project_name": args.project,
    }
    settings.update({name: value for name, value in given.items() if value is not None})
    if args.fixed:
        settings["fixed"] = {**settings.get("fixed", {}), **dict(args.fixed)}
    if args.rule_option:
        settings["rule_options"] = {**settings.get("rule_options", {}), **dict(args.rule_option)}
    ranges = {"learning_rate": args.learning_rate, "dropout": args.dropout, "beta": args.beta}
    if any(ranges.values()):
        rule = settings.get("rule", "predsim")
        space = dict(settings.get("space") or tuning.default_space(rule))
        space.update({name: list(r) for name, r in ranges.items() if r is not None})
        settings["space"] = space
    try:
        tuning.tune(
            **settings,
            test_examples=args.test_examples,
            directory=args.directory,
            overwrite=args.overwrite,
            retrain=args.retrain,
            export=args.export,
            output=args.output,
            jit_compile=args.jit_compile,
            verbose=2 if args.quiet else 1,
            print_fn=print_fn,
        )
    except tuning.TuningError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(
            f"\n{PROG}: interrupted. Run the same command again to resume the search; "
            "finished trials are kept.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


def _add_export_parser(commands):
    export = commands.add_parser(
        "export",
        help="export a saved model as a SavedModel (with an early-exit signature) or ONNX",
        description="Export a saved model (.keras) for serving. SavedModel: signatures "
        "'serving_default' (input 'inputs'; output 'probabilities', the full network's "
        "softmax) and 'early_exit' (inputs 'inputs' and 'threshold'; outputs "
        "'probabilities', 'exit_index' (0-based over the exits, the last being the full "
        "network) and 'blocks_run'), dynamic batch size, loadable with "
        "tf.saved_model.load without keras_local. ONNX: the full network ('inputs' -> "
        "'probabilities'). Runs on the TensorFlow backend; from another backend (a model "
        "trained on JAX) it switches to TensorFlow in a child process.",
    )
    export.add_argument("model", metavar="MODEL", help="a saved model, a .keras file")
    export.add_argument(
        "--format",
        choices=("saved_model", "onnx", "all"),
        default="saved_model",
        help="default: saved_model",
    )
    export.add_argument(
        "--output",
        metavar="PATH",
        help="destination (default: saved_models/NAME/ for a SavedModel, "
        "saved_models/NAME.onnx for ONNX, NAME being MODEL's file name without .keras); "
        "with --format all, the SavedModel's, the ONNX file going to PATH.onnx",
    )
    export.add_argument(
        "--criterion",
        choices=("max_probability", "entropy"),
        default="max_probability",
        help="confidence of the early_exit signature: the largest probability, or "
        "1 - entropy / log(classes) (default: max_probability)",
    )
    export.add_argument("--opset", type=int, help="ONNX opset (default: tf2onnx's)")


def _export(args, print_fn=print):
    from keras_local import export

    formats = ("saved_model", "onnx") if args.format == "all" else (args.format,)
    written = []
    for format in formats:
        path = args.output
        if path is not None and format == "onnx" and args.format == "all":
            path = f"{path.rstrip('/')}.onnx"
        try:
            written.append(
                export.export_file(
                    args.model, path, format=format, criterion=args.criterion, opset=args.opset
                )
            )
        except (RuntimeError, ImportError) as e:
            print(f"{PROG}: error: {format} export failed: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        print_fn(f"{format} written to {written[-1]}")
    return written


DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)


def _add_early_exit_parser(commands):
    from keras_local import data

    report = commands.add_parser(
        "early-exit",
        help="accuracy and compute of early-exit inference against the threshold",
        description="Early-exit report of a saved model: for each confidence threshold, "
        "the accuracy, the mean number of hidden blocks run, the share of examples "
        "answering at each exit (every block with a local classifier or probe, then the "
        "output) and the wall time per example of the compiled early-exit path, beside "
        "the full network. Prints a table and writes a PNG plot and a JSON file. "
        "Accuracy and blocks are over --examples examples; the time is measured on "
        "--timing-examples of them.",
    )
    report.add_argument("model", metavar="MODEL", help="a saved model, a .keras file")
    report.add_argument(
        "--dataset",
        choices=data.DATASETS,
        help="default: the data set in MODEL.json, the summary `train` writes",
    )
    report.add_argument(
        "--split", choices=("test", "train"), default="test", help="default: test"
    )
    report.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=list(DEFAULT_THRESHOLDS),
        metavar="T",
        help="confidence thresholds; above 1 is the full network (default: "
        f"{' '.join(map(str, DEFAULT_THRESHOLDS))})",
    )
    report.add_argument(
        "--criterion",
        choices=("max_probability", "entropy"),
        default="max_probability",
        help="the confidence: the largest softmax probability, or 1 - entropy / "
        "log(classes) (default: max_probability)",
    )
    report.add_argument(
        "--examples",
        type=int,
        metavar="N",
        help="use the first N examples of the split (default: all)",
    )
    report.add_argument(
        "--timing-examples",
        type=int,
        default=1024,
        metavar="N",
        help="time the early-exit path and the full network on the first N examples "
        "(default: 1024)",
    )
    report.add_argument(
        "--repeats", type=int, default=3, help="timed runs, the median is kept (default: 3)"
    )
    report.add_argument("--batch-size", type=int, default=256, help="default: 256")
    report.add_argument(
        "--plot",
        metavar="PATH",
        help="the PNG to write (default: MODEL-early-exit.png beside the model); the "
        "JSON goes beside it with .json",
    )


def _early_exit(args, print_fn=print):
    import json
    import os

    import keras

    from keras_local import data
    from keras_local import early_exit
    from keras_local import export

    model = export.load(args.model)
    dataset = _dataset_of_saved_model(args)
    for name in ("examples", "timing_examples", "repeats", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive.")
    (x_train, y_train), (x_test, y_test) = data.load(dataset)
    x, y = (x_test, y_test) if args.split == "test" else (x_train, y_train)
    if args.examples is not None:
        x, y = x[: args.examples], y[: args.examples]
    model.check_data(x[:1], y)
    exits = early_exit.exits(model)
    if len(exits) == 1:
        print_fn(
            f"Note: {model.name} (rule {model.rule.name}) has a single exit, the output; "
            "train it with keras_local.rules.with_probes(rule) (--rule probes "
            "--rule-option rule=NAME) to give every block one."
        )
    result = early_exit.report(
        model,
        x,
        y,
        args.thresholds,
        criterion=args.criterion,
        batch_size=args.batch_size,
        timing_examples=args.timing_examples,
        repeats=args.repeats,
    )
    result.update(model_path=args.model, dataset=dataset, split=args.split)
    print_fn(
        f"Early exit of {model.name} ({args.model}, rule {model.rule.name}) on {len(x)} "
        f"{args.split} examples of {dataset}, criterion {args.criterion}; exits "
        + ", ".join(f"{e.name} (after {e.blocks_run} of {len(model.hidden_blocks)} blocks)"
                    for e in exits)
        + f". Time per example on {result['timing_examples']} examples, batch size "
        f"{args.batch_size}, backend {keras.backend.backend()}"
        + (" (compiled)." if result["compiled"] else " (eager).")
    )
    for line in early_exit.format_report(result):
        print_fn(line)
    plot = args.plot or f"{os.path.splitext(args.model)[0]}-early-exit.png"
    directory = os.path.dirname(plot)
    if directory:
        os.makedirs(directory, exist_ok=True)
    early_exit.plot_report(
        result, plot, title=f"{model.name} ({model.rule.name}), {dataset} {args.split}"
    )
    summary = f"{os.path.splitext(plot)[0]}.json"
    with open(summary, "w") as f:
        json.dump(result, f, indent=2)
    print_fn(f"Plot written to {plot}, results to {summary}")
    return result


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
        elif args.command == "tune":
            _tune(args)
        elif args.command == "export":
            _export(args)
        elif args.command == "early-exit":
            _early_exit(args)
        else:
            list_components()
    except ValueError as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    except DatasetUnavailableError as e:
        parser.exit(1, f"{PROG}: error: {e}\n")
    except KeyboardInterrupt:
        if args.command in ("list", "analyze", "export", "early-exit"):
            raise
        parser.exit(
            130,
            f"\n{PROG}: interrupted. Run the same command again to resume after the "
            "last finished epoch.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
