"""Hyperparameter search with keras-tuner over any zoo model and rule.

>>> from keras_local import tuning
>>> result = tuning.tune("mlp", "predsim", "fashion_mnist", max_epochs=3,
...                      train_examples=5000)  # doctest: +SKIP
>>> result.best_hyperparameters  # doctest: +SKIP
{'learning_rate': 0.0011..., 'dropout': 0.05, 'beta': 0.97...}

`LocalHyperModel` is a `keras_tuner.HyperModel` that builds a zoo model with
a rule from sampled hyperparameters: the learning rate (log scale), the
dropout rate and, for rules that take it (`keras_local.rules.parameters`),
predsim's `beta`; any other builder argument can be searched too, and any
rule parameter as a rule option (`rule.code_units`, `rule.gamma`). The rule
is resolved as `keras-local train` resolves it (`keras_local.zoo.resolve_rule`),
so both build the same network. `tune` runs
the search (Hyperband by default, or random search or Bayesian optimisation)
with the validation accuracy of the output layer as the objective, measured
on a held-out part of the *training* set (`split_validation`; the test set
is never used to choose). It then

* checks the trials: a failed trial is reported and recorded, and if no
  trial produced the objective, `TuningError` is raised (keras-tuner itself
  only marks such trials failed and still returns "best" hyperparameters);
* writes, in `<directory>/<project>/`, `best_hyperparameters.json` and the
  per-trial results as `results.json` and `results.md` (hyperparameters,
  validation accuracy, status; failed trials with their error);
* retrains the best configuration on the whole training set (training and
  validation parts), saves it as `saved_models/<project>/model.keras` and
  exports it as a SavedModel beside it (`keras_local.export`).

The search is stored in `<directory>/<project>/` (keras-tuner's oracle and
one folder per trial). Running `tune` again with the same settings resumes
it: finished trials are kept, an interrupted trial is run again, and a larger
`max_trials` adds trials. Other settings in an existing project raise
`ValueError` (pass `overwrite=True` or another project name to start over).
"""

import dataclasses
import datetime
import inspect
import json
import math
import numbers
import os
import shlex
import warnings
import zlib

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import keras
import keras_tuner
import numpy as np

from keras_local import data as data_lib
from keras_local import rules as rules_lib
from keras_local import zoo

__all__ = [
    "DEFAULT_DIRECTORY",
    "DEFAULT_OUTPUT_DIR",
    "OBJECTIVE",
    "TUNERS",
    "LocalHyperModel",
    "TuningError",
    "TuningResult",
    "default_space",
    "in_space",
    "load_recipe",
    "normalize_space",
    "split_validation",
    "tune",
]

#: Where searches are stored: `<DEFAULT_DIRECTORY>/<project>/`.
DEFAULT_DIRECTORY = "tuning"
#: Where the retrained best model goes: `<DEFAULT_OUTPUT_DIR>/<project>/model.keras`.
DEFAULT_OUTPUT_DIR = "saved_models"
#: The objective: the output layer's accuracy on the held-out validation part.
OBJECTIVE = keras_tuner.Objective("val_accuracy", direction="max")
#: The tuners `tune` can run.
TUNERS = ("hyperband", "random", "bayesian")

#: The searched values that `keras-local train` takes, and its options for them.
_TRAIN_OPTIONS = {
    "learning_rate": "--learning-rate",
    "dropout": "--dropout",
    "beta": "--beta",
    "width": "--width",
    "dim_in_decoder": "--dim-in-decoder",
    "activation": "--activation",
}

_SPEC_KEYS = {"min", "max", "step", "sampling", "values", "value"}
_SAMPLINGS = ("linear", "log", "reverse_log")


class TuningError(RuntimeError):
    """The search produced no usable result (every trial failed)."""


# ------------------------------------------------------------ search space
def default_space(rule):
    """The default search space for `rule`.

    * `learning_rate`: 1e-4 to 3e-3, log scale (the paper used 5e-4);
    * `dropout`: 0 to 0.3 in steps of 0.05;
    * `beta`, only for rules that take it: 0.001 to 0.999. When the rule's
      default is at least 0.5 (predsim, 0.99) it is sampled `reverse_log`,
      which with these bounds makes `1 - beta` log-uniform: a third of the
      samples lie above 0.99, two thirds above 0.9, the median is 0.968.
      Otherwise (predsim-bpf, 0.01) `beta` itself is log-uniform.
    """
    space = {
        "learning_rate": {"min": 1e-4, "max": 3e-3, "sampling": "log"},
        "dropout": {"min": 0.0, "max": 0.3, "step": 0.05},
    }
    parameters = rules_lib.parameters(rule)
    if "beta" in parameters:
        default = parameters["beta"]
        near_one = isinstance(default, numbers.Real) and default >= 0.5
        space["beta"] = {
            "min": 0.001,
            "max": 0.999,
            "sampling": "reverse_log" if near_one else "log",
        }
    return space


