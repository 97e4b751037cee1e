"""`keras-local reproduce`: a paper's table, its recipes run in turn, the
paper's numbers printed beside ours."""

from keras_local.cli.common import UsageError
from keras_local.cli.common import add_quiet_argument
from keras_local.cli.common import add_subset_arguments
from keras_local.cli.common import check_positive
from keras_local.cli.common import fail
from keras_local.cli.common import usage_errors

NAME = "reproduce"
#: The lines of README.md between which `--write-readme` puts the results table.
README_MARKERS = ("<!-- results-table:start -->", "<!-- results-table:end -->")
INTERRUPTED = (
    "Run the same command again to resume: the runs recorded are kept and the "
    "interrupted one resumes after its last finished epoch."
)


def add_parser(commands):
    from keras_local import data

    parser = commands.add_parser(
        NAME,
        help="run a paper table's recipes, print ours beside the paper's",
        description="Run, one at a time, each recipe of a paper's table that has no "
        "full-length result yet for each seed (as `keras-local run` does, appending "
        "to the results table; an interrupted run resumes when the command is run "
        "again), then print the paper's table beside ours. Runs shortened with "
        "--epochs, --train-examples or --test-examples are smoke tests and are "
        "labelled so, never as reproductions.",
    )
    parser.add_argument(
        "tables",
        nargs="*",
        metavar="TABLE",
        help="a table, e.g. nokland-table2 or rec-lra-table1 (see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the tables and exit")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the README's results table (markdown) of the TABLEs (default: "
        "all named tables) from the results file, and exit",
    )
    parser.add_argument(
        "--write-readme",
        nargs="?",
        const="README.md",
        metavar="PATH",
        help="write that table between the lines {} and {} of PATH (default: "
        "README.md) instead of printing it".format(*README_MARKERS),
    )
    parser.add_argument(
        "--no-run", action="store_true", help="train nothing; only print the table"
    )
    parser.add_argument(
        "--dataset",
        choices=data.DATASETS,
        help="use the table's recipes for this data set (default: the table's, "
        "fashion_mnist)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="RECIPE",
        help="only these recipes of the table (names as in zoo/, .toml optional)",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[1],
        metavar="SEED",
        help="run each recipe once per seed (default: 1)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="train this many epochs instead of the recipes' (learning-rate "
        "milestones scaled): a short run, not a reproduction",
    )
    add_subset_arguments(parser)
    parser.add_argument(
        "--results",
        default="zoo/results.md",
        metavar="PATH",
        help="the markdown results table read and appended to (default: "
        "zoo/results.md, from the working directory)",
    )
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        help="where the models are saved, under the names `keras-local run` gives "
        "them (default: saved_models/)",
    )
    add_quiet_argument(parser)
    return parser


def run(args, print_fn=print):
    from keras_local import reproduce

    with usage_errors():
        check_positive(args, "epochs", "train_examples", "test_examples")
        if args.list:
            list_tables(print_fn)
            return
        tables = [reproduce.get_table(name) for name in args.tables]
        if args.markdown or args.write_readme:
            text = reproduce.markdown_table(tables or None, args.results, args.dataset)
            if args.write_readme:
                write_between_markers(args.write_readme, text)
                print_fn(f"Wrote the results table of {args.results} to {args.write_readme}.")
            else:
                print_fn(text.rstrip("\n"))
            return
        if not tables:
            names = ", ".join(table.name for table in reproduce.tables())
            raise UsageError(f"Name a table to reproduce: {names} (see --list).")
        short = reproduce.ShortConfig(args.epochs, args.train_examples, args.test_examples)
        chosen = [reproduce.select_recipes(t, args.dataset, args.only) for t in tables]
        reproduce.read_results(args.results)  # a damaged file is named before training
        plans = [
            None
            if args.no_run
            else reproduce.plan_runs(recipes, args.seeds, args.results, args.output_dir, short)
            for recipes in chosen
        ]
    failures = []
    for table, recipes, plan in zip(tables, chosen, plans):
        if plan is not None:
            print_fn(f"{table.name}: {len(recipes)} recipes, seeds {_join(args.seeds)}.")
            failures += reproduce.run_missing(
                plan, args.results, short, verbose=2 if args.quiet else 1, print_fn=print_fn
            )
        records = reproduce.read_results(args.results)
        summaries = [reproduce.summarize(recipe, records, short) for recipe in recipes]
        print_fn("")
        print_fn(reproduce.format_table(table, summaries, args.seeds, short, args.results))
    if failures:
        names = "; ".join(f"{name} (seed {seed}): {message}" for name, seed, message in failures)
        fail(f"{len(failures)} run(s) diverged: {names}")


def write_between_markers(path, text):
    """Replaces what lies between the `README_MARKERS` lines of the file
    `path` with `text`; a usage error when the file lacks them."""
    start, end = README_MARKERS
    try:
        with open(path, encoding="utf-8") as f:
            document = f.read()
    except OSError as error:
        raise UsageError(f"Cannot read {path}: {error.strerror}.") from None
    head, found, rest = document.partition(start)
    _, found_end, tail = rest.partition(end)
    if not (found and found_end):
        raise UsageError(f"{path} has no lines {start} and {end} to write the table between.")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{start}\n{text.strip()}\n{end}{tail}")


def list_tables(print_fn=print):
    """Prints each table: its name, paper and what it holds, and its recipes
    per data set."""
    from keras_local import reproduce

    for table in reproduce.tables():
        print_fn(f"{table.name}: {table.cite}, {table.table}: {table.title}.")
        for dataset in table.datasets():
            count = len(table.recipes(dataset))
            default = " (the default)" if dataset == table.dataset else ""
            print_fn(f"    --dataset {dataset}{default}: {count} recipes")


def _join(values):
    return ", ".join(map(str, values))
