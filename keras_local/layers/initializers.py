"""PyTorch's default initialisers, which the reference code relies on.

Keras defaults (Glorot kernels, zero biases) differ from PyTorch's, and the
published numbers were obtained with PyTorch's: kernels and biases uniform in
+-1/sqrt(fan_in).
"""

import math

import keras


def torch_kernel_initializer(seed=None):
    """U(+-1/sqrt(fan_in)), PyTorch's `kaiming_uniform_(a=sqrt(5))`."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed
    )


def torch_bias_initializer(fan_in, seed=None):
    """U(+-1/sqrt(fan_in)); the bias initialiser needs the layer's fan-in."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound, seed=seed)


def kernel_initializer(name):
    """Resolves `"torch"` (PyTorch default) or any Keras initializer name."""
    if name == "torch":
        return torch_kernel_initializer()
    return keras.initializers.get(name)


def bias_initializer(name, fan_in):
    """Resolves `"torch"` (PyTorch default for this fan-in) or any Keras
    initializer."""
    if name == "torch":
        return torch_bias_initializer(fan_in)
    return keras.initializers.get(name)


def serialize_initializer(initializer):
    """A name stays a name; an initializer object becomes its config."""
    if isinstance(initializer, str):
        return initializer
    return keras.initializers.serialize(initializer)