def normalize_space(space, rule=None):
    """Checks a search space and writes every entry in its full form.

    `space` maps a builder argument (`learning_rate`, `dropout`, `beta`,
    `width`, `units`, ...), or a rule parameter as `rule.<name>` (e.g.
    `rule.code_units`, `rule.gamma`: searched as a rule option; in TOML a
    `[space.rule]` table or a quoted `"rule.code_units"` key), to:

    * `[min, max]` or `{"min": .., "max": .., "step": .., "sampling": ..}`:
      a range, of integers when both ends are integers (`hp.Int`), else of
      floats (`hp.Float`); `sampling` is `"linear"`, `"log"` or
      `"reverse_log"`, by default `"log"` for `learning_rate` and `"linear"`
      otherwise;
    * `{"values": [...]}`: a choice (`hp.Choice`);
    * a single value, or `{"value": ...}`: fixed (`hp.Fixed`).

    Returns:
        `{name: {"type": "float"|"int"|"choice"|"fixed", ...}}`.

    Raises:
        ValueError: for a malformed entry, an empty or inverted range, a log
            range that reaches 0, a dropout outside [0, 1), a learning rate
            that is not positive, or `beta` (or another rule parameter) for a
            rule that does not take it.
    """
    if not isinstance(space, dict):
        raise ValueError(f"The search space must be a dict, got {space!r}.")
    space = _flatten_rule_table(space)
    accepted = rules_lib.parameters(rule) if rule is not None else None
    normalized = {}
    for name, spec in space.items():
        if spec is None:
            continue
        parameter = _rule_parameter(name)
        if parameter == "":
            raise ValueError(f"The search space entry {name!r} names no rule parameter.")
        normalized[name] = _normalize_entry(name, spec)
        checked = parameter if parameter is not None else name
        if accepted is not None and (parameter is not None or name in _RULE_ONLY):
            if checked not in accepted:
                takes = ", ".join(accepted) or "no parameters"
                raise ValueError(
                    f"Rule {rule!r} does not take {checked}, so it cannot be searched; "
                    f"the rule takes {takes}."
                )
        _check_bounds(checked, normalized[name])
    return normalized


#: Search-space entries named `rule.<name>` search the rule parameter `<name>`.
RULE_PREFIX = "rule."


def _rule_parameter(name):
    """The rule parameter a search-space entry searches as a rule option
    (`"rule.gamma"` -> `"gamma"`), or `None` for a builder argument."""
    return name[len(RULE_PREFIX):] if name.startswith(RULE_PREFIX) else None


def _flatten_rule_table(space):
    """`{"rule": {"gamma": [..]}}` (a `[space.rule]` TOML table) as
    `{"rule.gamma": [..]}`; other entries unchanged."""
    table = space.get("rule")
    if not isinstance(table, dict) or set(table) <= _SPEC_KEYS:
        return space
    flat = {}
    for name, spec in space.items():
        if name == "rule":
            flat.update({RULE_PREFIX + key: value for key, value in table.items()})
        else:
            flat[name] = spec
    return flat


#: Builder arguments that only some rules take (the builders pass them on).
_RULE_ONLY = ("beta", "dim_in_decoder")


def _normalize_entry(name, spec):
    where = f"search space entry {name!r}"
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise ValueError(
                f"The {where} must be [min, max], a table with min and max or "
                f"values, or a single value; got {list(spec)!r}."
            )
        spec = {"min": spec[0], "max": spec[1]}
    if not isinstance(spec, dict):
        return {"type": "fixed", "value": _check_scalar(where, spec)}
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ValueError(
            f"Unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in "
            f"the {where}; valid keys: {', '.join(sorted(_SPEC_KEYS))}."
        )
    if "value" in spec:
        if len(spec) > 1:
            raise ValueError(f"The {where} has `value` and other keys.")
        return {"type": "fixed", "value": _check_scalar(where, spec["value"])}
    if "values" in spec:
        if set(spec) != {"values"}:
            raise ValueError(f"The {where} has `values` and other keys.")
        values = spec["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"The {where}'s `values` must be a non-empty list.")
        return {"type": "choice", "values": [_check_scalar(where, v) for v in values]}
    if "min" not in spec or "max" not in spec:
        raise ValueError(f"The {where} needs both `min` and `max` (or `values`).")
    low, high = (_check_number(where, spec[k]) for k in ("min", "max"))
    if low >= high:
        raise ValueError(f"The {where} has min {low!r} not below max {high!r}.")
    sampling = spec.get("sampling", "log" if name == "learning_rate" else "linear")
    if sampling not in _SAMPLINGS:
        raise ValueError(
            f"The {where} has sampling {sampling!r}; valid: {', '.join(_SAMPLINGS)}."
        )
    if sampling != "linear" and low <= 0:
        raise ValueError(
            f"The {where} is sampled on a log scale ({sampling}), so its min "
            f"must be positive, got {low!r}."
        )
    step = spec.get("step")
    if step is not None:
        step = _check_number(where, step)
        if step <= 0:
            raise ValueError(f"The {where} has step {step!r}; it must be positive.")
    integral = all(
        isinstance(v, numbers.Integral) for v in (low, high) + ((step,) if step else ())
    )
    entry = {"type": "int" if integral else "float", "min": low, "max": high}
    if not integral:
        entry = {"type": "float", "min": float(low), "max": float(high)}
    entry["sampling"] = sampling
    if step is not None:
        entry["step"] = step if integral else float(step)
    return entry


def _check_scalar(where, value):
    if not isinstance(value, (bool, numbers.Real, str)):
        raise ValueError(f"The {where} holds {value!r}; expected a number, bool or string.")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"The {where} holds {value!r}; expected a finite number.")
    return value


def _check_number(where, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"The {where} holds {value!r}; expected a finite number.")
    return value


