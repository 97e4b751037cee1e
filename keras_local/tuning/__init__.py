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
rule parameter as a rule option (`rule.code_units`, `rule.gamma`; `beta`
and `dim_in_decoder` are rule options too). The rule is resolved as
`keras-local train` resolves it (`keras_local.zoo.resolve_rule`), so both
build the same network. `tune` runs the search (Hyperband by default, or
random search or Bayesian optimisation) with the validation accuracy of the
output layer as the objective, measured on a held-out part of the *training*
set (`split_validation`; the test set is never used to choose). It then

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

The modules: `space` (search spaces), `hypermodel` (`LocalHyperModel`,
`split_validation`), `search` (`tune`), `report` (trial records, result
files, `TuningResult`), `recipe` (defaults and recipe files). keras-tuner
(the `tune` extra: `pip install "keras-local[tune]"`) is imported only when
`LocalHyperModel`, `split_validation`, `OBJECTIVE` or `tune` is first used.
"""

import importlib

from keras_local.tuning.recipe import DEFAULT_DIRECTORY
from keras_local.tuning.recipe import DEFAULT_OUTPUT_DIR
from keras_local.tuning.recipe import RECIPE_KEYS
from keras_local.tuning.recipe import TUNERS
from keras_local.tuning.recipe import load_recipe
from keras_local.tuning.report import TuningError
from keras_local.tuning.report import TuningResult
from keras_local.tuning.space import RULE_PREFIX
from keras_local.tuning.space import default_space
from keras_local.tuning.space import in_space
from keras_local.tuning.space import normalize_space

__all__ = [
    "DEFAULT_DIRECTORY",
    "DEFAULT_OUTPUT_DIR",
    "OBJECTIVE",
    "RECIPE_KEYS",
    "RULE_PREFIX",
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

#: The names that need keras-tuner, and their modules (imported on first use).
_NEEDS_KERAS_TUNER = {
    "LocalHyperModel": "hypermodel",
    "split_validation": "hypermodel",
    "OBJECTIVE": "search",
    "tune": "search",
}


def __getattr__(name):
    module = _NEEDS_KERAS_TUNER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NEEDS_KERAS_TUNER))
