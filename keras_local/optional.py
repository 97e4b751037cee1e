"""Optional dependencies: import them on use, and say which extra to install.

keras_local trains with Keras, NumPy and one backend (`pip install
"keras-local[jax]"`). Everything else is an extra of the `keras-local`
distribution (see pyproject.toml):

| extra      | packages                                   | for                                   |
|------------|--------------------------------------------|---------------------------------------|
| `jax`      | jax (CPU; add `jax[cuda12]` for a GPU)     | `KERAS_BACKEND=jax`                   |
| `tf`       | tensorflow, tensorflow-datasets            | `KERAS_BACKEND=tensorflow`, data sets |
| `torch`    | torch                                      | `KERAS_BACKEND=torch`                 |
| `export`   | tf2onnx, onnx, onnxruntime                 | `keras-local export` (with `tf`)      |
| `tune`     | keras-tuner, six, tensorboard              | `keras-local tune`                    |
| `analysis` | scikit-learn, matplotlib                   | t-SNE plots, early-exit plots         |

A feature that needs one of them imports it with `require`, which raises
`MissingOptionalDependency` (an `ImportError`) naming the extra:

>>> from keras_local.optional import require
>>> kt = require("keras_tuner", feature="keras-local tune")  # doctest: +SKIP
MissingOptionalDependency: keras-local tune needs keras-tuner: pip install "keras-local[tune]"
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys

__all__ = [
    "EXTRAS",
    "MissingOptionalDependency",
    "available",
    "install_command",
    "require",
    "tensorflow_left_unimported",
]

#: Importable module -> (distribution on PyPI, extra of keras-local that installs it).
EXTRAS = {
    "jax": ("jax", "jax"),
    "tensorflow": ("tensorflow", "tf"),
    "tensorflow_datasets": ("tensorflow-datasets", "tf"),
    "torch": ("torch", "torch"),
    "tf2onnx": ("tf2onnx", "export"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "keras_tuner": ("keras-tuner", "tune"),
    "six": ("six", "tune"),
    "tensorboard": ("tensorboard", "tune"),
    "sklearn": ("scikit-learn", "analysis"),
    "matplotlib": ("matplotlib", "analysis"),
}


class MissingOptionalDependency(ModuleNotFoundError):
    """An optional package a feature needs is not installed (or cannot be
    imported). The message names the extra that installs it; `.name` is the
    module, `.extra` the extra."""

    def __init__(self, message, name=None, extra=None):
        super().__init__(message, name=name)
        self.extra = extra


def install_command(extra):
    """`pip install "keras-local[EXTRA]"`."""
    return f'pip install "keras-local[{extra}]"'


def _top_level(module):
    return module.partition(".")[0]


def _describe(module, extra=None, package=None):
    default_package, default_extra = EXTRAS.get(_top_level(module), (None, None))
    package = package or default_package or _top_level(module)
    extra = extra or default_extra
    return package, extra


def available(module):
    """Whether `module` can be found, without importing it (a top-level name
    such as `"tensorflow"`; a dotted name imports its parent packages)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module, extra=None, feature=None, package=None):
    """Imports and returns `module`, or raises `MissingOptionalDependency`.

    Args:
        module: the module to import, e.g. `"keras_tuner"` or
            `"sklearn.manifold"`.
        extra: the keras-local extra that installs it; default from `EXTRAS`.
        feature: what needs it, for the message (e.g. `"keras-local tune"`);
            default `"this feature"`.
        package: the distribution name to print; default from `EXTRAS`.

    Returns:
        The imported module.

    Raises:
        MissingOptionalDependency: the import failed (the module, or one of
            its own dependencies, is missing or broken). The message reads
            `FEATURE needs PACKAGE: pip install "keras-local[EXTRA]"`, with
            the import error appended when it was not the module itself that
            was missing.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package, extra = _describe(module, extra, package)
        feature = feature or "this feature"
        message = f"{feature} needs {package}"
        if extra:
            message += f": {install_command(extra)}"
        else:
            message += f": pip install {package}"
        missing = getattr(e, "name", None)
        if not (missing and _top_level(missing) == _top_level(module)):
            message += f" ({package} could not be imported: {e})"
        raise MissingOptionalDependency(message, name=module, extra=extra) from e


@contextlib.contextmanager
def tensorflow_left_unimported():
    """Inside it, Keras does not import TensorFlow unless it already is.

    Keras imports TensorFlow wherever it is installed, whatever the backend:
    `keras.utils.set_random_seed` to seed it for `tf.data`, and the
    serializer of `model.save` to ask whether an object is a
    `tf.TensorShape`. On the JAX and torch backends that import alone is
    about 400 MB of a run's memory and 1.5 s, for nothing: while TensorFlow
    is not imported, nothing runs on `tf.data` and no object can be a
    `TensorShape`. So Keras' lazy module is told, for the duration, that
    TensorFlow is unavailable. Where TensorFlow is imported (its backend
    among others) nothing changes.
    """
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    if "tensorflow" in sys.modules or lazy._available is not None:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = None
