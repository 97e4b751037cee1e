"""`keras-local run`: a recipe of zoo/, its result appended to a table."""

from keras_local.cli.common import add_run_arguments
from keras_local.cli.common import add_subset_arguments
from keras_local.cli.common import usage_errors

NAME = "run"
INTERRUPTED = "Run the same command again to resume after the last finished epoch."


def add_parser(commands):
    parser = commands.add_parser(
        NAME,
        help="run a recipe from zoo/ and record its result",
        description="Run a recipe (a TOML file in zoo/ with the settings of one "
        "cell of a paper's table) and append its test error, next to the paper's, "
        "to a markdown results table.",
    )
    parser.add_argument(
        "recipe",
        metavar="RECIPE",
        help="a recipe file, e.g. zoo/fashion_mnist-mlp-predsim.toml; a bare name "
        "(fashion_mnist-mlp-predsim.toml) or a zoo/ path that does not exist here "
        "is looked up among the recipes shipped with keras_local",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="train this many epochs instead of the recipe's; the learning-rate "
        "milestones are scaled to match",
    )
    add_subset_arguments(parser)
    parser.add_argument(
        "--results",
        default="zoo/results.md",
        metavar="PATH",
        help="the markdown table the result is appended to (default: zoo/results.md, "
        "from the working directory)",
    )
    add_run_arguments(parser)
    return parser


def run(args, print_fn=print):
    from keras_local import recipes
    from keras_local import zoo

    with usage_errors():
        recipe = recipes.Recipe.from_file(args.recipe)
        settings = recipe.settings_for(
            args.epochs,
            train_examples=args.train_examples,
            test_examples=args.test_examples,
            seed=args.seed,
        ).check()
        zoo.resolve_rule(settings.model, settings.rule, settings.rule_options)
    return recipes.run_recipe(
        args.recipe,
        epochs=args.epochs,
        train_examples=args.train_examples,
        test_examples=args.test_examples,
        results=args.results,
        output=args.output,
        seed=args.seed,
        verbose=2 if args.quiet else 1,
        print_fn=print_fn,
    )
