"""Perturbative layers (Juefei-Xu et al. 2018; the rec-LRA paper's pconv):
the layer against an independent NumPy computation, its parameter count,
fixed masks that training never changes and saving keeps bit-exactly, and
the `conv="perturbative"` option of the blocks."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local.layers import ConvBlock
from keras_local.layers import DenseBlock
from keras_local.layers import PerturbativeConv2D
from keras_local.model import LocalModel
from tests.conftest import gradients

rng = np.random.default_rng(0)


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def size(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def reference(layer, x, pool=1):
    """relu(x + N) -> 1x1 mixing -> max-pool, in NumPy from the layer's weights."""
    masks = numpy(layer.masks)  # (H, W, C, M)
    b, h, w, c = x.shape
    perturbed = np.maximum(x[..., None] + masks, 0.0).reshape(b, h, w, c * masks.shape[-1])
    y = perturbed @ numpy(layer.kernel).reshape(c * masks.shape[-1], -1) + numpy(layer.bias)
    if pool > 1:
        y = y.reshape(b, h // pool, pool, w // pool, pool, -1).max(axis=(2, 4))
    return y


@pytest.mark.parametrize("channels, nmasks, filters", [(3, 1, 8), (4, 2, 5), (1, 3, 2)])
def test_trainable_parameters_are_exactly_the_1x1_mixing_and_bias(channels, nmasks, filters):
    layer = PerturbativeConv2D(filters, nmasks=nmasks)
    layer.build((None, 6, 7, channels))
    assert size(layer.trainable_weights) == channels * nmasks * filters + filters
    assert [w.name for w in layer.non_trainable_weights] == ["masks"]
    assert tuple(layer.masks.shape) == (6, 7, channels, nmasks)
    assert not layer.masks.trainable
    no_bias = PerturbativeConv2D(filters, nmasks=nmasks, use_bias=False)
    no_bias.build((None, 6, 7, channels))
    assert size(no_bias.trainable_weights) == channels * nmasks * filters


def test_masks_are_uniform_in_plus_minus_level_and_seeded():
    layer = PerturbativeConv2D(4, nmasks=2, level=0.3, seed=7)
    layer.build((None, 16, 16, 8))
    masks = numpy(layer.masks)
    assert masks.min() >= -0.3 and masks.max() <= 0.3
    assert masks.min() < -0.25 and masks.max() > 0.25 and abs(masks.mean()) < 0.02
    assert len(np.unique(masks)) == masks.size  # one mask per channel and pixel
    again = PerturbativeConv2D(4, nmasks=2, level=0.3, seed=7)
    again.build((None, 16, 16, 8))
    np.testing.assert_array_equal(numpy(again.masks), masks)
    normal = PerturbativeConv2D(4, nmasks=2, level=0.3, seed=7, distribution="normal")
    normal.build((None, 16, 16, 8))
    assert np.std(numpy(normal.masks)) == pytest.approx(0.3, rel=0.05)


@pytest.mark.backend
@pytest.mark.parametrize("nmasks, strides", [(1, 1), (2, 1), (2, 2)])
def test_output_equals_a_numpy_computation(nmasks, strides):
    layer = PerturbativeConv2D(5, nmasks=nmasks, strides=strides, level=0.5, seed=1)
    x = rng.normal(size=(3, 6, 4, 3)).astype("float32")
    y = numpy(layer(x))
    assert y.shape == (3, 6 // strides, 4 // strides, 5)
    np.testing.assert_allclose(y, reference(layer, x, pool=strides), rtol=1e-5, atol=1e-5)


def test_strides_two_pools_to_the_padded_3x3_convs_size():
    for side in (8, 7):
        layer = PerturbativeConv2D(6, strides=2)
        x = ops.ones((2, side, side, 3))
        expected = (2, -(-side // 2), -(-side // 2), 6)  # PyTorch's Conv2d(3, stride 2, pad 1)
        assert tuple(layer(x).shape) == layer.compute_output_shape(x.shape) == expected
        block = ConvBlock(6, strides=2, conv="perturbative")
        features, outputs = block(x)
        assert tuple(features.shape) == block.compute_output_shape(x.shape)[0] == expected
        standard = ConvBlock(6, strides=2)
        assert standard.compute_output_shape(x.shape)[0] == expected


@pytest.mark.backend
def test_feedback_random_sends_the_input_gradient_through_fixed_filters():
    layer = PerturbativeConv2D(4, nmasks=2, level=0.5, feedback="random")
    layer.build((None, 5, 5, 3))
    x = keras.Variable(rng.normal(size=(2, 5, 5, 3)).astype("float32"), name="x")
    g = rng.normal(size=(2, 5, 5, 4)).astype("float32")
    np.testing.assert_allclose(numpy(layer(x)), reference(layer, numpy(x)), rtol=1e-5, atol=1e-5)
    dx, dk = gradients(lambda: ops.sum(ops.multiply(layer(x), g)), [x, layer.kernel])
    active = (numpy(x)[..., None] + numpy(layer.masks)) > 0  # (2, 5, 5, 3, 2)
    B = numpy(layer.feedback_kernel).reshape(6, 4)
    expected = ((g @ B.T).reshape(2, 5, 5, 3, 2) * active).sum(axis=-1)
    np.testing.assert_allclose(dx, expected, rtol=1e-4, atol=1e-5)
    h = np.maximum(numpy(x)[..., None] + numpy(layer.masks), 0).reshape(-1, 6)
    np.testing.assert_allclose(dk.reshape(6, 4), h.T @ g.reshape(-1, 4), rtol=1e-4, atol=1e-4)


def tiny_perturbative_model(rule="predsim"):
    blocks = [
        ConvBlock(4, conv="perturbative", name="block1"),
        ConvBlock(6, strides=2, conv="perturbative", name="block2"),
        DenseBlock(8, name="block3"),
    ]
    model = LocalModel(blocks, num_classes=10, rule=rule, input_shape=(8, 8, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-2, epsilon=1e-8))
    return model


def batch(n=8):
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    return x, (np.arange(n) % 10).astype("int32")


def perturbative_layers(model):
    return [b.kernel_layer for b in model.layers if isinstance(b, ConvBlock)]


@pytest.mark.backend
@pytest.mark.parametrize("rule", ["predsim", "feedback-alignment"])
def test_training_changes_the_1x1_kernel_never_the_masks(rule):
    model = tiny_perturbative_model(rule)
    layers = perturbative_layers(model)
    assert all(isinstance(layer, PerturbativeConv2D) for layer in layers)
    assert [size(layer.trainable_weights) for layer in layers] == [1 * 4 + 4, 4 * 6 + 6]
    if rule == "feedback-alignment":
        assert all(layer.feedback_kernel is not None for layer in layers)
    masks = [numpy(layer.masks) for layer in layers]
    kernels = [numpy(layer.kernel) for layer in layers]
    x, y = batch()
    for _ in range(3):
        model.train_on_batch(x, y)
    for layer, before in zip(layers, masks):
        np.testing.assert_array_equal(numpy(layer.masks), before)
    for layer, before in zip(layers, kernels):
        assert not np.allclose(numpy(layer.kernel), before)


@pytest.mark.backend
def test_masks_survive_keras_save_and_load_bit_exactly(tmp_path):
    model = tiny_perturbative_model()
    x, y = batch()
    model.train_on_batch(x, y)
    path = tmp_path / "perturbative.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for original, restored in zip(perturbative_layers(model), perturbative_layers(loaded)):
        assert isinstance(restored, PerturbativeConv2D)
        np.testing.assert_array_equal(numpy(restored.masks), numpy(original.masks))
        np.testing.assert_array_equal(numpy(restored.kernel), numpy(original.kernel))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_layer_and_block_configs_round_trip():
    layer = PerturbativeConv2D(
        8, nmasks=3, level=0.2, strides=2, activation="leaky_relu", use_bias=False,
        seed=3, distribution="normal", feedback="random", name="p",
    )
    config = layer.get_config()
    assert PerturbativeConv2D.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, PerturbativeConv2D) and restored.get_config() == config

    block = ConvBlock(8, conv="perturbative", name="b")
    config = block.get_config()
    assert config["conv"] == "perturbative"
    assert ConvBlock.from_config(config).get_config() == config
    # Configs saved before `conv` existed load as standard convolutions.
    legacy = ConvBlock.from_config({k: v for k, v in config.items() if k != "conv"})
    assert legacy.conv == "standard" and ConvBlock(8).conv == "standard"
    legacy.build((None, 6, 6, 3))
    assert type(legacy.kernel_layer) is keras.layers.Conv2D


def test_perturbative_block_replaces_the_padded_conv_for_every_geometry():
    # kernel_size 5 and strides 2 take ConvBlock's padded path for a
    # standard conv; the perturbative layer needs no padding.
    for kwargs in ({"kernel_size": 5}, {"strides": 2}, {"kernel_size": 4}):
        block = ConvBlock(4, conv="perturbative", **kwargs)
        block.build((None, 8, 8, 3))
        assert isinstance(block.kernel_layer, PerturbativeConv2D)
        assert size(block.kernel_layer.trainable_weights) == 3 * 4 + 4
        assert tuple(block(ops.ones((2, 8, 8, 3)))[0].shape) == block.compute_output_shape((2, 8, 8, 3))[0]


def test_conv_option_validation():
    with pytest.raises(ValueError, match=r"conv must be one of \('standard', 'perturbative'\), got 'pconv'"):
        ConvBlock(4, conv="pconv")
    with pytest.raises(ValueError, match="conv must be one of"):
        DenseBlock(4, conv=None)
    with pytest.raises(ValueError, match=r"DenseBlock\) has no convolution.*applies to convolutional blocks"):
        DenseBlock(4, conv="perturbative").build((None, 8))
    with pytest.raises(ValueError, match="needs the input's height, width and channels"):
        ConvBlock(4, conv="perturbative").build((None, None, None, 3))
    with pytest.raises(ValueError, match="nmasks must be a positive integer, got 0"):
        PerturbativeConv2D(4, nmasks=0)
    with pytest.raises(ValueError, match="distribution must be one of"):
        PerturbativeConv2D(4, distribution="gaussian")
    with pytest.raises(ValueError, match="feedback must be one of"):
        PerturbativeConv2D(4, feedback="sym")
    layer = PerturbativeConv2D(4)
    layer(ops.ones((1, 6, 6, 2)))
    with pytest.raises(ValueError, match=r"expected shape=\(None, 6, 6, 2\)"):
        layer(ops.ones((1, 8, 8, 2)))
