"""The files a run keeps: its settings record, its saved model and summary.

`claim` is the one resume guard: `keras-local train` claims its backup
directory and `keras-local tune` its project directory with the settings of
the run, so that a rerun with the same settings resumes and one with other
settings is refused before anything is mixed. `save_model` is the one way a
trained model is saved with its JSON summary. `load_toml` reads recipes.
"""

import json
import os

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib


def check_model_path(path):
    """`path` as a string; `ValueError` unless it ends in `.keras`."""
    path = str(path)
    if not path.endswith(".keras"):
        raise ValueError(
            f"The output path must end in '.keras' (the Keras model format), got {path!r}."
        )
    return path


def claim(directory, settings, *, record, holds, start_over):
    """Claims `directory` for a run with `settings` (a JSON-serialisable dict).

    The first claim creates the directory and writes `settings` to the file
    `record` in it. A later claim with equal settings returns `True` (the
    run resumes); one with other settings raises `ValueError` naming each
    changed setting, since resuming would mix runs that do not fit together.

    Args:
        directory: the run's directory (a backup or a search project).
        settings: the settings that must match to resume.
        record: the file name of the settings record inside `directory`.
        holds: what the directory holds, for the message ("the backup of an
            interrupted run").
        start_over: how to start over instead, for the message.

    Returns:
        Whether `directory` already held a run with these settings.
    """
    path = os.path.join(directory, record)
    current = json.loads(json.dumps(settings))  # tuples as lists, as JSON has them
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous != current:
            changed = sorted(
                name
                for name in set(previous) | set(current)
                if previous.get(name) != current.get(name)
            )
            details = "; ".join(
                f"{name}: {previous.get(name)!r} then, {current.get(name)!r} now"
                for name in changed
            )
            raise ValueError(
                f"{directory} holds {holds} with other settings ({details}). Run "
                f"again with the same settings to resume it, {start_over}."
            )
        return True
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(current, f, indent=2)
        f.write("\n")
    return False


def save_model(model, path, summary):
    """Saves `model` to `path` (`.keras`) and `summary` (a dict) as JSON to
    `<path>.json`; returns the summary's path."""
    import keras

    path = check_model_path(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    model.save(path)
    summary_path = path + ".json"
    with open(summary_path, "w") as f:
        json.dump({**summary, "keras_version": keras.__version__}, f, indent=2)
        f.write("\n")
    return summary_path


def load_toml(path, what):
    """The table in the TOML file `path`; `ValueError` naming `what` (e.g.
    "recipe") when the file is missing or not valid TOML."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"No {what} file {path}.") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from None
