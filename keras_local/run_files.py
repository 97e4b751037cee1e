"""The files a run keeps: its settings record, its saved model and summary.

`claim` is the one resume guard: `keras-local train` claims its backup
directory and `keras-local tune` its project directory with the settings of
the run, so that a rerun with the same settings resumes and one with other
settings is refused before anything is mixed. `save_model` is the one way a
trained model is saved with its JSON summary. `load_toml` reads recipes.

Every file is written whole or not at all (`write_atomic`: a temporary file
renamed over the target), so an interruption never leaves half a file;
`lock` keeps two runs from writing one output at once.
"""

import contextlib
import json
import math
import os
import socket

from keras_local.optional import tensorflow_left_unimported
from keras_local.run_settings import SettingsError


class DamagedFileError(SettingsError):
    """A file a run needs exists but cannot be read (truncated, not the
    format it should be); the message names it and what to do."""


class OutputInUseError(SettingsError):
    """Another run is writing the same output."""

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib


def check_model_path(path):
    """`path` as a string; `SettingsError` unless it ends in `.keras`."""
    path = str(path)
    if not path.endswith(".keras"):
        raise SettingsError(
            f"The output path must end in '.keras' (the Keras model format), got {path!r}."
        )
    return path


def make_directory_for(path):
    """Creates the directory `path` goes into; `SettingsError` naming it
    when it cannot be created or written (checked before any work)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise SettingsError(f"Cannot create the directory for {path}: {e.strerror}.") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SettingsError(f"Cannot write to {directory} (for {path}): permission denied.")


def write_atomic(path, text):
    """Writes `text` to `path` through a temporary file renamed over it, so
    that `path` holds the old or the new text, never a part."""
    temporary = temporary_name(path)
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def strict_json(value):
    """`value` (dicts, lists, numbers, text) as strict JSON text: NaN and
    infinities, which JSON has no words for, become `null`."""

    def finite(item):
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value), indent=2, allow_nan=False) + "\n"


@contextlib.contextmanager
def lock(path):
    """Holds `<path>.lock` while a run writes `path`: a second run on the
    same output stops with `OutputInUseError` naming the first one's
    process; a lock left by a killed run is taken over."""
    lock_path = path + ".lock"
    make_directory_for(path)
    owner = f"{socket.gethostname()} {os.getpid()}"
    while True:
        try:
            descriptor = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _lock_is_live(lock_path):
                with open(lock_path) as f:
                    holder = f.read().strip()
                raise OutputInUseError(
                    f"Another run (host and process {holder}) is writing {path}. Wait for "
                    f"it to finish, or choose another output path; if no such run exists, "
                    f"delete {lock_path}."
                ) from None
            os.remove(lock_path)  # left by a run that was killed
            continue
        with os.fdopen(descriptor, "w") as f:
            f.write(owner + "\n")
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock_path)


def _lock_is_live(lock_path):
    try:
        with open(lock_path) as f:
            host, pid = f.read().split()
        pid = int(pid)
    except (OSError, ValueError):
        return False  # unreadable: half written by a killed run
    if host != socket.gethostname():
        return True  # another machine's run: we cannot tell, so keep out
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_partial_files(path):
    directory, name = os.path.split(os.path.abspath(path))
    stem = os.path.splitext(name)[0]
    for other in os.listdir(directory):
        if other.startswith(f".{stem}.partial-") or other.startswith(f".{name}.partial-"):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, other))


def temporary_name(path):
    """A hidden name beside `path`, unique to this process, to write to
    before renaming over `path`."""
    directory, name = os.path.split(path)
    stem, extension = os.path.splitext(name)
    # The extension stays: Keras saves only to paths ending in `.keras`.
    return os.path.join(directory, f".{stem}.partial-{os.getpid()}{extension}")


def claim(directory, settings, *, record, holds, start_over, defaults=None):
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
        defaults: values of settings that a record written before they
            existed lacks (they had these values then).

    Returns:
        Whether `directory` already held a run with these settings.
    """
    path = os.path.join(directory, record)
    current = json.loads(json.dumps(settings))  # tuples as lists, as JSON has them
    if os.path.exists(path):
        try:
            with open(path) as f:
                previous = json.load(f)
        except ValueError as e:
            raise DamagedFileError(
                f"{path} cannot be read ({e}): {directory} is damaged. Delete it to "
                "start over."
            ) from None
        previous = {**(defaults or {}), **previous}
        if previous != current:
            raise SettingsError(
                f"{directory} holds {holds} with other settings "
                f"({describe_changes(previous, current)}). Run "
                f"again with the same settings to resume it, {start_over}."
            )
        return True
    os.makedirs(directory, exist_ok=True)
    write_atomic(path, strict_json(current))
    return False


def describe_changes(previous, current):
    """`"epochs: 200 then, 1 now; ..."` for each setting that differs."""
    changed = sorted(
        name for name in set(previous) | set(current) if previous.get(name) != current.get(name)
    )
    return "; ".join(
        f"{name}: {previous.get(name)!r} then, {current.get(name)!r} now" for name in changed
    )


def save_model(model, path, summary):
    """Saves `summary` (a dict) as strict JSON to `<path>.json`, then
    `model` to `path` (`.keras`), each written whole or not at all; returns
    the summary's path.

    The summary goes first: a model file on disk always has its summary
    beside it, which is how a finished run is recognised.
    """
    import keras

    path = check_model_path(path)
    make_directory_for(path)
    summary_path = path + ".json"
    _remove_partial_files(path)  # left by a run killed while saving
    write_atomic(summary_path, strict_json({**summary, "keras_version": keras.__version__}))
    temporary = temporary_name(path)
    try:
        with tensorflow_left_unimported():
            model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return summary_path


def load_model_file(path, compile=False):
    """Loads a saved `.keras` LocalModel; `SettingsError` when there is no
    file, `DamagedFileError` naming the file when it cannot be read (cut
    off, or not a Keras model) or is not a keras_local model."""
    import zipfile

    import keras

    import keras_local  # noqa: F401 - registers the classes load_model needs

    path = str(path)
    if not os.path.isfile(path):
        raise SettingsError(f"No saved model at {path!r}.")
    if not zipfile.is_zipfile(path):
        raise DamagedFileError(
            f"{path} is not a readable .keras file (it is cut off, or not a Keras model "
            "at all). Train it again, or restore it from a copy."
        )
    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
        raise DamagedFileError(
            f"{path} cannot be loaded as a Keras model ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Train it again, or restore it "
            "from a copy."
        ) from e
    if not hasattr(model, "hidden_blocks"):
        raise SettingsError(f"{path} is not a keras_local LocalModel.")
    return model


def read_summary(path):
    """The JSON summary saved beside the model `path`; `None` when there is
    none; `DamagedFileError` when it is not valid JSON."""
    summary_path = path + ".json"
    if not os.path.exists(summary_path):
        return None
    try:
        with open(summary_path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DamagedFileError(
            f"The summary {summary_path} cannot be read ({e}). Delete it and {path} "
            "to train again."
        ) from None


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
