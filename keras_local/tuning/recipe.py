"""What a search is set by: its fixed choices, defaults and recipe files.

A search recipe (`tuning/*.toml`) is a TOML file of `tune`'s arguments; its
file name is the project name.
"""

import os

from keras_local import run_files
from keras_local.run_settings import SAVED_MODELS_DIR

#: Where searches are stored: `<DEFAULT_DIRECTORY>/<project>/`.
DEFAULT_DIRECTORY = "tuning"
#: Where the retrained best model goes: `<DEFAULT_OUTPUT_DIR>/<project>/model.keras`.
DEFAULT_OUTPUT_DIR = SAVED_MODELS_DIR
#: The tuners `tune` can run.
TUNERS = ("hyperband", "random", "bayesian")
#: The objective (`OBJECTIVE`): the output layer's accuracy on the held-out
#: validation part, the higher the better.
OBJECTIVE_NAME = "val_accuracy"
OBJECTIVE_DIRECTION = "max"

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
    values = run_files.load_toml(path, "search recipe")
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
