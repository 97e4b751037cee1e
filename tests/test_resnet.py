"""ResidualBlock and the ResNet builders: shapes, the block's output against
an independent NumPy composition, feedback alignment and perturbative
convolutions inside it, exact parameter counts, groups."""

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from keras_local import zoo
from keras_local.layers import ConvBlock
from keras_local.layers import FeedbackAlignmentConv2D
from keras_local.layers import PerturbativeConv2D
from keras_local.layers import ResidualBlock

rng = np.random.default_rng(0)


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# ------------------------------------------------------- NumPy reference
def np_conv(x, kernel, stride=1, pad=0):
    """NHWC convolution, zero padding `pad` on every side (PyTorch's)."""
    kh, kw = kernel.shape[:2]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijcf->nhwf", windows, kernel)


def np_batch_norm(x, norm, training):
    if training:
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    else:
        mean, var = numpy(norm.moving_mean), numpy(norm.moving_variance)
    return numpy(norm.gamma) * (x - mean) / np.sqrt(var + 1e-5) + numpy(norm.beta)


def reference(block, x, training=False):
    """The block's `features`, rebuilt from its weights with NumPy."""
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    h = np_conv(x, numpy(block.conv1.kernel), block.strides, pad=1)
    h = relu(np_batch_norm(h, block.norm1, training))
    h = np_conv(h, numpy(block.conv2.kernel), 1, pad=1)
    h = np_batch_norm(h, block.norm2, training)
    if block.strides == 1 and x.shape[-1] == block.filters:
        shortcut = x
    elif block.shortcut == "projection":
        s = np_conv(x, numpy(block.shortcut_conv.kernel), block.strides)
        shortcut = np_batch_norm(s, block.shortcut_norm, training)
    else:  # option A: subsample, zero channels after the input's
        s = x[:, :: block.strides, :: block.strides]
        shortcut = np.concatenate(
            [s, np.zeros((*s.shape[:3], block.filters - x.shape[-1]))], axis=-1
        )
    return relu(h + shortcut)


def randomise_batch_norms(block):
    """Non-trivial BN statistics and affine parameters, so that inference
    mode is not (nearly) the identity."""
    for layer in block._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(size=c))
            layer.moving_mean.assign(rng.normal(size=c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))


CASES = [
    # (in channels, filters, strides, shortcut): identity, projection, option A
    (4, 4, 1, "projection"),
    (3, 4, 2, "projection"),
    (3, 4, 1, "projection"),
    (3, 5, 2, "identity"),
    (4, 4, 1, "identity"),
]