def _span(entry):
    """The smallest and largest value an entry can take (numbers only)."""
    if entry["type"] in ("float", "int"):
        return entry["min"], entry["max"]
    values = [entry["value"]] if entry["type"] == "fixed" else entry["values"]
    numbers_only = [v for v in values if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    return (min(numbers_only), max(numbers_only)) if numbers_only else None


def _check_bounds(name, entry):
    span = _span(entry)
    if span is None:
        return
    low, high = span
    if name == "learning_rate" and low <= 0:
        raise ValueError(f"The learning rate must be positive; the search space reaches {low!r}.")
    if name == "dropout" and not (0 <= low and high < 1):
        raise ValueError(
            f"Dropout rates lie in [0, 1); the search space spans [{low!r}, {high!r}]."
        )
    if name == "beta" and not (0 <= low and high <= 1):
        raise ValueError(f"beta lies in [0, 1]; the search space spans [{low!r}, {high!r}].")


def _declare(hp, name, entry):
    """Declares one normalized entry on `hp`; returns its value."""
    kind = entry["type"]
    if kind == "float":
        return hp.Float(
            name, entry["min"], entry["max"], step=entry.get("step"), sampling=entry["sampling"]
        )
    if kind == "int":
        return hp.Int(
            name, entry["min"], entry["max"], step=entry.get("step"), sampling=entry["sampling"]
        )
    if kind == "choice":
        return hp.Choice(name, entry["values"])
    return hp.Fixed(name, entry["value"])


def in_space(value, entry):
    """Whether `value` is one the normalized search-space `entry` can give."""
    kind = entry["type"]
    if kind == "fixed":
        return value == entry["value"]
    if kind == "choice":
        return value in entry["values"]
    low, high = entry["min"], entry["max"]
    tolerance = 1e-9 * max(abs(low), abs(high), 1.0)
    if not (low - tolerance <= value <= high + tolerance):
        return False
    if kind == "int" and value != int(value):
        return False
    return True


# ------------------------------------------------------------- hypermodel
class LocalHyperModel(keras_tuner.HyperModel):
    """A zoo model with a rule, built from sampled hyperparameters.

    `build(hp)` declares the search space on `hp` and calls the zoo builder
    with the sampled values as arguments, so every entry of the space is a
    builder argument (`learning_rate`, `dropout`, `beta`, `width`, `units`,
    ...). It returns the compiled `LocalModel` the builder makes.

    Args:
        model: a zoo builder name (`keras_local.zoo.names()`).
        rule: a rule name (`keras_local.rules.names()`).
        input_shape: shape of one example, e.g. `(28, 28, 1)`.
        num_classes: number of classes.
        space: the search space (see `normalize_space`); `None` for
            `default_space(rule)`, which searches `beta` only for rules that
            take it.
        fixed: other builder arguments, held fixed (e.g. `{"layers": 1,
            "units": 8}` or `{"dim_in_decoder": 1024}`).
        rule_options: the rule's other parameters (e.g. `{"feedback":
            "scfb"}`). The rule is built as `keras-local train` builds it
            (`keras_local.zoo.resolve_rule`): the network's own defaults of
            rule parameters (e.g. `al_mlp`'s 1024-unit associated-learning
            code) apply where neither these options, `fixed` nor the space
            (`rule.<name>` entries, searched as rule options) set them.
        augmentation: `None`, or a function of no arguments that returns
            a fresh training augmentation layer for each model (keras-tuner
            clears the session between trials, so a layer is not shared).
        seed: when set, every build starts from this random seed
            (`keras.utils.set_random_seed`), so trials differ only in their
            hyperparameters.
        jit_compile: `None` keeps the builder's compilation (XLA); `False`
            recompiles without it (the builders' XLA compilation takes
            seconds, which dominates very small trials).
    """

    def __init__(
        self,
        model,
        rule="predsim",
        *,
        input_shape,
        num_classes,
        space=None,
        fixed=None,
        rule_options=None,
        augmentation=None,
        seed=None,
        jit_compile=None,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        self.builder = zoo.get(model)
        self.model_name = model
        self.rule = rule
        self.rule_options = dict(rule_options or {})
        # A bad rule name or rule option fails here, not in every trial.
        rules_lib.get(rule, **self.rule_options)
        self.space = normalize_space(default_space(rule) if space is None else space, rule)
        self.fixed = dict(fixed or {})
        searched_options = {
            _rule_parameter(name) for name in self.space if _rule_parameter(name) is not None
        }
        arguments = {name for name in self.space if _rule_parameter(name) is None}
        reserved = {"rule", "num_classes", "input_shape", "augmentation"}
        clashes = sorted((set(self.fixed) | arguments) & reserved)
        if clashes:
            raise ValueError(
                f"{', '.join(clashes)} cannot be searched or fixed: LocalHyperModel "
                "sets them itself."
            )
        both = sorted(set(self.fixed) & set(self.space))
        if both:
            raise ValueError(f"{', '.join(both)} is both searched and fixed.")
        options = sorted(
            (set(self.fixed) | arguments | searched_options) & set(self.rule_options)
        )
        options += sorted((set(self.fixed) | arguments) & searched_options)
        if options:
            # (A searched `rule.<name>` counts as a rule option.)
            raise ValueError(
                f"{', '.join(options)} is given as a rule option and as a builder "
                "argument; give it once."
            )
        for name in _RULE_ONLY:
            if name in self.fixed and name not in rules_lib.parameters(rule):
                raise ValueError(f"Rule {rule!r} does not take {name}.")
        parameters = inspect.signature(self.builder).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            unknown = sorted((set(self.fixed) | arguments) - set(parameters))
            if unknown:
                raise ValueError(
                    f"zoo.{model} does not take {', '.join(unknown)}; it takes "
                    f"{', '.join(sorted(parameters))}."
                )
        if augmentation is not None and not callable(augmentation):
            raise TypeError(
                "augmentation must be a function that returns a new layer for each "
                f"model (or None), got {augmentation!r}."
            )
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.augmentation = augmentation
        self.seed = seed
        self.jit_compile = jit_compile
        # The fixed settings resolve as the builder will resolve them.
        zoo.resolve_rule(model, rule, self.rule_options, **self.fixed)

    def rule_spec(self, values):
        """The rule the builder gets for sampled `values`: the name with the
        user's options and the searched `rule.<name>` values, so the builder
        (`zoo.resolve_rule`) fills in the network's own defaults of the
        parameters no one set, exactly as `keras-local train` does."""
        options = dict(self.rule_options)
        for name, value in values.items():
            parameter = _rule_parameter(name)
            if parameter is not None:
                options[parameter] = value
        return {"name": self.rule, "config": options}

    def declare(self, hp):
        """Declares the search space on `hp`; returns the sampled values."""
        return {name: _declare(hp, name, entry) for name, entry in self.space.items()}

    def build(self, hp):
        values = self.declare(hp)
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        augmentation = self.augmentation() if self.augmentation is not None else None
        model = self.builder(
            rule=self.rule_spec(values),
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            augmentation=augmentation,
            **self.fixed,
            **{name: v for name, v in values.items() if _rule_parameter(name) is None},
        )
        if self.jit_compile is not None:
            model.compile(optimizer=model.optimizer, jit_compile=self.jit_compile)
        return model

    def fit(self, hp, model, *args, **kwargs):
        # Hyperband passes `epochs` and `initial_epoch` in kwargs.
        return model.fit(*args, **kwargs)


# ------------------------------------------------------------------- data
def split_validation(x, y, fraction=0.1, seed=0):
    """Holds out a random `fraction` of a training set for validation.

    The split depends only on `len(x)`, `fraction` and `seed`, so a resumed
    search validates on the same examples.

    Returns:
        `((x_train, y_train), (x_val, y_val))`: the remaining examples in
        their original order, and the held-out ones.

    Raises:
        ValueError: if `fraction` is not in (0, 1), or the split would
            leave either part empty.
    """
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not 0 < fraction < 1
    ):
        raise ValueError(f"The validation fraction must lie in (0, 1), got {fraction!r}.")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}.")
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"A validation fraction of {fraction} of {n} examples leaves "
            f"{n_val} for validation and {n - n_val} for training; both need some."
        )
    order = np.random.default_rng(seed).permutation(n)
    val = np.sort(order[:n_val])
    train = np.sort(order[n_val:])
    return (x[train], y[train]), (x[val], y[val])


