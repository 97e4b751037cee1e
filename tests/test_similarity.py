"""The similarity matrix and the sim loss against an independent NumPy
computation (Nøkland & Eidnes 2019, eq. 5; reference-notes 1.4)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local.ops import label_similarity
from keras_local.ops import prediction_loss
from keras_local.ops import similarity_loss
from keras_local.ops import similarity_matrix
from tests.conftest import gradients


def numpy_similarity(x, spatial_std=True):
    x = np.asarray(x, np.float64)
    if x.ndim == 4 and spatial_std and x.shape[3] > 3 and x.shape[1] > 1:
        x = x.std(axis=(1, 2))  # per channel over H, W (channels last)
    else:
        x = x.reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    x = x / (1e-8 + np.linalg.norm(x, axis=1, keepdims=True))
    return np.clip(x @ x.T, -1, 1)


@pytest.mark.parametrize(
    "shape",
    [(6, 10), (5, 7, 7, 8), (5, 8, 8, 3), (4, 1, 1, 16), (4, 2, 2, 5)],
    ids=["dense", "conv-std", "rgb-flatten", "1x1-flatten", "small-std"],
)
def test_similarity_matrix_matches_numpy(shape):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    expected = numpy_similarity(x)
    actual = ops.convert_to_numpy(similarity_matrix(x))
    np.testing.assert_allclose(actual, expected, atol=2e-6)
    np.testing.assert_allclose(np.diag(actual), 1.0, atol=1e-5)


def test_flattening_instead_of_std():
    x = np.random.default_rng(2).normal(size=(5, 6, 6, 8)).astype("float32")
    actual = ops.convert_to_numpy(similarity_matrix(x, spatial_std=False))
    np.testing.assert_allclose(actual, numpy_similarity(x, spatial_std=False), atol=2e-6)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_label_target_is_one_or_minus_one_over_k_minus_one(num_classes):
    labels = np.array([0, 1, 1, 0, num_classes - 1, 1])
    target = ops.convert_to_numpy(label_similarity(labels, num_classes))
    same = labels[:, None] == labels[None, :]
    expected = np.where(same, 1.0, -1.0 / (num_classes - 1))
    np.testing.assert_allclose(target, expected, atol=1e-6)
    one_hot = np.eye(num_classes)[labels]
    np.testing.assert_allclose(target, numpy_similarity(one_hot), atol=1e-6)


def test_similarity_loss_is_mean_square_over_all_entries():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(8, 12)).astype("float32")
    labels = rng.integers(0, 4, size=8)
    similarity = similarity_matrix(features)
    expected = np.mean((numpy_similarity(features) - numpy_similarity(np.eye(4)[labels])) ** 2)
    actual = float(similarity_loss(similarity, labels, 4))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_prediction_loss_is_mean_cross_entropy():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 5)).astype("float32")
    labels = rng.integers(0, 5, size=6)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(6), labels].mean()
    np.testing.assert_allclose(float(prediction_loss(logits, labels)), expected, rtol=1e-5)


@pytest.mark.backend
def test_dead_channels_and_constant_rows_give_finite_gradients():
    # A channel that is zero everywhere (a dead ReLU unit) has zero spatial
    # std; sqrt's slope there is infinite. Like PyTorch, the gradient is 0.
    x = np.random.default_rng(5).normal(size=(4, 5, 5, 6)).astype("float32")
    x[:, :, :, 2] = 0.0
    x[1] = 0.0  # an all-zero example: a constant row after the std
    variable = keras.Variable(x)
    labels = np.array([0, 1, 0, 1])
    (grad,) = gradients(lambda: similarity_loss(similarity_matrix(variable), labels, 2), [variable])
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).sum() > 0