@pytest.mark.parametrize("channels, filters, strides, shortcut", CASES)
@pytest.mark.parametrize("training", [False, True])
def test_block_equals_numpy_composition(channels, filters, strides, shortcut, training):
    x = rng.normal(size=(2, 7, 7, channels)).astype("float32")
    block = ResidualBlock(filters, strides=strides, shortcut=shortcut)
    block.build(x.shape)
    randomise_batch_norms(block)
    features, outputs = block(x, training=training)
    expected = reference(block, x.astype("float64"), training)
    np.testing.assert_allclose(numpy(features), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(numpy(outputs), numpy(features))
    # ceil(7 / strides): the padded 3x3 convolution's size.
    side = -(-7 // strides)
    assert features.shape == (2, side, side, filters)
    assert block.compute_output_shape(x.shape) == (tuple(features.shape),) * 2


def test_shortcut_weights_exist_only_where_the_shape_changes():
    def weights(block, shape):
        block.build(shape)
        return sorted(w.path.split("/")[-2] for w in block.trainable_weights)

    same = weights(ResidualBlock(4), (None, 8, 8, 4))
    assert "shortcut_conv" not in same and len(same) == 6  # 2 kernels, 2 BNs x 2
    projected = weights(ResidualBlock(8, strides=2), (None, 8, 8, 4))
    assert projected.count("shortcut_conv") == 1 and len(projected) == 9
    option_a = weights(ResidualBlock(8, strides=2, shortcut="identity"), (None, 8, 8, 4))
    assert option_a == same
    # Convolutions have no bias with BatchNorm, PyTorch's default without it.
    plain = ResidualBlock(8, strides=2, batch_norm=False)
    plain.build((None, 8, 8, 4))
    assert [tuple(w.shape) for w in plain.trainable_weights] == [
        (3, 3, 4, 8), (8,), (3, 3, 8, 8), (8,), (1, 1, 4, 8), (8,)
    ]


def test_global_average_output_and_dropout():
    x = rng.normal(size=(3, 6, 6, 4)).astype("float32")
    block = ResidualBlock(8, output_pooling="global_average", dropout=0.5)
    features, outputs = block(x, training=False)
    assert outputs.shape == (3, 8)
    np.testing.assert_allclose(numpy(outputs), numpy(features).mean(axis=(1, 2)), rtol=1e-5)
    assert block.compute_output_shape(x.shape) == ((3, 6, 6, 8), (3, 8))
    # Dropout (whole channels) touches the outputs in training only, never
    # the features the heads read.
    block2 = ResidualBlock(8, dropout=0.5)
    f_train, o_train = block2(x, training=True)
    assert np.any(numpy(o_train) != numpy(f_train))


def test_pre_activation_features():
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    block = ResidualBlock(4, strides=2, features_from="pre_activation")
    block.build(x.shape)
    randomise_batch_norms(block)
    features, outputs = block(x, training=False)
    # The outputs are the activation as ever; the features its input.
    np.testing.assert_allclose(
        numpy(outputs), reference(block, x.astype("float64")), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(numpy(outputs), np.maximum(numpy(features), 0), rtol=1e-5)
    assert np.any(numpy(features) < 0)
    assert "honours_features_from" in vars(ResidualBlock)


def test_feedback_alignment_keeps_the_forward_pass():
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    block = ResidualBlock(4, strides=2, feedback="random")
    block.build(x.shape)
    for layer in (block.conv1, block.conv2, block.shortcut_conv):
        assert isinstance(layer, FeedbackAlignmentConv2D)
    features, _ = block(x, training=False)
    np.testing.assert_allclose(
        numpy(features), reference(block, x.astype("float64")), rtol=1e-4, atol=1e-4
    )


def test_feedback_alignment_rule_sets_random_feedback_in_every_block():
    model = zoo.resnet20(rule="feedback-alignment", width=1 / 4, input_shape=(8, 8, 3))
    residual = model.hidden_blocks[1:]
    assert all(b.feedback == "random" for b in model.hidden_blocks)
    assert all(isinstance(b.conv1, FeedbackAlignmentConv2D) for b in residual)
    assert all(isinstance(b.conv2, FeedbackAlignmentConv2D) for b in residual)


def test_perturbative_block():
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    block = ResidualBlock(6, strides=2, conv="perturbative")
    features, _ = block(x)
    assert isinstance(block.conv1, PerturbativeConv2D)
    assert isinstance(block.conv2, PerturbativeConv2D)
    assert block.conv1.strides == (2, 2) and block.conv2.strides == (1, 1)
    # The projection stays an ordinary 1x1 strided convolution.
    assert type(block.shortcut_conv) is keras.layers.Conv2D
    assert features.shape == (2, 4, 4, 6) == block.compute_output_shape(x.shape)[0]
    # 1x1 mixings without bias (BN follows), BNs, projection + BN.
    sizes = sorted(int(np.prod(w.shape)) for w in block.trainable_weights)
    assert sum(sizes) == 3 * 6 + 6 * 6 + 4 * 6 + 3 * 6 + 2 * 6
    # Odd sizes: the pool pads like the padded convolution (ceil).
    odd = ResidualBlock(6, strides=2, conv="perturbative")
    assert odd(rng.normal(size=(1, 7, 7, 3)).astype("float32"))[0].shape == (1, 4, 4, 6)


def test_block_validation_and_config():
    with pytest.raises(ValueError, match="shortcut must be one of"):
        ResidualBlock(4, shortcut="zeros")
    with pytest.raises(ValueError, match="output_pooling must be one of"):
        ResidualBlock(4, output_pooling="max")
    with pytest.raises(ValueError, match="strides must be a positive integer"):
        ResidualBlock(4, strides=0)
    with pytest.raises(ValueError, match="rank 4"):
        ResidualBlock(4).build((None, 16))
    with pytest.raises(ValueError, match="can only add channels"):
        ResidualBlock(2, shortcut="identity").build((None, 4, 4, 4))
    block = ResidualBlock(
        8, strides=2, activation="elu", dropout=0.1, shortcut="identity",
        output_pooling="global_average", conv="perturbative", name="b",
    )
    config = block.get_config()
    assert ResidualBlock.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
    assert isinstance(restored, ResidualBlock) and restored.get_config() == config


# ------------------------------------------------------------- builders
def conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def bn(c):
    return 2 * c  # gamma, beta (the moving statistics are not trained)


def resnet_params(stages, filters, shortcut, perturbative=False, classes=10, channels=3):
    """Inference parameters from the architecture: a 3x3 stem with bias and
    BN, basic blocks (no conv bias), the shortcuts, the linear output."""
    total = conv(3, channels, filters[0], bias=True) + bn(filters[0])
    cin = filters[0]
    for stage, (count, f) in enumerate(zip(stages, filters)):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            k = 1 if perturbative else 3  # a perturbative layer: a 1x1 mixing
            total += conv(k, cin, f) + bn(f) + conv(k, f, f) + bn(f)
            if (stride != 1 or cin != f) and shortcut == "projection":
                total += conv(1, cin, f) + bn(f)
            cin = f
    return total + cin * classes + classes


RESNETS = [
    # name, kwargs, expected count, published count (He et al. Table 6 / the
    # usual CIFAR ResNet-18) plus the stem's conv biases
    ("resnet20", {}, resnet_params((3, 3, 3), (16, 32, 64), "identity"), 269_722 + 16),
    ("resnet32", {}, resnet_params((5, 5, 5), (16, 32, 64), "identity"), 464_154 + 16),
    (
        "resnet20",
        {"shortcut": "projection"},
        resnet_params((3, 3, 3), (16, 32, 64), "projection"),
        None,
    ),
    ("resnet18", {}, resnet_params((2,) * 4, (64, 128, 256, 512), "projection"), 11_173_962 + 64),
    ("presnet18", {}, resnet_params((2,) * 4, (64, 128, 256, 512), "projection", True), None),
]


@pytest.mark.parametrize("name, kwargs, expected, published", RESNETS)
def test_resnet_parameter_counts(name, kwargs, expected, published):
    model = zoo.get(name)(rule="backprop", input_shape=(32, 32, 3), **kwargs)
    count = model.count_inference_params()
    print(f"{name} {kwargs}: {count:,} parameters")
    assert count == expected
    if published is not None:
        assert count == published
    millions = {"resnet20": 0.27, "resnet32": 0.46, "resnet18": 11.17, "presnet18": 1.41}
    assert round(count / 1e6, 2) == millions[name]


@pytest.mark.parametrize(
    "name, groups, strides",
    [
        ("resnet20", [1, 3, 3, 3], [1, 1, 1, 2, 1, 1, 2, 1, 1]),
        ("resnet32", [1, 5, 5, 5], [1] * 5 + [2] + [1] * 4 + [2] + [1] * 4),
        ("resnet18", [1, 2, 2, 2, 2], [1, 1, 2, 1, 2, 1, 2, 1]),
        ("presnet18", [1, 2, 2, 2, 2], [1, 1, 2, 1, 2, 1, 2, 1]),
    ],
)
def test_resnet_layout(name, groups, strides):
    model = zoo.get(name)(rule="predsim", width=1 / 16, input_shape=(8, 8, 3), num_classes=4)
    stem, residual = model.hidden_blocks[0], model.hidden_blocks[1:]
    assert model.groups == groups
    assert isinstance(stem, ConvBlock) and stem.conv == "standard"
    assert stem.kernel_size == 3 and stem.strides == 1 and stem.pool_size is None
    assert all(isinstance(b, ResidualBlock) for b in residual)
    assert [b.strides for b in residual] == strides
    assert [b.output_pooling for b in residual] == [None] * (len(residual) - 1) + ["global_average"]
    conv_kind = "perturbative" if name == "presnet18" else "standard"
    assert all(b.conv == conv_kind for b in residual)
    # Shapes through the network: 8 -> 4 -> 2 (-> 1), then a vector.
    x = keras.ops.ones((2, 8, 8, 3))
    for block in model.hidden_blocks:
        declared = block.compute_output_shape(tuple(x.shape))
        features, x = block(x)
        assert declared == (tuple(features.shape), tuple(x.shape))
    assert x.shape == (2, residual[-1].filters)
    assert model(keras.ops.ones((2, 8, 8, 3))).shape == (2, 4)


def test_width_scales_channels_and_keeps_one_at_least():
    model = zoo.resnet20(rule="backprop", width=1 / 32, input_shape=(8, 8, 3))
    assert [b.filters for b in model.hidden_blocks] == [1] * 4 + [1] * 3 + [2] * 3
    wide = zoo.resnet18(rule="backprop", width=1 / 8, input_shape=(8, 8, 3))
    assert sorted({b.filters for b in wide.hidden_blocks}) == [8, 16, 32, 64]


def test_resnet_arguments_are_checked():
    with pytest.raises(ValueError, match="stages must be positive block counts"):
        zoo.resnet((2, 2), (16,), rule="backprop")
    with pytest.raises(ValueError, match="shortcut must be one of"):
        zoo.resnet20(rule="backprop", shortcut="zeros")


def test_resnet_saves_and_loads(tmp_path):
    model = zoo.resnet20(rule="predsim", width=1 / 8, input_shape=(8, 8, 3), num_classes=4)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    path = tmp_path / "resnet20.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.groups == model.groups
    assert [type(b) for b in loaded.hidden_blocks] == [type(b) for b in model.hidden_blocks]
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