def _fingerprint(*arrays):
    """A cheap checksum of arrays (to tell another data set on resume)."""
    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).tobytes(), crc)
    return f"{crc:08x}"


# ----------------------------------------------------------------- recipes
#: The keys a search recipe (`tuning/*.toml`) may have: `tune`'s arguments.
RECIPE_KEYS = (
    "model",
    "rule",
    "dataset",
    "space",
    "fixed",
    "rule_options",
    "tuner",
    "max_trials",
    "max_epochs",
    "factor",
    "hyperband_iterations",
    "validation_fraction",
    "train_examples",
    "batch_size",
    "augment",
    "seed",
    "retrain_epochs",
)


def load_recipe(path):
    """Reads a search recipe, a TOML file of `tune` arguments.

    Keys: `model`, `rule`, `dataset`, the tables `space`, `fixed` and
    `rule_options`, and `tuner`, `max_trials`, `max_epochs`, `factor`,
    `hyperband_iterations`, `validation_fraction`, `train_examples`,
    `batch_size`, `augment`, `seed`, `retrain_epochs`. The project name is
    the file name without `.toml`.

    Returns:
        A dict of `tune` keyword arguments (`dataset` as `data`), with
        `project_name`.
    """
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"No search recipe file {path}.") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from None
    unknown = sorted(set(values) - set(RECIPE_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in "
            f"{path}. Valid keys: {', '.join(RECIPE_KEYS)}."
        )
    arguments = dict(values)
    if "dataset" in arguments:
        arguments["data"] = arguments.pop("dataset")
    arguments["project_name"] = os.path.splitext(os.path.basename(str(path)))[0]
    return arguments


# ------------------------------------------------------------------ result
@dataclasses.dataclass
class TuningResult:
    """What `tune` found and wrote.

    Attributes:
        best_hyperparameters: the searched values of the best trial.
        best_score: its validation accuracy (best epoch), in [0, 1].
        best_trial_id: its keras-tuner trial id.
        trials: one dict per trial (`trial_id`, `status`, `score`,
            `best_step`, `hyperparameters`, `tuner` (Hyperband's bookkeeping
            values), `error` (last line of a failed trial's error)).
        num_completed: trials that produced the objective.
        num_failed: trials that failed.
        project_dir: `<directory>/<project>`, the stored search.
        best_hyperparameters_file, results_json, results_markdown: the files
            written there.
        model_path: the retrained best model (`.keras`), or `None`.
        export_path: its SavedModel export, or `None`.
        retrain_epochs: epochs of the retraining (0 without).
        test_accuracy: the retrained model's test accuracy, when test data
            was given; measured after the choice, never used for it.
        train_command: the `keras-local train` command with the best
            values, when there is one.
    """

    best_hyperparameters: dict
    best_score: float
    best_trial_id: str
    trials: list
    num_completed: int
    num_failed: int
    project_dir: str
    best_hyperparameters_file: str
    results_json: str
    results_markdown: str
    model_path: str | None = None
    export_path: str | None = None
    retrain_epochs: int = 0
    test_accuracy: float | None = None
    train_command: str | None = None

    def to_dict(self):
        return dataclasses.asdict(self)


# -------------------------------------------------------------------- tune
def tune(
    model="mlp",
    rule="predsim",
    data="fashion_mnist",
    *,
    space=None,
    fixed=None,
    rule_options=None,
    tuner="hyperband",
    max_trials=None,
    max_epochs=3,
    factor=3,
    hyperband_iterations=1,
    validation_fraction=0.1,
    train_examples=None,
    test_data=None,
    test_examples=None,
    num_classes=None,
    batch_size=128,
    augment=True,
    seed=0,
    directory=DEFAULT_DIRECTORY,
    project_name=None,
    overwrite=False,
    retrain=True,
    retrain_epochs=None,
    output=None,
    export=True,
    callbacks=None,
    max_consecutive_failed_trials=3,
    jit_compile=None,
    verbose=1,
    print_fn=print,
):
    """Searches hyperparameters of a zoo model with a rule, then retrains the best.

    Args:
        model: a zoo builder name.
        rule: a rule name.
        data: a data set name (`keras_local.data.DATASETS`, loaded with
            `keras_local.data.load`), or a training set `(x, y)` of NumPy
            arrays (integer labels).
        space: the search space (`normalize_space`); `None` for
            `default_space(rule)`.
        fixed: builder arguments held fixed, e.g. `{"dim_in_decoder": 1024}`.
        rule_options: the rule's other parameters.
        tuner: `"hyperband"` (default), `"random"` or `"bayesian"`.
        max_trials: the number of trials of random search and Bayesian
            optimisation (default 10); for Hyperband, whose schedule sets the
            trials, an optional cap. Raise it to extend a finished search.
        max_epochs: epochs per trial (random, Bayesian); Hyperband's
            largest number of epochs for one configuration.
        factor, hyperband_iterations: Hyperband's reduction factor and
            number of passes.
        validation_fraction: the share of the training set held out for the
            objective (`split_validation` with `seed`).
        train_examples: use only the first N training examples.
        test_data: `(x_test, y_test)` to evaluate the retrained model on;
            with a data set name, its test set is used (the first
            `test_examples`). Never used to choose hyperparameters.
        num_classes: with arrays, the number of classes (default: the
            largest label + 1).
        batch_size: examples per step, in the search and the retraining.
        augment: with a data set name, train with its paper augmentation.
        seed: seeds the validation split (0 when `None`), the tuner and
            every model's initial weights.
        directory, project_name: the search is stored in
            `<directory>/<project_name>/`; the default project name is
            `<dataset>-<model>-<rule>` (`<model>-<rule>` for arrays).
        overwrite: delete a stored search of the same project first;
            otherwise it is resumed.
        retrain: retrain the best configuration on the whole training set
            and save it.
        retrain_epochs: epochs of that retraining (default `max_epochs`).
        output: where to save the retrained model (`.keras`), default
            `saved_models/<project_name>/model.keras`.
        export: also export it as a SavedModel, `saved_model/` beside the
            `.keras` file (`keras_local.export`; on a backend other than
            TensorFlow, in a TensorFlow child process, or skipped with a note
            where TensorFlow is not installed).
        callbacks: Keras callbacks for every trial (deep-copyable).
        max_consecutive_failed_trials: stop the search after this many
            failed trials in a row.
        jit_compile: `None` keeps the builders' XLA compilation; `False`
            turns it off (faster for tiny trials, slower for real ones).
        verbose: 0 silent; 1 keras-tuner's trial summaries and progress
            bars; 2 summaries and one line per epoch.
        print_fn: receives every line this function prints.

    Returns:
        A `TuningResult`.

    Raises:
        ValueError: bad names, settings or search space, or a stored
            project with other settings.
        TuningError: when no trial produced the objective (all failed, or
            the search stopped after `max_consecutive_failed_trials` failures).
    """
    say = print_fn if verbose else (lambda *a, **k: None)
    if tuner not in TUNERS:
        raise ValueError(f"Unknown tuner {tuner!r}. Valid tuners: {', '.join(TUNERS)}.")
    for name, value in (
        ("max_epochs", max_epochs),
        ("batch_size", batch_size),
        ("factor", factor),
    ):
        _check_positive_int(name, value)
    for name, value in (
        ("max_trials", max_trials),
        ("train_examples", train_examples),
        ("test_examples", test_examples),
        ("retrain_epochs", retrain_epochs),
        ("hyperband_iterations", hyperband_iterations),
    ):
        if value is not None:
            _check_positive_int(name, value)
    if tuner == "hyperband" and factor < 2:
        raise ValueError(f"Hyperband's factor must be at least 2, got {factor}.")
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
    if max_trials is None and tuner != "hyperband":
        max_trials = 10
    if seed is not None:
        keras.utils.set_random_seed(seed)

    # The data: names are loaded, arrays taken as the training set.
    if isinstance(data, str):
        info = data_lib.info(data)
        input_shape, classes = info.input_shape, info.num_classes
        dataset = data
        augmentation = (lambda: data_lib.augmentation(dataset, None, seed)) if augment else None
    else:
        x, y = _as_training_set(data)
        dataset = None
        input_shape = tuple(x.shape[1:])
        classes = int(num_classes) if num_classes is not None else int(y.max()) + 1
        augmentation = None
    project_name = project_name or (
        f"{dataset}-{model}-{rule}" if dataset else f"{model}-{rule}"
    )
    hypermodel = LocalHyperModel(
        model,
        rule,
        input_shape=input_shape,
        num_classes=classes,
        space=space,
        fixed=fixed,
        rule_options=rule_options,
        augmentation=augmentation,
        seed=seed,
        jit_compile=jit_compile,
    )
    if dataset is not None:
        (x, y), test_set = data_lib.load(dataset)
        if test_data is None:
            test_data = test_set
    if train_examples is not None:
        _check_enough(train_examples, len(x), "train_examples", "the training set")
        x, y = x[:train_examples], y[:train_examples]
    if test_data is not None and test_examples is not None:
        _check_enough(test_examples, len(test_data[0]), "test_examples", "the test set")
        test_data = (test_data[0][:test_examples], test_data[1][:test_examples])
    # The held-out part must be the same when the search is resumed, so it
    # is fixed even without a seed.
    (x_fit, y_fit), (x_val, y_val) = split_validation(
        x, y, validation_fraction, 0 if seed is None else seed
    )

    settings = {
        "model": model,
        "rule": rule,
        "rule_options": hypermodel.rule_options,
        "space": hypermodel.space,
        "fixed": hypermodel.fixed,
        "dataset": dataset,
        "data": {
            "examples": len(x),
            "input_shape": list(input_shape),
            "num_classes": classes,
            "fingerprint": _fingerprint(x, y),
        },
        "augment": bool(augment and dataset is not None),
        "tuner": tuner,
        "objective": OBJECTIVE.name,
        "max_epochs": max_epochs,
        "factor": factor if tuner == "hyperband" else None,
        "hyperband_iterations": hyperband_iterations if tuner == "hyperband" else None,
        "validation_fraction": validation_fraction,
        "batch_size": batch_size,
        "seed": seed,
    }
    settings = json.loads(json.dumps(settings))  # lists, as JSON has them
    project_dir = os.path.join(str(directory), project_name)
    settings_file = os.path.join(project_dir, "search.json")
    if not overwrite:
        _check_stored_settings(settings_file, settings)

    common = dict(
        hypermodel=hypermodel,
        objective=OBJECTIVE,
        seed=seed,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
        directory=str(directory),
        project_name=project_name,
        overwrite=overwrite,
    )
    if tuner == "hyperband":
        search = keras_tuner.Hyperband(
            max_epochs=max_epochs,
            factor=factor,
            hyperband_iterations=hyperband_iterations,
            **common,
        )
        # Hyperband's schedule sets the trials; max_trials caps it.
        search.oracle.max_trials = max_trials
    elif tuner == "random":
        search = keras_tuner.RandomSearch(max_trials=max_trials, **common)
    else:
        search = keras_tuner.BayesianOptimization(max_trials=max_trials, **common)
    os.makedirs(project_dir, exist_ok=True)
    with open(settings_file, "w") as f:
        json.dump(settings, f, indent=2)
        f.write("\n")

    finished_before = sum(
        t.status in ("COMPLETED", "FAILED") for t in search.oracle.trials.values()
    )
    say(
        f"Searching {model} with rule {rule} ({tuner}, objective val_accuracy on "
        f"{len(x_val)} held-out training examples, {len(x_fit)} to train on) in "
        f"{project_dir}; backend {keras.backend.backend()}."
    )
    if finished_before:
        say(f"Resuming: {finished_before} trial(s) already finished there are kept.")

    stopped = None
    try:
        with warnings.catch_warnings():
            # Hyperband rebuilds a continued trial with `build_from_config`
            # before loading its weights; the builders return built models,
            # so that rebuild has nothing to do and only warns.
            warnings.filterwarnings("ignore", message=r"Model '.*' had a build config")
            search.search(
                x_fit,
                y_fit,
                validation_data=(x_val, y_val),
                batch_size=batch_size,
                validation_batch_size=batch_size,
                epochs=max_epochs,
                callbacks=list(callbacks or []),
                verbose=verbose,
            )
    except RuntimeError as e:
        # keras-tuner's oracle stops the search this way after
        # `max_consecutive_failed_trials` failures in a row.
        if "consecutive failures" not in str(e):
            raise
        stopped = str(e)

    trials = _trial_records(search, hypermodel.space)
    completed = [t for t in trials if t["status"] == "COMPLETED"]
    failed = [t for t in trials if t["status"] in ("FAILED", "INVALID")]
    best = max(completed, key=lambda t: t["score"]) if completed else None

    paths = _write_results(project_dir, settings, trials, best)
    for trial in failed:
        message = f"Trial {trial['trial_id']} failed: {trial['error']}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        print_fn(f"WARNING: {message}")
    if stopped is not None or best is None:
        detail = failed[-1]["message"] if failed else (stopped or "")
        detail = "\n".join(detail.strip().splitlines()[-15:])
        reason = (
            f"the search stopped after {max_consecutive_failed_trials} failed trials in a row"
            if stopped is not None
            else f"all {len(trials)} trial(s) failed"
            if trials
            else "no trial ran"
        )
        raise TuningError(
            f"No usable result in {project_dir}: {reason}; see {paths[2]}. "
            f"Last error:\n{detail.strip()}"
        )

    best_trial = search.oracle.get_trial(best["trial_id"])
    result = TuningResult(
        best_hyperparameters=dict(best["hyperparameters"]),
        best_score=best["score"],
        best_trial_id=best["trial_id"],
        trials=trials,
        num_completed=len(completed),
        num_failed=len(failed),
        project_dir=project_dir,
        best_hyperparameters_file=paths[0],
        results_json=paths[1],
        results_markdown=paths[2],
        train_command=_train_command(
            model, rule, dataset, hypermodel, best["hyperparameters"], train_examples,
            batch_size, augment,
        ),
    )
    say(
        f"Best: trial {best['trial_id']}, val_accuracy {best['score']:.4f}, "
        + ", ".join(f"{k}={_short(v)}" for k, v in best["hyperparameters"].items())
        + f" ({len(completed)} trial(s) completed, {len(failed)} failed)."
    )
    say(f"Results in {paths[2]}; best hyperparameters in {paths[0]}.")
    if result.train_command:
        say(f"To train with them: {result.train_command}")

    if retrain:
        epochs = retrain_epochs or max_epochs
        output = str(output) if output else os.path.join(
            DEFAULT_OUTPUT_DIR, project_name, "model.keras"
        )
        if not output.endswith(".keras"):
            raise ValueError(f"The output path must end in '.keras', got {output!r}.")
        say(
            f"Retraining the best configuration on all {len(x)} training examples "
            f"for {epochs} epoch{'s' if epochs != 1 else ''}."
        )
        keras.backend.clear_session()
        network = hypermodel.build(best_trial.hyperparameters.copy())
        network.fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=verbose
        )
        if test_data is not None:
            metrics = network.evaluate(
                test_data[0], test_data[1], batch_size=batch_size, return_dict=True, verbose=0
            )
            result.test_accuracy = float(metrics["accuracy"])
            say(
                f"Test accuracy of the retrained model: {result.test_accuracy:.4f} "
                f"on {len(test_data[0])} test examples (not used in the search)."
            )
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        network.save(output)
        result.model_path = output
        result.retrain_epochs = epochs
        say(f"Saved the retrained model to {output}.")
        if export:
            result.export_path = _export_saved_model(
                network, output, os.path.join(os.path.dirname(output), "saved_model"), say
            )
        with open(output + ".json", "w") as f:
            json.dump(
                {
                    "project": project_name,
                    "trial_id": best["trial_id"],
                    "val_accuracy": best["score"],
                    "hyperparameters": best["hyperparameters"],
                    "settings": settings,
                    "epochs": epochs,
                    "train_examples": len(x),
                    "test_accuracy": result.test_accuracy,
                    "backend": keras.backend.backend(),
                    "date": _now(),
                },
                f,
                indent=2,
            )
            f.write("\n")
        _write_results(project_dir, settings, trials, best, retrained=result)
    return result


