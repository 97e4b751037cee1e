"""Recipes: the settings of one cell of a paper's table, and the runs of them.

A recipe is a small TOML file in the top-level `zoo/` folder, e.g.
`zoo/fashion_mnist-mlp-predsim.toml`:

```toml
# Nøkland & Eidnes (2019), Table 2: Fashion-MNIST, 3x1024 MLP, predsim.
dataset = "fashion_mnist"
model = "mlp"
rule = "predsim"
epochs = 200
milestones = [100, 150, 175, 188]
batch_size = 128
learning_rate = 5e-4
dropout = 0.025
rule_options = { beta = 0.99 }

paper = "Nøkland & Eidnes 2019, Training Neural Networks with Local Error Signals"
table = "Table 2"
row = "3x1024 MLP"
column = "predsim"
paper_test_error = 8.54
```

`run_recipe(path)` trains it with `keras_local.experiment.train` and appends
a row (measured vs. published test error, machine, date) to a markdown
results table, `zoo/results.md` by default.
"""

import dataclasses
import os
import pathlib
import platform

from keras_local import experiment
from keras_local.run_files import load_toml
from keras_local.run_files import write_atomic
from keras_local.run_settings import RunSettings
from keras_local.run_settings import SettingsError
from keras_local.run_settings import check_known_keys

#: The heading and explanation written at the top of a new results file.
RESULTS_HEADER = """\
# Recipe results

One row per run of a recipe in `zoo/` (`keras-local run zoo/<recipe>.toml`),
appended by `keras_local.recipes.run_recipe`. *Test error* is the test error
(%) after the last epoch, as the paper reports it; *paper* is the paper's
number for the same table cell and *diff* the difference in percentage points
(measured - paper). Rows noted "short run" trained fewer epochs or on fewer
examples than the recipe (with the learning-rate milestones scaled to the
epochs) and are smoke tests, not reproductions. A row's exact command is
`KERAS_BACKEND=<backend> keras-local run zoo/<recipe>.toml --seed <seed>` (the
seed is in the note; none: not seeded), with `--epochs <run>` and
`--train-examples <N>` where those columns differ from the recipe's.

"""

RESULTS_COLUMNS = (
    "recipe",
    "data set",
    "model",
    "rule",
    "epochs (run/recipe)",
    "train examples",
    "test error %",
    "paper %",
    "diff (points)",
    "backend",
    "machine",
    "date (UTC)",
    "wall time",
    "note",
)


#: Where a recipe's number comes from; every other key is a `RunSettings` field.
PROVENANCE_KEYS = ("paper", "table", "row", "column", "paper_test_error")

#: The settings every recipe states.
REQUIRED_KEYS = ("dataset", "model", "rule", "epochs")


