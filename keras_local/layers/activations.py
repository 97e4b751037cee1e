"""Activation lookup with the papers' leaky ReLU slope."""

import keras
from keras import ops

#: Negative slope of `"leaky_relu"` in this package: 0.01 as in the papers
#: (Keras' own default is 0.2, PyTorch's 0.01).
LEAKY_RELU_SLOPE = 0.01


def leaky_relu(x):
    return ops.leaky_relu(x, negative_slope=LEAKY_RELU_SLOPE)


def get_activation(name):
    """Returns the activation function for `name`.

    `"leaky_relu"` has slope 0.01 here; every other name is Keras'.
    """
    if name == "leaky_relu":
        return leaky_relu
    try:
        return keras.activations.get(name)
    except ValueError as error:
        raise ValueError(
            f"Unknown activation {name!r}. Use 'relu', 'leaky_relu' (slope "
            f"{LEAKY_RELU_SLOPE}) or any keras.activations name."
        ) from error
