"""keras_local: train deep networks with local learning rules in Keras 3.

Each hidden block carries its own small heads that make an error signal next
to it; no gradient crosses a block boundary.

>>> import keras_local
>>> model = keras_local.zoo.mlp(rule="predsim", input_shape=(28, 28, 1))
>>> model.fit(x_train, y_train, epochs=1)  # doctest: +SKIP
"""

__version__ = "0.1.0"


def _choose_backend():
    """Keras defaults to TensorFlow, and `import keras` fails where it is not
    installed: when the configured backend (none, or "tensorflow" in the
    keras.json that Keras writes on its first import) is TensorFlow and
    TensorFlow is missing, take JAX, else PyTorch, so that `pip install
    "keras-local[jax]"` works as it is. `KERAS_BACKEND` always wins."""
    import importlib.util
    import json
    import os
    import sys

    if "keras" in sys.modules or "KERAS_BACKEND" in os.environ:
        return
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    try:
        with open(os.path.join(home, "keras.json")) as f:
            configured = json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        configured = "tensorflow"

    def installed(name):
        try:
            return importlib.util.find_spec(name) is not None
        except ImportError:
            return False

    if configured == "tensorflow" and not installed("tensorflow"):
        for name in ("jax", "torch"):
            if installed(name):
                os.environ["KERAS_BACKEND"] = name
                return


_choose_backend()

from keras_local import data  # noqa: E402 - after the backend is chosen
from keras_local import layers  # noqa: E402
from keras_local import optimizers  # noqa: E402
from keras_local import rules  # noqa: E402
from keras_local import schedules  # noqa: E402
from keras_local import zoo  # noqa: E402
from keras_local.convert import from_keras  # noqa: E402
from keras_local.model import LocalModel  # noqa: E402

__all__ = [
    "LocalModel",
    "data",
    "from_keras",
    "layers",
    "optimizers",
    "rules",
    "schedules",
    "zoo",
    "__version__",
]
