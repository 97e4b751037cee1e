"""keras_local: train deep networks with local learning rules in Keras 3.

Each hidden block carries its own small heads that make an error signal next
to it; no gradient crosses a block boundary.

>>> import keras_local
>>> model = keras_local.zoo.mlp(rule="predsim", input_shape=(28, 28, 1))
>>> model.fit(x_train, y_train, epochs=1)  # doctest: +SKIP
"""

__version__ = "0.1.0"

from keras_local import data
from keras_local import layers
from keras_local import rules
from keras_local import schedules
from keras_local import zoo
from keras_local.model import LocalModel

__all__ = ["LocalModel", "data", "layers", "rules", "schedules", "zoo", "__version__"]
