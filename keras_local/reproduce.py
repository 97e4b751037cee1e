"""Paper tables: the recipes of one, their recorded results, and the paper's
numbers beside ours.

A `PaperTable` names one table of a paper (`nokland-table2`: Nøkland &
Eidnes 2019, Table 2). Its recipes are not listed here: they are the recipes
in `zoo/` whose `paper` and `table` keys say they come from it and that have
a `paper_test_error`, for one data set (`PaperTable.recipes`).

`read_results` reads the rows of `zoo/results.md` back; `summarize` condenses
a recipe's rows into its full-length runs (mean, min-max range and count over
seeds) and, apart, its short runs, which are never a reproduction.
`format_table` prints the paper's table beside ours, `markdown_table` the
README's results table; `plan_runs` and `run_missing` train what a table
lacks (`keras-local reproduce`).
"""

import dataclasses
import os
import re
import statistics

from keras_local import recipes as recipe_files
from keras_local.recipes import RESULTS_COLUMNS

#: The results file `keras-local run` and `keras-local reproduce` append to.
DEFAULT_RESULTS = "zoo/results.md"

SHORT_WARNING = "short run: NOT a reproduction"


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """One table of a paper, reproduced by the recipes that cite it.

    Attributes:
        name: the command-line name (`nokland-table2`).
        cite: the paper, short (`Nøkland & Eidnes 2019`).
        title: what the table shows, one line.
        paper, table: a recipe with a `paper_test_error` belongs to the
            table when its `paper` starts with `paper` and its `table` is
            `table` or starts with it and a space (`Table 2` matches
            `Table 2 (Fashion-MNIST)`, not `Table 20`).
        dataset: the data set whose recipes are used unless another is asked for.
        row_order, column_order: the paper's order of its rows and columns.
    """

    name: str
    cite: str
    title: str
    paper: str
    table: str
    dataset: str = "fashion_mnist"
    row_order: tuple = ()
    column_order: tuple = ()

    def matches(self, recipe):
        table = recipe.table or ""
        return (
            recipe.paper_test_error is not None
            and (recipe.paper or "").startswith(self.paper)
            and (table == self.table or table.startswith(self.table + " "))
        )

    def recipes(self, dataset=None):
        """The table's recipes for `dataset` (default `self.dataset`), in the
        paper's order."""
        dataset = dataset or self.dataset
        found = [r for r in all_recipes() if self.matches(r) and r.dataset == dataset]
        return sorted(found, key=self._position)

    def datasets(self):
        return sorted({r.dataset for r in all_recipes() if self.matches(r)})

    def _position(self, recipe):
        def place(order, value):
            return order.index(value) if value in order else len(order)

        return (
            place(self.row_order, recipe.row),
            recipe.row or "",
            place(self.column_order, recipe.column),
            recipe.column or "",
            recipe.name,
        )


#: The tables `keras-local reproduce` knows by name.
TABLES = (
    PaperTable(
        name="nokland-table2",
        cite="Nøkland & Eidnes 2019",
        title="3x1024 MLP and VGG8B trained with global backprop (glob) and the "
        "local losses pred, sim and predsim",
        paper="Nøkland & Eidnes 2019",
        table="Table 2",
        row_order=("3x1024 MLP", "VGG8B"),
        column_order=("glob", "pred", "sim", "predsim"),
    ),
    PaperTable(
        name="rec-lra-table1",
        cite="Ororbia et al. 2023",
        title="rec-LRA (tanh, relu, elu, sign), backprop, FA and DFA on the 5x256 MLP",
        paper="Ororbia, Mali, Kifer & Giles 2023",
        table="Table 1",
        row_order=(
            "rLRA, tanh", "rLRA, relu", "rLRA, elu", "rLRA, sign (non-diff)",
            "BP", "FA", "DFA",
        ),  # fmt: skip
    ),
)


def all_recipes():
    """Every recipe in `recipes.recipe_directories()` (a name found in two
    folders counts once, from the first, as `find_recipe` looks it up)."""
    found = {}
    for directory in recipe_files.recipe_directories():
        for path in sorted(directory.glob("*.toml")):
            found.setdefault(path.name, path)
    return [recipe_files.Recipe.from_file(str(path)) for path in found.values()]


