"""Shared fixtures: small real Fashion-MNIST subsets, tiny models, and a
gradient helper that works on the TensorFlow, JAX and PyTorch backends."""

import importlib.util
import pathlib
import sys

import keras
import numpy as np
import pytest

from keras_local import data
from keras_local.layers import ConvBlock
from keras_local.layers import DenseBlock
from keras_local.model import LocalModel

BACKEND = keras.backend.backend()
BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_module(script):
    """A script of benchmarks/ (e.g. "gpu.py") as a module; they import the
    helpers beside them (machine.py), so that folder is on the path while
    it loads."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        name = f"benchmark_{pathlib.Path(script).stem}"
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="session")
def fashion_mnist():
    """The full, normalised Fashion-MNIST (the Debian package in CI)."""
    return data.load("fashion_mnist")


@pytest.fixture(scope="session")
def fashion_subset(fashion_mnist):
    """512 training and 256 test examples of the real data set."""
    (x, y), (xt, yt) = fashion_mnist
    return (x[:512], y[:512]), (xt[:256], yt[:256])


def tiny_conv_model(rule="predsim", dropout=0.0, num_classes=5, input_shape=(8, 8, 3), **kw):
    """Two conv blocks (one pooled) and a dense block: every kind of stage."""
    blocks = [
        ConvBlock(4, pool_size=2, dropout=dropout, activation="leaky_relu", name="block1"),
        ConvBlock(6, dropout=dropout, activation="leaky_relu", name="block2"),
        DenseBlock(16, dropout=dropout, activation="leaky_relu", name="block3"),
    ]
    model = LocalModel(blocks, num_classes, rule=rule, input_shape=input_shape, **kw)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, epsilon=1e-8))
    return model


def random_batch(n=16, shape=(8, 8, 3), num_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = (np.arange(n) % num_classes).astype("int32")
    return x, y


def gradients(loss_fn, variables):
    """d loss_fn() / d variables on the current backend, computed without
    the model's training step (an independent reference). Unconnected
    variables get zeros."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
        return [np.zeros(v.shape) if g is None else np.asarray(g) for g, v in zip(grads, variables)]
    if BACKEND == "jax":
        import jax

        def wrapped(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()

        grads = jax.grad(wrapped)([v.value for v in variables])
        return [np.asarray(g) for g in grads]
    if BACKEND == "torch":
        import torch

        loss = loss_fn()
        if not loss.requires_grad:  # reaches none of the variables
            return [np.zeros(v.shape) for v in variables]
        grads = torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)
        return [
            np.zeros(v.shape) if g is None else g.detach().cpu().numpy()
            for g, v in zip(grads, variables)
        ]
    pytest.skip(f"no gradient helper for the {BACKEND} backend")