@dataclasses.dataclass
class Recipe:
    """The settings of one paper table cell: run settings plus provenance.

    Attributes:
        settings: the `RunSettings` of the run (a recipe file's keys other
            than the provenance, e.g. `epochs`, `milestones`,
            `rule_options = { beta = 0.99 }`); they read as attributes of
            the recipe too (`recipe.epochs`).
        paper, table, row, column: where the number was published.
        paper_test_error: the published test error, %.
        path: the file it was read from.
    """

    settings: RunSettings
    paper: str | None = None
    table: str | None = None
    row: str | None = None
    column: str | None = None
    paper_test_error: float | None = None
    path: str | None = dataclasses.field(default=None, compare=False)

    def __getattr__(self, name):
        # Only called for names that are not attributes of the recipe.
        if name != "settings" and name in RunSettings.names():
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def keys(cls):
        """The keys a recipe file may have."""
        return RunSettings.names() + list(PROVENANCE_KEYS)

    @classmethod
    def required_keys(cls):
        return list(REQUIRED_KEYS)

    @classmethod
    def from_dict(cls, values, path=None):
        """A recipe from a dict of recipe keys; `ValueError` for unknown or
        missing keys."""
        where = f" in {path}" if path else ""
        check_known_keys(values, cls.keys(), "recipe key", where)
        missing = [key for key in cls.required_keys() if key not in values]
        if missing:
            raise ValueError(
                f"Recipe{where} lacks the required key"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}."
            )
        provenance = {key: values[key] for key in PROVENANCE_KEYS if key in values}
        settings = RunSettings.from_dict(
            {key: value for key, value in values.items() if key not in PROVENANCE_KEYS},
            where=where,
        )
        # Checked now, so that a bad value is named before any training
        # (and not first met when the result row is written).
        try:
            settings.check()
        except ValueError as e:
            raise SettingsError(f"{str(e).rstrip('.')} (in the recipe{where}).") from None
        _check_provenance(provenance, where)
        return cls(settings, **provenance, path=None if path is None else str(path))

    @classmethod
    def from_file(cls, path):
        """Reads a recipe TOML file; `ValueError` for bad TOML or keys.

        A bare name (`fashion_mnist-mlp-predsim.toml`, `.toml` optional) or a
        `zoo/` path that does not exist from the working directory is looked
        up among the shipped recipes (`find_recipe`)."""
        path = find_recipe(path)
        if not os.path.exists(path):
            searched = ", ".join(map(str, recipe_directories())) or "no recipe folder"
            raise ValueError(
                f"No recipe file {path} (recipes looked up by name in: {searched})."
            )
        return cls.from_dict(load_toml(path, "recipe"), path=path)

    @property
    def name(self):
        """The file name without `.toml` (e.g. `fashion_mnist-mlp-predsim`)."""
        if self.path is None:
            return f"{self.dataset}-{self.model}-{self.rule}"
        return os.path.splitext(os.path.basename(self.path))[0]

    def rule_label(self):
        """The rule with its options, e.g. `random-classifier (feedback=scfb)`."""
        if not self.rule_options:
            return self.rule
        options = ", ".join(f"{k}={v}" for k, v in sorted(self.rule_options.items()))
        return f"{self.rule} ({options})"

    def describe(self):
        """Where the recipe comes from, e.g. `"Table 2 (Fashion-MNIST), row
        VGG8B, column predsim: 4.65% test error in Nøkland & Eidnes 2019..."`."""
        where = ", ".join(
            part
            for part in (
                self.table,
                self.row and f"row {self.row}",
                self.column and f"column {self.column}",
            )
            if part
        )
        if self.paper_test_error is not None:
            where += f": {self.paper_test_error:.2f}% test error"
        if self.paper:
            where += f" in {self.paper}"
        return where or "no published number for this cell (see the recipe's comments)"

    def milestones_for(self, epochs):
        """The recipe's milestones scaled to a run of `epochs` epochs.

        `round(m * epochs / self.epochs)` for each milestone `m` (at least 1,
        duplicates removed); the recipe's own milestones when `epochs` is its
        epoch count, `None` (the paper's fractions) if it has none.
        """
        if self.milestones is None or epochs == self.epochs:
            return None if self.milestones is None else list(self.milestones)
        return sorted({max(1, round(m * epochs / self.epochs)) for m in self.milestones})

    def settings_for(self, epochs=None, **run_only):
        """The recipe's `RunSettings` for a run of `epochs` epochs (the
        milestones scaled, `milestones_for`) with `run_only` settings
        (`train_examples`, `test_examples`, `seed`) set."""
        settings = dataclasses.replace(
            self.settings,
            rule_options=dict(self.settings.rule_options),
            **{key: value for key, value in run_only.items() if value is not None},
        )
        if epochs is not None and epochs != self.epochs:
            settings.epochs = epochs
            settings.milestones = self.milestones_for(epochs)
        return settings


def _check_provenance(provenance, where):
    for key, value in provenance.items():
        if key == "paper_test_error":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingsError(
                    f"paper_test_error must be a number (percent), got {value!r}{where}."
                )
        elif not isinstance(value, str):
            raise SettingsError(f"{key} must be text, got {value!r}{where}.")


def recipe_directories():
    """Where recipes are looked up by name: the `zoo/` folder of the source
    checkout this package runs from (an editable install), then the copy of
    it shipped inside the package (`keras_local/zoo_recipes/`, in a wheel)."""
    package = pathlib.Path(__file__).resolve().parent
    checkout = package.parent
    directories = []
    if (checkout / "pyproject.toml").is_file() and (checkout / "zoo").is_dir():
        directories.append(checkout / "zoo")
    if (package / "zoo_recipes").is_dir():
        directories.append(package / "zoo_recipes")
    return directories


def find_recipe(path):
    """The recipe file `path` names: `path` itself when it exists; else, for a
    bare name or a `zoo/...` path, the file of that name in the first of
    `recipe_directories()` that has it; else `path` unchanged."""
    if os.path.exists(path):
        return path
    directory, name = os.path.split(os.fspath(path))
    if os.path.normpath(directory) not in (".", "zoo"):
        return path
    if not name.endswith(".toml"):
        name += ".toml"
    for recipe_directory in recipe_directories():
        candidate = recipe_directory / name
        if candidate.is_file():
            return str(candidate)
    return path


