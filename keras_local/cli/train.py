"""`keras-local train`: one training run from command-line settings."""

from keras_local.cli.common import add_output_argument
from keras_local.cli.common import add_quiet_argument
from keras_local.cli.common import usage_errors

NAME = "train"
INTERRUPTED = "Run the same command again to resume after the last finished epoch."


def add_parser(commands):
    from keras_local.run_settings import RunSettings

    parser = commands.add_parser(
        NAME,
        help="train a model with a rule on a data set",
        description="Train a zoo model with a learning rule on a data set, as in "
        "Nøkland & Eidnes (2019): Adam, the learning rate multiplied by 0.25 (or "
        "--decay-factor) at the milestones, the paper's augmentation of the data set, the test set "
        "evaluated after every epoch. Prints a table of every block's local losses "
        "and accuracy each epoch, then the test error, and saves the model.",
    )
    RunSettings.add_arguments(parser)
    parser.add_argument(
        "--no-layer-report",
        dest="layer_report",
        action="store_false",
        help="skip the final pass over the training set that reports every layer's "
        "train accuracy beside its test accuracy",
    )
    add_output_argument(parser)
    add_quiet_argument(parser)
    return parser


def run(args, print_fn=print):
    from keras_local import experiment
    from keras_local import zoo
    from keras_local.run_files import check_model_path
    from keras_local.run_settings import RunSettings

    with usage_errors():
        settings = RunSettings.from_args(args).check()
        zoo.resolve_rule(settings.model, settings.rule, settings.rule_options)
        output = check_model_path(args.output or settings.default_output())
    return experiment.train(
        settings,
        output=output,
        verbose=2 if args.quiet else 1,
        print_fn=print_fn,
        layer_report=args.layer_report,
    )
