"""Activation lookup with the papers' leaky ReLU slope, and the signum."""

import keras
from keras import ops

#: Negative slope of `"leaky_relu"` in this package: 0.01 as in the papers
#: (Keras' own default is 0.2, PyTorch's 0.01).
LEAKY_RELU_SLOPE = 0.01


def leaky_relu(x):
    return ops.leaky_relu(x, negative_slope=LEAKY_RELU_SLOPE)


def sign(x):
    """The signum: -1, 0 or 1. Its derivative is 0 almost everywhere, so
    only rules that never differentiate the activation (rec-LRA) can train
    a network of sign units (Ororbia et al. 2023, Table 1)."""
    return ops.sign(x)


_OWN = {"leaky_relu": leaky_relu, "sign": sign}


def get_activation(name):
    """Returns the activation function for `name`.

    `"leaky_relu"` has slope 0.01 here; `"sign"` is the (non-differentiable)
    signum; every other name is Keras'.
    """
    if name in _OWN:
        return _OWN[name]
    try:
        return keras.activations.get(name)
    except ValueError as error:
        raise ValueError(
            f"Unknown activation {name!r}. Use 'relu', 'leaky_relu' (slope "
            f"{LEAKY_RELU_SLOPE}), 'sign' or any keras.activations name."
        ) from error