def run_recipe(
    path,
    epochs=None,
    train_examples=None,
    test_examples=None,
    results="zoo/results.md",
    output=None,
    seed=None,
    verbose=1,
    print_fn=print,
):
    """Runs a recipe and appends its result to a markdown results table.

    Args:
        path: the recipe's TOML file, or the name of a shipped recipe
            (`find_recipe`).
        epochs: train this many epochs instead of the recipe's; the
            learning-rate milestones are scaled by `epochs / recipe epochs`.
        train_examples: use only the first `train_examples` training
            examples (quick runs).
        test_examples: evaluate on the first `test_examples` test examples.
        results: the markdown file the row is appended to (relative paths
            from the working directory, also for a shipped recipe); created
            with a header when missing. `None` records nothing.
        output: where to save the model (`.keras`); default
            `saved_models/<model>-<rule>-<dataset>.keras`.
        seed: seeds the run (`experiment.train`).
        verbose: as in `experiment.train`.
        print_fn: receives every printed line.

    Returns:
        The `experiment.ExperimentResult`.
    """
    recipe = Recipe.from_file(path)
    say = print_fn if verbose else (lambda *args, **kwargs: None)
    if recipe.path != os.fspath(path):
        say(f"Using the recipe file {recipe.path}.")
    say(f"Recipe {recipe.name}: {recipe.describe()}.")
    settings = recipe.settings_for(
        epochs, train_examples=train_examples, test_examples=test_examples, seed=seed
    )
    notes = []
    if epochs is not None and epochs != recipe.epochs:
        if settings.milestones is not None:
            scaled = ", ".join(map(str, settings.milestones))
            notes.append(f"milestones scaled to {scaled}")
            say(
                f"Training {epochs} epoch{'s' if epochs != 1 else ''} instead of "
                f"{recipe.epochs}; learning-rate "
                f"milestones scaled from {', '.join(map(str, recipe.milestones))} "
                f"to {scaled}."
            )
    result = experiment.train(settings, output=output, verbose=verbose, print_fn=print_fn)
    if recipe.paper_test_error is not None:
        say(
            f"Test error {result.test_error:.2f}%; the paper reports "
            f"{recipe.paper_test_error:.2f}% "
            f"({result.test_error - recipe.paper_test_error:+.2f} points)."
        )
    if results is not None and _has_row(results, recipe, result):
        # Rerunning a finished recipe trains nothing (`experiment.train`
        # returns the saved result); a second row would count it twice.
        say(f"{os.path.abspath(results)} already has this run's row; nothing appended.")
    elif results is not None:
        append_result_row(results, result_row(recipe, result, notes))
        say(f"Appended the result to {os.path.abspath(results)}.")
    return result


def _has_row(results, recipe, result):
    """Whether `results` has the row of this very run (the same recipe and
    finishing time); a file that does not parse is appended to as before."""
    from keras_local import reproduce

    try:
        records = reproduce.read_results(results)
    except ValueError:
        return False
    return any(r.recipe == recipe.name and r.date == result.date for r in records)


def result_row(recipe, result, notes=()):
    """The cells of the results-table row for a run of `recipe`."""
    notes = list(notes)
    full_train = result.parameters.get("train_examples") is None
    full_test = result.parameters.get("test_examples") is None
    if result.epochs < recipe.epochs or not full_train:
        notes.insert(0, f"short {'GPU' if accelerator_name() else 'CPU'} run")
    if not full_test:
        notes.append(f"test error on the first {result.num_test_examples} test examples")
    if result.parameters.get("seed") is not None:
        notes.append(f"seed {result.parameters['seed']}")
    paper = recipe.paper_test_error
    return [
        recipe.name,
        recipe.dataset,
        recipe.model,
        recipe.rule_label(),
        f"{result.epochs}/{recipe.epochs}",
        str(result.num_train_examples),
        f"{result.test_error:.2f}",
        "-" if paper is None else f"{paper:.2f}",
        "-" if paper is None else f"{result.test_error - paper:+.2f}",
        result.backend,
        machine_description(),
        result.date,
        experiment.format_duration(result.wall_time_s),
        "; ".join(notes),
    ]


def append_result_row(results, row):
    """Appends one row to the markdown table in `results`, writing the header
    and the table's column line first if the file is new or empty."""
    if len(row) != len(RESULTS_COLUMNS):
        raise ValueError(
            f"A results row has {len(RESULTS_COLUMNS)} cells, got {len(row)}."
        )
    directory = os.path.dirname(str(results))
    if directory:
        os.makedirs(directory, exist_ok=True)
    text = ""
    if os.path.exists(results):
        with open(results, encoding="utf-8") as f:
            text = f.read()
    if not text:
        text = RESULTS_HEADER + _table_line(RESULTS_COLUMNS)
        text += _table_line(["---"] * len(RESULTS_COLUMNS))
    elif not text.endswith("\n"):
        text += "\n"
    # The whole table rewritten and renamed: an interruption never leaves
    # half a row.
    write_atomic(str(results), text + _table_line(row))


def _table_line(cells):
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |\n"


def accelerator_name():
    """The name of the first GPU the Keras backend sees, or `None`."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            return gpus[0].device_kind if gpus else None
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return None
            details = tf.config.experimental.get_device_details(gpus[0])
            return details.get("device_name", "GPU")
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a description must not fail a run
        return None
    return None


def machine_description():
    """The processor, its core count and the GPU, e.g.
    `"AMD EPYC 7B13, 2 CPUs, NVIDIA H100 80GB HBM3"`."""
    parts = [f"{_processor_name()}, {os.cpu_count()} CPUs"]
    gpu = accelerator_name()
    if gpu:
        parts.append(gpu)
    return ", ".join(parts)


def _processor_name():
    # `platform.processor()` is often empty or just "x86_64" on Linux; the
    # model name is in /proc/cpuinfo.
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown processor"