def tables():
    """`TABLES`, then a table for each other (paper, table) of recipes with
    published numbers (named `<first author>-<year>-table<number>`)."""
    known = list(TABLES)
    for recipe in all_recipes():
        if recipe.paper_test_error is None or not recipe.paper or not recipe.table:
            continue
        if any(table.matches(recipe) for table in known):
            continue
        cite = recipe.paper.split(",")[0].strip()
        number = recipe.table.split(" (")[0].strip()
        year = re.findall(r"\b(?:19|20)\d\d\b", cite)[:1]
        words = re.findall(r"[a-z0-9]+", " ".join([cite.split()[0], *year, number]).lower())
        known.append(
            PaperTable(
                name="-".join(words).replace("table-", "table"),
                cite=cite,
                title=f"the recipes citing {number}",
                paper=recipe.paper,
                table=number,
                dataset=recipe.dataset,
            )
        )
    return known


def get_table(name):
    """The table called `name`; `ValueError` naming the known ones."""
    known = tables()
    for table in known:
        if table.name == name:
            return table
    names = ", ".join(table.name for table in known)
    raise ValueError(f"Unknown table {name!r}. The tables: {names} (see --list).")


@dataclasses.dataclass(frozen=True)
class ResultRecord:
    """One row of a results file, with its numbers parsed."""

    recipe: str
    dataset: str
    model: str
    rule: str
    epochs: int
    recipe_epochs: int
    train_examples: int
    test_error: float
    paper_test_error: float | None
    backend: str
    machine: str
    date: str
    wall_time: str
    note: str

    @property
    def seed(self):
        """The run's seed (from the note), `None` when it was not seeded."""
        match = re.search(r"\bseed (\d+)\b", self.note)
        return int(match.group(1)) if match else None

    @property
    def test_examples(self):
        """The test examples evaluated when only the first ones were, else `None`."""
        match = re.search(r"first (\d+) test examples", self.note)
        return int(match.group(1)) if match else None

    @property
    def superseded(self):
        """Marked by hand as a run of settings the recipe no longer has
        (`superseded` in its note): kept in the file, left out of summaries."""
        return bool(re.search(r"\bsuperseded\b", self.note))

    @property
    def full_length(self):
        """The recipe's epochs on all training and test examples: a run that
        can be compared with the paper."""
        return (
            self.epochs == self.recipe_epochs
            and self.test_examples is None
            and not re.search(r"\bshort\b", self.note)
        )


def read_results(path=DEFAULT_RESULTS):
    """The rows of the results file `path` (none when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return parse_results(f.read(), source=str(path))


def parse_results(text, source="the results"):
    """The `ResultRecord`s of the markdown table in `text`; `ValueError`
    naming the line of a row that does not parse."""
    header, records = None, []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            missing = [c for c in RESULTS_COLUMNS if c not in header]
            if missing:
                raise ValueError(f"{source}: the table lacks the columns {missing}.")
        elif set(cells) != {"---"}:
            if len(cells) != len(header):
                raise ValueError(
                    f"{source}, line {number}: {len(cells)} cells, expected {len(header)}."
                )
            records.append(_record(dict(zip(header, cells)), f"{source}, line {number}"))
    return records


def _cells(line):
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [part.strip().replace("\\|", "|") for part in parts]


def _record(cells, where):
    recipe, dataset, model, rule, epochs, train, error, paper, _, *rest = (
        cells[column] for column in RESULTS_COLUMNS
    )
    try:
        run, recipe_epochs = epochs.split("/")
        paper = None if paper in ("", "-") else float(paper)
        numbers = (int(run), int(recipe_epochs), int(train), float(error), paper)
    except ValueError as e:
        raise ValueError(f"{where}: cannot read the row ({e}).") from None
    return ResultRecord(recipe, dataset, model, rule, *numbers, *rest)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Test errors of the runs of one configuration: their `mean`, `low`
    and `high`; `spread` is the min-max range, `n` the number of runs (one
    per seed)."""

    records: tuple
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, records):
        errors = [r.test_error for r in records]
        return cls(tuple(records), statistics.fmean(errors), min(errors), max(errors))

    @property
    def n(self):
        return len(self.records)

    @property
    def spread(self):
        return self.high - self.low

    @property
    def seeds(self):
        return sorted({r.seed for r in self.records if r.seed is not None})

    @property
    def backends(self):
        return ", ".join(sorted({r.backend for r in self.records}))

    @property
    def epochs(self):
        """`run/recipe` epochs of the latest run, e.g. `3/200`."""
        last = self.records[-1]
        return f"{last.epochs}/{last.recipe_epochs}"

    def describe(self):
        """`8.61 (8.50-8.72, n=3)`, or `8.61 (n=1)` for one run."""
        if self.n == 1:
            return f"{self.mean:.2f} (n=1)"
        return f"{self.mean:.2f} ({self.low:.2f}-{self.high:.2f}, n={self.n})"


