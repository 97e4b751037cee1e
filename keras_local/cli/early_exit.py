"""`keras-local early-exit`: accuracy and compute of early-exit inference."""

from keras_local.cli.common import add_saved_model_arguments
from keras_local.cli.common import check_positive
from keras_local.cli.common import dataset_of_saved_model
from keras_local.cli.common import usage_errors

NAME = "early-exit"
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)


def add_parser(commands):
    parser = commands.add_parser(
        NAME,
        help="accuracy and compute of early-exit inference against the threshold",
        description="Early-exit report of a saved model: for each confidence threshold, "
        "the accuracy, the mean number of hidden blocks run, the share of examples "
        "answering at each exit (every block with a local classifier or probe, then the "
        "output) and the wall time per example of the compiled early-exit path, beside "
        "the full network. Prints a table and writes a PNG plot and a JSON file. "
        "Accuracy and blocks are over --examples examples; the time is measured on "
        "--timing-examples of them.",
    )
    add_saved_model_arguments(parser)
    parser.add_argument(
        "--split", choices=("test", "train"), default="test", help="default: test"
    )
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=list(DEFAULT_THRESHOLDS),
        metavar="T",
        help="confidence thresholds; above 1 is the full network (default: "
        f"{' '.join(map(str, DEFAULT_THRESHOLDS))})",
    )
    parser.add_argument(
        "--criterion",
        choices=("max_probability", "entropy"),
        default="max_probability",
        help="the confidence: the largest softmax probability, or 1 - entropy / "
        "log(classes) (default: max_probability)",
    )
    parser.add_argument(
        "--examples",
        type=int,
        metavar="N",
        help="use the first N examples of the split (default: all)",
    )
    parser.add_argument(
        "--timing-examples",
        type=int,
        default=1024,
        metavar="N",
        help="time the early-exit path and the full network on the first N examples "
        "(default: 1024)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs, the median is kept (default: 3)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="default: 256")
    parser.add_argument(
        "--plot",
        metavar="PATH",
        help="the PNG to write (default: MODEL-early-exit.png beside the model); the "
        "JSON goes beside it with .json",
    )
    return parser


def run(args, print_fn=print):
    import os

    import keras

    from keras_local import data
    from keras_local import early_exit
    from keras_local import export
    from keras_local.run_files import strict_json
    from keras_local.run_files import write_atomic

    with usage_errors():
        model = export.load(args.model)
        dataset = dataset_of_saved_model(args)
        check_positive(args, "examples", "timing_examples", "repeats", "batch_size")
    (x_train, y_train), (x_test, y_test) = data.load(dataset)
    x, y = (x_test, y_test) if args.split == "test" else (x_train, y_train)
    if args.examples is not None:
        x, y = x[: args.examples], y[: args.examples]
    with usage_errors():
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
    write_atomic(summary, strict_json(result))
    print_fn(f"Plot written to {plot}, results to {summary}")
    return result