def _export_saved_model(model, keras_path, path, print_fn):
    """Exports the retrained model as a SavedModel (`keras_local.export`):
    in this process on TensorFlow; from its `.keras` file in a TensorFlow
    child process on another backend; with a note instead when TensorFlow
    is not installed. Returns the path, or `None`."""
    import importlib.util

    from keras_local import export as export_lib

    if keras.backend.backend() == "tensorflow":
        export_lib.export_saved_model(model, path)
    elif importlib.util.find_spec("tensorflow") is None:
        print_fn(
            "Note: no SavedModel export (it needs TensorFlow, which is not "
            f"installed here); export the saved file elsewhere with "
            f"`keras-local export {keras_path}`."
        )
        return None
    else:
        export_lib.export_file(keras_path, path)
    print_fn(f"Exported a SavedModel to {path}.")
    return path


# ------------------------------------------------------------- reporting
def _trial_records(search, space):
    """One JSON-ready dict per trial of the search, in trial order."""
    records = []
    for trial_id in sorted(search.oracle.trials, key=lambda t: (len(t), t)):
        trial = search.oracle.trials[trial_id]
        values = dict(trial.hyperparameters.values)
        searched = {k: _plain(v) for k, v in values.items() if not k.startswith("tuner/")}
        bookkeeping = {k: _plain(v) for k, v in values.items() if k.startswith("tuner/")}
        score = trial.score
        if score is not None:
            score = float(score)
            if not math.isfinite(score):
                score = None
        message = trial.message or None
        records.append(
            {
                "trial_id": trial_id,
                "status": trial.status,
                "score": score if trial.status == "COMPLETED" else None,
                "best_step": trial.best_step if trial.status == "COMPLETED" else None,
                "hyperparameters": searched,
                "tuner": bookkeeping,
                "error": _last_line(message) if message else None,
                "message": message,
            }
        )
    return records