@dataclasses.dataclass(frozen=True)
class ShortConfig:
    """A short run asked for: `None` fields are the recipe's (all examples)."""

    epochs: int | None = None
    train_examples: int | None = None
    test_examples: int | None = None

    def describe(self, recipe_epochs=None):
        """E.g. `1 of 200 epochs, 256 training examples`."""
        parts = []
        if self.epochs is not None:
            of = f" of {recipe_epochs}" if recipe_epochs else " (not the recipe's)"
            parts.append(f"{self.epochs}{of} epochs")
        if self.train_examples is not None:
            parts.append(f"{self.train_examples} training examples")
        if self.test_examples is not None:
            parts.append(f"the first {self.test_examples} test examples")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class RecipeSummary:
    """A recipe's recorded results: `full` (full-length runs) and `short`
    (one configuration of short runs: the one asked for, else the latest);
    each a `Stats` or `None`."""

    recipe: object
    full: Stats | None
    short: Stats | None

    def shown(self, short_only=False):
        """The `Stats` a table shows: the full-length runs when there are
        any (unless `short_only`), else the short ones."""
        if short_only:
            return self.short
        return self.full or self.short


def summarize(recipe, records, short=None):
    """The `RecipeSummary` of `recipe` from all `records` of a results file.

    Rows repeated exactly (a finished run recorded twice) count once. With
    `short` (a `ShortConfig`), the short runs shown are those of that
    configuration; otherwise those of the latest short row's epochs, training
    and test examples."""
    mine = list(dict.fromkeys(r for r in records if r.recipe == recipe.name and not r.superseded))
    full = [r for r in mine if r.full_length and r.recipe_epochs == recipe.epochs]
    others = [r for r in mine if r not in full]
    if short not in (None, ShortConfig()):
        others = [r for r in others if _is_config(r, short, recipe)]
        if short.train_examples is None and others:
            # All training examples: the largest count among these rows.
            most = max(r.train_examples for r in others)
            others = [r for r in others if r.train_examples == most]
    if others:
        last = others[-1]
        key = (last.epochs, last.train_examples, last.test_examples)
        others = [r for r in others if (r.epochs, r.train_examples, r.test_examples) == key]
    return RecipeSummary(
        recipe, Stats.of(full) if full else None, Stats.of(others) if others else None
    )


def _is_config(record, short, recipe):
    return (
        record.epochs == (short.epochs or recipe.epochs)
        and record.test_examples == short.test_examples
        and short.train_examples in (None, record.train_examples)
    )


def summarize_table(table, records, dataset=None, short=None, only=None):
    """`RecipeSummary` of each recipe of `table` (those named in `only`)."""
    chosen = select_recipes(table, dataset, only)
    return [summarize(recipe, records, short) for recipe in chosen]


