"""`keras-local tune`: a hyperparameter search, then the best retrained."""

from keras_local.cli.common import add_quiet_argument
from keras_local.cli.common import add_subset_arguments
from keras_local.cli.common import fail
from keras_local.cli.common import usage_errors
from keras_local.run_settings import number
from keras_local.run_settings import parse_rule_option

NAME = "tune"
INTERRUPTED = "Run the same command again to resume the search; finished trials are kept."


def add_parser(commands):
    from keras_local import data
    from keras_local import rules
    from keras_local import zoo

    parser = commands.add_parser(
        NAME,
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
    parser.add_argument(
        "recipe",
        nargs="?",
        metavar="RECIPE",
        help="a search recipe, e.g. tuning/fashion_mnist-vgg8b-predsim.toml (its "
        "file name is the default project name)",
    )
    parser.add_argument("--model", choices=zoo.names(), help="default: mlp")
    parser.add_argument("--rule", choices=rules.names(), help="default: predsim")
    parser.add_argument("--dataset", choices=data.DATASETS, help="default: fashion_mnist")
    _add_search_arguments(parser)
    _add_space_arguments(parser)
    _add_storage_arguments(parser)
    return parser


def _add_search_arguments(parser):
    from keras_local import tuning

    parser.add_argument(
        "--tuner", choices=tuning.TUNERS, help="default: hyperband"
    )
    parser.add_argument(
        "--max-trials",
        type=int,
        metavar="N",
        help="trials of random search and Bayesian optimisation (default: 10); a cap "
        "for Hyperband. Raise it to extend a finished search",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        metavar="N",
        help="epochs per trial; for Hyperband the most any configuration gets "
        "(default: 3)",
    )
    parser.add_argument("--factor", type=int, help="Hyperband's reduction factor (default: 3)")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        metavar="F",
        help="share of the training set held out for the objective (default: 0.1)",
    )


def _add_space_arguments(parser):
    for name, what in (
        ("learning-rate", "the learning rate, sampled on a log scale (default: 1e-4 3e-3)"),
        ("dropout", "the dropout rate (default: 0 0.3 in steps of 0.05)"),
        (
            "beta",
            "beta, for rules that take it, sampled linearly (default: 0.001 0.999 with "
            "1 - beta log-uniform for predsim, beta log-uniform for predsim-bpf)",
        ),
    ):
        parser.add_argument(
            f"--{name}", type=float, nargs=2, metavar=("MIN", "MAX"), help=f"range of {what}"
        )
    parser.add_argument(
        "--range",
        dest="ranges",
        action="append",
        nargs=3,
        default=[],
        metavar=("NAME", "MIN", "MAX"),
        help="range of any other searched value: a builder argument, or a rule "
        "parameter as rule.NAME, e.g. --range rule.gamma 0.001 0.1 (repeatable)",
    )
    parser.add_argument(
        "--fixed",
        action="append",
        type=parse_rule_option,
        default=[],
        metavar="NAME=VALUE",
        help="a builder argument held fixed, e.g. --fixed dim_in_decoder=1024 or "
        "--fixed units=256 (repeatable)",
    )
    parser.add_argument(
        "--rule-option",
        action="append",
        type=parse_rule_option,
        default=[],
        metavar="NAME=VALUE",
        help="another parameter of the rule (repeatable)",
    )
    parser.add_argument("--batch-size", type=int, help="default: 128")
    parser.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        default=None,
        help="train without the paper's augmentation of the data set",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seeds the validation split, the tuner and the initial weights (default: 0)",
    )


def _add_storage_arguments(parser):
    add_subset_arguments(parser)
    parser.add_argument(
        "--directory", default="tuning", help="where searches are stored (default: tuning)"
    )
    parser.add_argument(
        "--project",
        help="name of the search (default: the recipe's file name, else "
        "<dataset>-<model>-<rule>)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="start over instead of resuming"
    )
    parser.add_argument(
        "--no-retrain",
        dest="retrain",
        action="store_false",
        help="do not retrain and save the best configuration",
    )
    parser.add_argument(
        "--no-export",
        dest="export",
        action="store_false",
        help="do not export the retrained model as a SavedModel (saved_model/ beside "
        "the .keras file)",
    )
    parser.add_argument(
        "--retrain-epochs",
        type=int,
        metavar="N",
        help="epochs of the retraining (default: --max-epochs)",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="where to save the retrained model, a .keras path (default: "
        "saved_models/<project>/model.keras)",
    )
    parser.add_argument(
        "--no-xla",
        dest="jit_compile",
        action="store_const",
        const=False,
        help="compile without XLA (starts faster; for very small models)",
    )
    add_quiet_argument(parser)


def run(args, print_fn=print):
    from keras_local import tuning

    with usage_errors():
        arguments = tune_arguments(args)
    try:
        return tuning.tune(
            **arguments,
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
        fail(str(e))


def tune_arguments(args):
    """The `tuning.tune` arguments of the search recipe (if any) with the
    command-line options over them; `ValueError` for a bad recipe, rule
    option or range."""
    from keras_local import tuning
    from keras_local import zoo

    arguments = tuning.load_recipe(args.recipe) if args.recipe else {}
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
    arguments.update({name: value for name, value in given.items() if value is not None})
    if args.fixed:
        arguments["fixed"] = {**arguments.get("fixed", {}), **dict(args.fixed)}
    if args.rule_option:
        arguments["rule_options"] = {
            **arguments.get("rule_options", {}),
            **dict(args.rule_option),
        }
    rule = arguments.get("rule", "predsim")
    ranges = {"learning_rate": args.learning_rate, "dropout": args.dropout, "beta": args.beta}
    ranges.update({name: [number(low), number(high)] for name, low, high in args.ranges})
    if any(ranges.values()):
        space = dict(arguments.get("space") or tuning.default_space(rule))
        space.update({name: list(r) for name, r in ranges.items() if r is not None})
        arguments["space"] = space
    # A rule option the rule does not take fails here, before any data loads.
    zoo.resolve_rule(arguments.get("model", "mlp"), rule, arguments.get("rule_options"))
    return arguments