def _write_results(project_dir, settings, trials, best, retrained=None):
    """Writes best_hyperparameters.json, results.json and results.md."""
    best_file = os.path.join(project_dir, "best_hyperparameters.json")
    json_file = os.path.join(project_dir, "results.json")
    markdown_file = os.path.join(project_dir, "results.md")
    with open(json_file, "w") as f:
        json.dump(
            {
                "objective": OBJECTIVE.name,
                "direction": OBJECTIVE.direction,
                "settings": settings,
                "backend": keras.backend.backend(),
                "date": _now(),
                "trials": trials,
            },
            f,
            indent=2,
        )
        f.write("\n")
    with open(markdown_file, "w") as f:
        f.write("\n".join(_markdown(settings, trials, retrained)) + "\n")
    if best is not None:
        _write_best(best_file, settings, best, retrained)
    elif os.path.exists(best_file):
        os.remove(best_file)
    return best_file, json_file, markdown_file


def _write_best(path, settings, best, result):
    content = {
        "objective": OBJECTIVE.name,
        "score": best["score"],
        "trial_id": best["trial_id"],
        "hyperparameters": best["hyperparameters"],
        "model": settings["model"],
        "rule": settings["rule"],
        "rule_options": settings["rule_options"],
        "fixed": settings["fixed"],
        "dataset": settings["dataset"],
    }
    if result is not None:
        content.update(
            train_command=result.train_command,
            retrained_model=result.model_path,
            exported_saved_model=result.export_path,
            retrain_epochs=result.retrain_epochs,
            test_accuracy=result.test_accuracy,
        )
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
        f.write("\n")