def select_recipes(table, dataset=None, only=None):
    """The recipes of `table` for `dataset`, only those named in `only`
    (names with or without `.toml`) when given; `ValueError` when none or an
    unknown name."""
    dataset = dataset or table.dataset
    found = table.recipes(dataset)
    if not found:
        datasets = ", ".join(table.datasets()) or "none"
        raise ValueError(
            f"{table.name} has no recipes for {dataset}; data sets with recipes: {datasets}."
        )
    if not only:
        return found
    names = [os.path.basename(name).removesuffix(".toml") for name in only]
    unknown = [name for name in names if name not in {r.name for r in found}]
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)} is not a recipe of {table.name} on {dataset}; its "
            f"recipes: {', '.join(r.name for r in found)}."
        )
    return [r for r in found if r.name in names]


def format_table(table, summaries, seeds=None, short=None, source=None):
    """The paper's table beside ours, as aligned text: row | column | paper %
    | ours % | diff | epochs | backend | status.

    Args:
        table: the `PaperTable`.
        summaries: its recipes' `RecipeSummary`s (`summarize_table`).
        seeds: the seeds asked for; a full-length row lacking some says so.
        short: a `ShortConfig` with a field set: show those short runs, under
            a banner saying they are not reproductions.
        source: the results file, named under the table.
    """
    short_only = short is not None and short != ShortConfig()
    first = summaries[0].recipe if summaries else None
    label = first.table if first else table.table
    lines = [f"{table.cite}, {label}: {table.title}; test error %."]
    if short_only:
        lines.append(
            f"SHORT RUNS ({short.describe(first.epochs if first else None)}): smoke "
            "tests, NOT reproductions of the paper."
        )
    header = ("row", "column", "paper %", "ours %", "diff", "epochs", "backend", "status")
    rows = [_text_row(summary, seeds, short_only) for summary in summaries]
    lines += _aligned([header, *rows])
    runs = "these short runs" if short_only else (
        "the full-length runs (the recipe's epochs on all examples)"
    )
    lines.append(
        f"ours %: mean test error of {runs}, with the min-max range over the runs and "
        "n, the number of runs (one per seed); diff: ours - paper, in points."
    )
    lines.append(
        "A row marked 'short run' trained fewer epochs or examples than the recipe: "
        "a smoke test, not a reproduction."
    )
    if source is not None:
        lines.append(f"Results read from {source}.")
    return "\n".join(lines)


def _text_row(summary, seeds, short_only):
    recipe = summary.recipe
    paper = recipe.paper_test_error
    cells = [recipe.row or "", recipe.column or "", f"{paper:.2f}"]
    stats = summary.shown(short_only)
    if stats is None:
        return cells + ["not run", "", "", "", "not run"]
    cells += [stats.describe(), f"{stats.mean - paper:+.2f}", stats.epochs, stats.backends]
    if stats is summary.full:
        missing = [s for s in (seeds or ()) if s not in stats.seeds]
        status = "full length"
        if stats.seeds:
            status += f" ({_seeds(stats.seeds)})"
        if missing:
            status += f"; {_seeds(missing)} not run"
        return cells + [status]
    last = stats.records[-1]
    status = f"{SHORT_WARNING} ({last.train_examples} training examples"
    if last.test_examples is not None:
        status += f", first {last.test_examples} test examples"
    status += ")"
    if summary.full is not None:
        status += f"; full length: {summary.full.describe()}"
    return cells + [status]


