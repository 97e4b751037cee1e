"""Pooling kernels and decoder sizes of the prediction head against the
reference table (reference-notes 1.5), and the heads' computations."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local.layers import PredictionHead
from keras_local.layers import SimilarityHead
from keras_local.layers import decoder_pooling
from tests.test_similarity import numpy_similarity

# (channels, map size, dim_in_decoder) -> (kernel, padding, decoder input):
# the MNIST, CIFAR-10, CIFAR-100 and STL-10 rows of the reference table.
REFERENCE_TABLE = {
    "mnist": (1024, [
        (128, 28, (16, 8), (8, 4), 1024), (256, 28, (16, 16), (8, 8), 1024),
        (256, 14, (8, 8), (4, 4), 1024), (512, 14, (16, 8), (8, 4), 1024),
        (512, 7, (8, 4), (4, 2), 1024), (512, 3, (4, 2), (2, 1), 1024)]),
    "cifar10": (2048, [
        (128, 32, (8, 8), (0, 0), 2048), (256, 32, (16, 8), (0, 0), 2048),
        (256, 16, (8, 4), (0, 0), 2048), (512, 16, (8, 8), (0, 0), 2048),
        (512, 8, (4, 4), (0, 0), 2048), (512, 4, (2, 2), (0, 0), 2048)]),
    "cifar100": (4096, [
        (128, 32, (8, 4), (0, 0), 4096), (256, 32, (8, 8), (0, 0), 4096),
        (256, 16, (4, 4), (0, 0), 4096), (512, 16, (8, 4), (0, 0), 4096),
        (512, 8, (4, 2), (0, 0), 4096), (512, 4, (2, 1), (0, 0), 4096)]),
    "stl10": (2048, [
        (128, 48, (16, 16), (0, 0), 1152), (256, 48, (32, 16), (16, 0), 1536),
        (256, 24, (16, 8), (8, 0), 1536), (512, 24, (16, 16), (8, 8), 2048),
        (512, 12, (8, 8), (4, 4), 2048), (512, 6, (4, 4), (2, 2), 2048)]),
}


@pytest.mark.parametrize("dataset", sorted(REFERENCE_TABLE))
def test_decoder_pooling_matches_reference_table(dataset):
    dim_in_decoder, rows = REFERENCE_TABLE[dataset]
    for channels, size, kernel, padding, decoder_input in rows:
        assert decoder_pooling(channels, size, size, dim_in_decoder) == (
            kernel, padding, decoder_input
        ), (dataset, channels, size)


@pytest.mark.parametrize("dataset", sorted(REFERENCE_TABLE))
def test_prediction_head_uses_table_geometry(dataset):
    dim_in_decoder, rows = REFERENCE_TABLE[dataset]
    channels, size, kernel, padding, decoder_input = rows[-1]
    head = PredictionHead(10, dim_in_decoder=dim_in_decoder)
    logits = head(ops.zeros((2, size, size, channels)))
    assert logits.shape == (2, 10)
    assert (head.pool_size, head.padding, head.decoder_input_dim) == (kernel, padding, decoder_input)
    assert head.dense.kernel.shape == (decoder_input, 10)


def numpy_avg_pool_count_include_pad(x, kernel, padding):
    (kh, kw), (ph, pw) = kernel, padding
    x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = (h - kh) // kh + 1, (w - kw) // kw + 1
    x = x[:, : oh * kh, : ow * kw].reshape(n, oh, kh, ow, kw, c)
    return x.mean(axis=(2, 4))


def test_prediction_head_pools_with_padding_counted_like_pytorch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 7, 512)).astype("float32")
    head = PredictionHead(10, dim_in_decoder=1024)
    head.build(x.shape)
    kernel = rng.normal(size=head.dense.kernel.shape).astype("float32")
    head.dense.kernel.assign(kernel)
    pooled = numpy_avg_pool_count_include_pad(x, head.pool_size, head.padding)
    expected = pooled.reshape(3, -1) @ kernel + ops.convert_to_numpy(head.dense.bias)
    np.testing.assert_allclose(ops.convert_to_numpy(head(x)), expected, rtol=1e-4, atol=1e-4)


def test_prediction_head_starts_at_zero_with_torch_bias():
    head = PredictionHead(10, dim_in_decoder=1024)
    head.build((None, 7, 7, 512))
    assert np.all(ops.convert_to_numpy(head.dense.kernel) == 0)
    bias = ops.convert_to_numpy(head.dense.bias)
    bound = 1 / np.sqrt(head.decoder_input_dim)
    assert np.all(np.abs(bias) <= bound) and np.abs(bias).max() > bound / 10


def test_prediction_head_on_vectors_and_without_pooling():
    head = PredictionHead(3, dim_in_decoder=None, kernel_initializer="torch")
    assert head(ops.ones((2, 4, 4, 8))).shape == (2, 3)
    assert head.decoder_input_dim == 128
    head = PredictionHead(3)
    assert head(ops.ones((2, 20))).shape == (2, 3)


@pytest.mark.parametrize("shape", [(5, 6, 6, 8), (5, 12)], ids=["conv", "dense"])
def test_similarity_head_is_a_bias_free_map_then_the_similarity(shape):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    head = SimilarityHead()
    out = ops.convert_to_numpy(head(x))
    channels = shape[-1]
    weights = head.projection.get_weights()
    assert len(weights) == 1  # no bias
    if len(shape) == 4:
        assert weights[0].shape == (3, 3, channels, channels)
    else:
        assert weights[0].shape == (channels, channels)
    projected = ops.convert_to_numpy(head.projection(x))
    np.testing.assert_allclose(out, numpy_similarity(projected), atol=2e-6)
    assert out.shape == (5, 5)


def test_heads_serialise():
    for layer in (PredictionHead(7, dim_in_decoder=512, kernel_initializer="torch"), SimilarityHead(spatial_std=False)):
        clone = layer.__class__.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer)


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_bad_dim_in_decoder(bad):
    with pytest.raises(ValueError, match="dim_in_decoder must be a positive integer"):
        PredictionHead(10, dim_in_decoder=bad)