def _markdown(settings, trials, retrained=None):
    names = list(settings["space"])
    lines = [
        f"# Search: {settings['model']} with rule {settings['rule']}"
        + (f" on {settings['dataset']}" if settings["dataset"] else ""),
        "",
        f"Tuner {settings['tuner']}, objective val_accuracy (the output layer's "
        f"accuracy on {settings['validation_fraction']:.0%} of the "
        f"{settings['data']['examples']} training examples, held out; never the "
        f"test set), up to "
        f"{settings['max_epochs']} epochs per trial, batch size "
        f"{settings['batch_size']}, seed {settings['seed']}. Written "
        f"{_now()} by `keras_local.tuning` on the {keras.backend.backend()} backend.",
        "",
        "Search space: "
        + "; ".join(f"{name} {_describe(entry)}" for name, entry in settings["space"].items())
        + "."
        + (
            " Fixed: " + ", ".join(f"{k}={v!r}" for k, v in settings["fixed"].items()) + "."
            if settings["fixed"]
            else ""
        ),
        "",
        "| rank | trial | val accuracy | " + " | ".join(names) + " | epochs | status |",
        "|---|---|---|" + "---|" * len(names) + "---|---|",
    ]
    ranked = sorted(
        trials,
        key=lambda t: (
            t["score"] is None, -(t["score"] or 0.0), len(t["trial_id"]), t["trial_id"]
        ),
    )
    rank = 0
    for trial in ranked:
        done = trial["status"] == "COMPLETED"
        rank += done
        epochs = str(trial["tuner"].get("tuner/epochs", settings["max_epochs"]))
        if "tuner/trial_id" in trial["tuner"]:
            epochs += f" (from trial {trial['tuner']['tuner/trial_id']})"
        cells = [
            str(rank) if done else "-",
            trial["trial_id"],
            f"{trial['score']:.4f}" if trial["score"] is not None else "-",
            *(_short(trial["hyperparameters"].get(n, "")) for n in names),
            epochs,
            trial["status"]
            if done
            else f"{trial['status']}: {trial['error'] or ''}".replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if retrained is not None and retrained.model_path:
        test = (
            f", test accuracy {retrained.test_accuracy:.4f} (measured after the search, "
            "not used in it)"
            if retrained.test_accuracy is not None
            else ""
        )
        lines += [
            "",
            f"Trial {retrained.best_trial_id}'s configuration retrained on all "
            f"{settings['data']['examples']} training examples for "
            f"{retrained.retrain_epochs} epoch{'s' if retrained.retrain_epochs != 1 else ''}"
            f"{test}: `{retrained.model_path}`.",
        ]
    return lines


def _describe(entry):
    if entry["type"] == "fixed":
        return f"= {entry['value']!r}"
    if entry["type"] == "choice":
        return "in {" + ", ".join(map(repr, entry["values"])) + "}"
    text = f"[{entry['min']:g}, {entry['max']:g}]"
    if entry.get("step"):
        text += f" step {entry['step']:g}"
    if entry["sampling"] != "linear":
        text += f" ({entry['sampling']})"
    return text


def _train_command(model, rule, dataset, hypermodel, values, train_examples, batch_size, augment):
    """`keras-local train ...` with the best values, when every searched and
    fixed argument is one of its options."""
    if dataset is None:
        return None
    arguments = {**hypermodel.fixed, **values}
    # Searched rule parameters (`rule.<name>`) are rule options there.
    searched = {
        _rule_parameter(k): _short(v) for k, v in values.items() if _rule_parameter(k) is not None
    }
    arguments = {k: v for k, v in arguments.items() if _rule_parameter(k) is None}
    if any(name not in _TRAIN_OPTIONS for name in arguments):
        return None
    words = ["keras-local", "train", "--model", model, "--rule", rule, "--dataset", dataset]
    for name, value in arguments.items():
        words += [_TRAIN_OPTIONS[name], _short(value)]
    for name, value in {**hypermodel.rule_options, **searched}.items():
        words += ["--rule-option", f"{name}={value}"]
    if batch_size != 128:
        words += ["--batch-size", str(batch_size)]
    if not augment:
        words.append("--no-augment")
    if train_examples is not None:
        words += ["--train-examples", str(train_examples)]
    return shlex.join(words)


# ---------------------------------------------------------------- helpers
def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_enough(count, available, name, what):
    if count > available:
        raise ValueError(f"{name}={count} is more than the {available} examples {what} has.")


def _as_training_set(data):
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError(
            "data must be a data set name or a training set (x, y) of arrays, got "
            f"{type(data).__name__}."
        ) from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}.")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"y must hold integer class ids of shape (N,), got {y.dtype} of shape {y.shape}."
        )
    return x, y


def _check_stored_settings(path, settings):
    """Raises `ValueError` if the project at `path`'s folder holds a search
    with other settings (resuming it would mix incomparable trials)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f)
    if previous == settings:
        return
    changed = sorted(
        name for name in set(previous) | set(settings) if previous.get(name) != settings.get(name)
    )
    details = "; ".join(
        f"{name}: {previous.get(name)!r} then, {settings.get(name)!r} now" for name in changed
    )
    raise ValueError(
        f"{os.path.dirname(path)} holds a search with other settings ({details}). "
        "Run with the same settings to resume it, choose another project name, or "
        "overwrite it (overwrite=True, --overwrite)."
    )


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _short(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _last_line(message):
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