def _seeds(seeds):
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _aligned(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


def markdown_table(names=None, results=DEFAULT_RESULTS, dataset=None):
    """The README's results table: paper | row | rule | paper % | ours % |
    epochs | backend, a line per recipe of each table in `names` (names or
    `PaperTable`s; default `TABLES`), from the results file `results`.

    *ours %* is the mean of the full-length runs with their min-max range
    and count, else the latest short runs' mean marked "short run", else
    "not run"."""
    chosen = [get_table(t) if isinstance(t, str) else t for t in (names or TABLES)]
    records = read_results(results)
    columns = ("paper", "row", "rule", "paper %", "ours %", "epochs", "backend")
    lines = [_markdown_line(columns), _markdown_line(["---"] * len(columns))]
    for table in chosen:
        for i, summary in enumerate(summarize_table(table, records, dataset)):
            recipe, stats = summary.recipe, summary.shown()
            if stats is None:
                ours, epochs, backend = "not run", f"-/{recipe.epochs}", "-"
            else:
                short = stats is not summary.full
                ours = f"{stats.mean:.2f} (short run)" if short else stats.describe()
                epochs, backend = stats.epochs, stats.backends
            cite = f"{table.cite}, {recipe.table}" if i == 0 else ""
            paper = f"{recipe.paper_test_error:.2f}"
            lines.append(
                _markdown_line([cite, recipe.row, recipe.rule, paper, ours, epochs, backend])
            )
    return "\n".join(lines) + "\n"


def _markdown_line(cells):
    return "| " + " | ".join(str(c or "").replace("|", "\\|") for c in cells) + " |"


def run_output(settings, output_dir=None):
    """Where `keras-local reproduce` saves a run of `settings`: the output
    `keras-local run` chooses (`RunSettings.default_output()`, which names
    the seed, epochs and training examples), with the test examples when only
    the first ones are used, in `output_dir` when given. The same settings
    give the same path, so an interrupted run resumes."""
    path = settings.default_output()
    if settings.test_examples is not None:
        path = f"{path.removesuffix('.keras')}-test_examples={settings.test_examples}.keras"
    if output_dir is not None:
        path = os.path.join(os.fspath(output_dir), os.path.basename(path))
    return path


def plan_runs(chosen, seeds, results=DEFAULT_RESULTS, output_dir=None, short=None):
    """`(recipe, seed, settings, output, recorded)` for each recipe and
    seed; `recorded` when `results` already has the run: a full-length row
    of that seed, or, for a short run, a row of the finished model saved at
    its output (`run_output`)."""
    short = short or ShortConfig()
    records = read_results(results)
    plan = []
    for recipe in chosen:
        for seed in dict.fromkeys(seeds):
            settings = recipe.settings_for(
                short.epochs,
                train_examples=short.train_examples,
                test_examples=short.test_examples,
                seed=seed,
            ).check()
            output = run_output(settings, output_dir)
            recorded = _recorded(recipe, seed, settings, output, records)
            plan.append((recipe, seed, settings, output, recorded))
    return plan


def _recorded(recipe, seed, settings, output, records):
    mine = [r for r in records if r.recipe == recipe.name and not r.superseded]
    subset = settings.train_examples is not None or settings.test_examples is not None
    if settings.epochs == recipe.epochs and not subset:
        return any(
            r.full_length and r.recipe_epochs == recipe.epochs and r.seed == seed
            for r in mine
        )
    from keras_local import experiment

    resolved = dataclasses.replace(settings, milestones=settings.resolved_milestones())
    finished = experiment.finished_run(output, resolved)
    return finished is not None and any(r.date == finished.date for r in mine)


def run_missing(plan, results=DEFAULT_RESULTS, short=None, verbose=1, print_fn=print):
    """Runs each not yet `recorded` entry of `plan` (`plan_runs`) in turn
    with `recipes.run_recipe`, as `keras-local run` does, appending its row
    to `results`. A run that diverges is reported and the next one made.

    Returns:
        `(recipe name, seed, message)` for each run that diverged.
    """
    from keras_local.callbacks import DivergenceError

    short = short or ShortConfig()
    todo = [entry for entry in plan if not entry[-1]]
    print_fn(
        f"{len(plan) - len(todo)} of {len(plan)} runs recorded already in {results}; "
        f"{len(todo)} to run."
    )
    failures = []
    for i, (recipe, seed, _, output, _) in enumerate(todo, 1):
        print_fn(f"[{i}/{len(todo)}] {recipe.name}, seed {seed}, saved to {output}")
        try:
            recipe_files.run_recipe(
                recipe.path,
                epochs=short.epochs,
                train_examples=short.train_examples,
                test_examples=short.test_examples,
                results=results,
                output=output,
                seed=seed,
                verbose=verbose,
                print_fn=print_fn,
            )
        except DivergenceError as e:
            failures.append((recipe.name, seed, str(e)))
            print_fn(f"{recipe.name}, seed {seed}: {e} Nothing was saved; going on.")
    return failures
