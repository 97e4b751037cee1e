"""`keras_local.from_keras`: a plain Keras model (a VGG-style Sequential, a
functional ResNet with an identity and a projection shortcut, an MLP) turned
into a `LocalModel` of `KerasBlock`s: same predictions before training under
every rule that applies, training on real Fashion-MNIST, `.keras` round
trips, and clear errors for what cannot be converted."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_local
from keras_local import rules
from keras_local.layers.keras_block import KerasBlock

#: Rules that cannot keep a Keras model's output layer, and what they say.
CANNOT_APPLY = {"associated": "has no output layer"}

#: Rules whose converted model does not compute the original's function
#: before training (an input/output transform, an output layer they reset).
#: None of today's: the converter copies the output Dense into the output
#: layer even where the rule would start it at zero, and every swap keeps
#: the forward pass. A new rule that changes it is to be listed here.
FORWARD_CHANGED = set()

SHAPE = (28, 28, 1)


def vgg():
    """Conv-BN-ReLU-Pool x2, Flatten, Dense."""
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            layers.Conv2D(4, 3, padding="same", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(6, 3, padding="same", name="conv2"),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(name="relu2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, name="logits"),
        ],
        name="vgg",
    )
    # Running statistics other than the initial ones: they must be copied.
    rng = np.random.default_rng(1)
    for name in ("bn1", "bn2"):
        bn = model.get_layer(name)
        bn.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in bn.get_weights()])
    return model


def resnet(shortcut_input=None):
    """A stem, a block with an identity shortcut, one with a projection."""
    inputs = keras.Input(SHAPE)
    x = layers.ReLU(name="stem_relu")(layers.Conv2D(4, 3, padding="same", name="stem")(inputs))
    y = layers.Conv2D(4, 3, padding="same", name="a_conv1")(x)
    y = layers.ReLU(name="a_relu1")(layers.BatchNormalization(name="a_bn1")(y))
    y = layers.Conv2D(4, 3, padding="same", name="a_conv2")(y)
    x = layers.ReLU(name="a_relu")(layers.Add(name="a_add")([x, y]))
    y = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="b_conv1")(x)
    y = layers.Conv2D(8, 3, padding="same", name="b_conv2")(y)
    shortcut = layers.Conv2D(8, 1, strides=2, name="b_proj")(x)
    x = layers.ReLU(name="b_relu")(layers.Add(name="b_add")([shortcut, y]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x), name="resnet")


def mlp():
    return keras.Sequential(
        [
            keras.Input(SHAPE),
            layers.Flatten(name="flat"),
            layers.Dense(16, activation="relu", name="d1"),
            layers.Dropout(0.1, name="drop1"),
            layers.Dense(16, activation="tanh", name="d2"),
            layers.Dense(10, name="logits"),
        ],
        name="mlp",
    )


MODELS = {"vgg": vgg, "resnet": resnet, "mlp": mlp}
#: Rules run on every backend (the rest on the default one).
BACKEND_RULES = ("predsim", "feedback-alignment")


def batch(n=8):
    return np.random.default_rng(0).normal(size=(n, *SHAPE)).astype("float32")


def cases():
    for model in MODELS:
        for rule in rules.names():
            marks = [pytest.mark.backend] if rule in BACKEND_RULES else []
            yield pytest.param(model, rule, marks=marks, id=f"{model}-{rule}")


@pytest.mark.parametrize("model_name, rule", list(cases()))
def test_converted_model_predicts_as_the_original(model_name, rule):
    keras.utils.set_random_seed(0)
    original = MODELS[model_name]()
    x = batch()
    if rule in CANNOT_APPLY:
        with pytest.raises(ValueError, match=f"Rule {rule!r} {CANNOT_APPLY[rule]}"):
            keras_local.from_keras(original, rule=rule)
        return
    before = [w.copy() for w in original.get_weights()]
    model, report = keras_local.from_keras(original, rule=rule)
    assert all(isinstance(block, KerasBlock) for block in model.hidden_blocks)
    assert report.rule == rule and report.output["layer"] == "logits"
    if rule not in FORWARD_CHANGED:
        # `predict` (a compiled function per model) for the rules run on every
        # backend; a plain call, the same network eagerly, for the rest (fast).
        if rule in BACKEND_RULES:
            converted = model.predict(x, verbose=0)
        else:
            converted = keras.ops.convert_to_numpy(model(x, training=False))
        expected = keras.ops.convert_to_numpy(original(x, training=False))
        np.testing.assert_allclose(converted, expected, rtol=1e-5, atol=2e-6)
    # Copied: the original's weights are its own.
    for old, new in zip(before, original.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_auto_split_and_report():
    _, report = keras_local.from_keras(vgg(), rule="feedback-alignment")
    assert [b["layers"] for b in report.blocks] == [
        ["conv1", "bn1", "relu1", "pool1"],
        ["conv2", "bn2", "relu2", "pool2", "flatten"],
    ]
    assert [(b["features"], b["width"], b["feature_map"]) for b in report.blocks] == [
        ("relu1", 4, True),
        ("relu2", 6, True),
    ]
    assert [(s[0], s[1], s[2]) for s in report.swaps] == [
        ("block1", "conv1", "Conv2D"),
        ("block2", "conv2", "Conv2D"),
        ("output", "logits", "Dense"),
    ]
    assert "FeedbackAlignmentConv2D" in str(report) and "block2" in str(report)
    _, report = keras_local.from_keras(resnet(), rule="predsim")
    assert [b["layers"][-1] for b in report.blocks] == ["stem_relu", "a_relu", "gap"]
    assert {"a_conv1", "a_add"} <= set(report.blocks[1]["layers"])  # kept whole
    assert report.blocks[2]["features"] == "b_relu" and not report.swaps
    _, report = keras_local.from_keras(mlp(), rule="backprop")
    assert [b["layers"] for b in report.blocks] == [["flat", "d1", "drop1"], ["d2"]]
    assert report.blocks[0]["features"] == "d1"


def test_split_by_names():
    model, report = keras_local.from_keras(resnet(), rule="predsim", split=["a_relu"])
    assert [b["layers"][-1] for b in report.blocks] == ["a_relu", "gap"]
    assert len(model.hidden_blocks) == 2
    with pytest.raises(ValueError, match="'nope', which is not a hidden layer"):
        keras_local.from_keras(resnet(), split=["nope"])


def test_a_branch_crossing_a_cut_is_refused():
    with pytest.raises(
        ValueError, match="after 'a_relu1': the branch stem_relu -> a_add crosses that cut"
    ):
        keras_local.from_keras(resnet(), split=["a_relu1"])


def test_a_shared_layer_is_refused():
    inputs = keras.Input((6,))
    shared = layers.Dense(6, activation="relu", name="shared")
    x = shared(shared(inputs))
    model = keras.Model(inputs, layers.Dense(3, name="out")(x))
    with pytest.raises(ValueError, match="Layer 'shared' is used 2 times"):
        keras_local.from_keras(model)


def test_what_cannot_be_converted_says_why():
    depthwise = keras.Sequential(
        [keras.Input((8, 8, 2)), layers.DepthwiseConv2D(3, name="dw"), layers.ReLU(),
         layers.Flatten(), layers.Dense(3)]  # fmt: skip
    )
    keras_local.from_keras(depthwise, rule="predsim")  # true gradients: fine
    with pytest.raises(ValueError, match="dw .DepthwiseConv2D. has no feedback-alignment"):
        keras_local.from_keras(depthwise, rule="feedback-alignment")
    sigmoid = keras.Sequential([keras.Input((4,)), layers.Dense(4, activation="relu"),
                                layers.Dense(3, activation="sigmoid", name="out")])  # fmt: skip
    with pytest.raises(ValueError, match="out has activation 'sigmoid'"):
        keras_local.from_keras(sigmoid)
    softmax = keras.Sequential([keras.Input((4,)), layers.Dense(4, activation="relu"),
                                layers.Dense(3, activation="softmax", name="out")])  # fmt: skip
    _, report = keras_local.from_keras(softmax)
    assert report.output["dropped"] == ["out's softmax"]


@pytest.mark.backend
@pytest.mark.parametrize(
    "model_name, rule, learning_rate",
    [
        ("vgg", "feedback-alignment", 3e-3),
        ("vgg", "predsim", 3e-3),
        ("resnet", "backprop", 1e-2),
        ("mlp", "backprop", 3e-3),
    ],
)
def test_converted_model_trains_on_fashion_mnist(fashion_subset, model_name, rule, learning_rate):
    """The output layer's cross-entropy falls over three epochs of 8 steps
    (in training mode: Keras' BatchNormalization's running statistics,
    momentum 0.99, would take longer to follow)."""
    (x, y), _ = fashion_subset
    keras.utils.set_random_seed(0)
    model, _ = keras_local.from_keras(
        MODELS[model_name](), rule=rule, learning_rate=learning_rate
    )
    history = model.fit(x, y, batch_size=64, epochs=3, verbose=0).history
    assert history["output_loss"][-1] < history["output_loss"][0] - 0.05, history


@pytest.mark.backend
@pytest.mark.parametrize("model_name, rule", [("vgg", "feedback-alignment"), ("resnet", "predsim")])
def test_save_and_load_round_trip(tmp_path, fashion_subset, model_name, rule):
    (x, _), _ = fashion_subset
    keras.utils.set_random_seed(0)
    model, _ = keras_local.from_keras(MODELS[model_name](), rule=rule)
    path = tmp_path / "converted.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(b).__name__ for b in loaded.hidden_blocks] == ["KerasBlock"] * len(
        model.hidden_blocks
    )
    assert [b.feedback for b in loaded.hidden_blocks] == [b.feedback for b in model.hidden_blocks]
    np.testing.assert_allclose(
        loaded.predict(x[:16], verbose=0), model.predict(x[:16], verbose=0), rtol=1e-5, atol=1e-6
    )


def dense_bn():
    """A Dense, batch norm and ReLU: the batch norm's weights are kept, the
    Dense is swapped, in the same block."""
    return keras.Sequential(
        [keras.Input(SHAPE), layers.Flatten(name="flat"), layers.Dense(16, name="d1"),
         layers.BatchNormalization(name="bn1"), layers.ReLU(name="relu1"),
         layers.Dense(10, name="logits")],  # fmt: skip
        name="dense_bn",
    )


def conv_bn():
    return keras.Sequential(
        [keras.Input(SHAPE), layers.Conv2D(4, 3, strides=2, name="c1"),
         layers.BatchNormalization(name="bn1"), layers.ReLU(name="relu1"),
         layers.MaxPooling2D(name="pool1"), layers.Flatten(name="flat"),
         layers.Dense(10, name="logits")],  # fmt: skip
        name="conv_bn",
    )


@pytest.mark.backend
@pytest.mark.parametrize("make", [dense_bn, conv_bn], ids=["dense-bn", "conv-bn"])
def test_a_trained_feedback_model_with_batch_norm_reloads(tmp_path, fashion_subset, make):
    """After training, the optimizer's slots are restored into the variables
    they belong to: the swapped layer's variables come before the batch
    norm's in the converted block as in the reloaded one (they used to come
    after, and `load_model` failed on the slots' shapes)."""
    (x, y), _ = fashion_subset
    keras.utils.set_random_seed(0)
    model, _ = keras_local.from_keras(make(), rule="feedback-alignment")
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    path = tmp_path / "trained.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    block, reloaded = model.hidden_blocks[0], loaded.hidden_blocks[0]
    names = [v.path.split("/")[-2:] for v in block.trainable_variables]
    assert names == [v.path.split("/")[-2:] for v in reloaded.trainable_variables]
    assert names[0][-1] == "kernel" and names[2][-1] == "gamma"
    assert [layer.name for layer in block._layers] == [l.name for l in block.wrapped_layers]
    np.testing.assert_allclose(
        loaded.predict(x[:32], verbose=0), model.predict(x[:32], verbose=0), rtol=1e-5, atol=1e-6
    )
    slots, restored = model.optimizer.variables, loaded.optimizer.variables
    assert len(slots) == len(restored) and int(model.optimizer.iterations) == 4
    for old, new in zip(slots, restored):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(new), keras.ops.convert_to_numpy(old), err_msg=old.path
        )


def test_a_swap_keeps_trainable_regularizers_and_constraints(fashion_subset):
    """A frozen Dense stays as it was through training under feedback
    alignment; a regularized one adds its penalties to `model.losses` as
    under backprop; its constraints are the swapped layer's."""
    (x, y), _ = fashion_subset
    original = keras.Sequential(
        [keras.Input(SHAPE), layers.Flatten(name="flat"),
         layers.Dense(8, activation="relu", trainable=False, name="frozen"),
         layers.Dense(8, activation="relu", kernel_regularizer="l2", bias_regularizer="l1",
                      activity_regularizer="l2", kernel_constraint="non_neg",
                      bias_constraint=keras.constraints.MaxNorm(1.0), name="reg"),
         layers.Dense(10, name="logits")],  # fmt: skip
    )
    frozen = [w.copy() for w in original.get_layer("frozen").get_weights()]
    model, report = keras_local.from_keras(original, rule="feedback-alignment")
    assert [b["layers"] for b in report.blocks] == [["flat", "frozen"], ["reg"]]
    swapped = {l.name: l for l in model._flatten_layers() if hasattr(l, "feedback_kernel")}
    assert not swapped["frozen"].trainable and not swapped["frozen"].trainable_weights
    assert isinstance(swapped["reg"].kernel_constraint, keras.constraints.NonNeg)
    assert isinstance(swapped["reg"].bias.constraint, keras.constraints.MaxNorm)
    # The old Dense layers are no sublayers of the blocks any more.
    assert not any(type(l) is layers.Dense for b in model.hidden_blocks for l in b._layers)
    model(x[:4])
    backprop, _ = keras_local.from_keras(original, rule="backprop")
    backprop(x[:4])
    assert len(model.losses) == len(backprop.losses) == 3
    np.testing.assert_allclose(
        sum(float(v) for v in model.losses), sum(float(v) for v in backprop.losses), rtol=1e-5
    )
    model.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)
    for old, new in zip(frozen, [swapped["frozen"].kernel, swapped["frozen"].bias]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new), old)
    assert keras.ops.convert_to_numpy(swapped["reg"].kernel).min() >= 0  # non_neg applied
    with pytest.raises(ValueError, match="reg has a kernel_regularizer.*kolen-pollack"):
        keras_local.from_keras(original, rule="kolen-pollack")


def test_auto_split_keeps_normalization_and_pooling_after_an_activation():
    """A block ends after its nonlinearity and the normalization and pooling
    layers right after it; a batch norm before the activation is inside."""
    original = keras.Sequential(
        [keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu", name="c1"),
         layers.BatchNormalization(name="bn1"), layers.MaxPooling2D(name="pool1"),
         layers.Conv2D(4, 3, padding="same", name="c2"), layers.BatchNormalization(name="bn2"),
         layers.ReLU(name="relu2"), layers.LayerNormalization(name="ln2"),
         layers.Flatten(name="flat"), layers.Dense(3, name="logits")],  # fmt: skip
    )
    model, report = keras_local.from_keras(original, rule="predsim")
    assert [b["layers"] for b in report.blocks] == [
        ["c1", "bn1", "pool1"],
        ["c2", "bn2", "relu2", "ln2", "flat"],
    ]
    assert [b["features"] for b in report.blocks] == ["c1", "relu2"]
    assert [b.spec.activation for b in model.hidden_blocks] == ["relu", "relu"]
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(original(x)),
        rtol=1e-5, atol=2e-6,
    )  # fmt: skip


def test_a_nested_sequential_is_inlined():
    inner = keras.Sequential([layers.Dense(8, name="d1"), layers.ReLU(name="r1")], name="inner")
    original = keras.Sequential(
        [keras.Input((6,)), inner, layers.Dense(8, activation="tanh", name="d2"),
         layers.Dense(3, name="logits")],  # fmt: skip
    )
    model, report = keras_local.from_keras(original, rule="feedback-alignment")
    assert [b["layers"] for b in report.blocks] == [["d1", "r1"], ["d2"]]
    assert [s[1] for s in report.swaps] == ["d1", "d2", "logits"]
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(original(x)),
        rtol=1e-5, atol=2e-6,
    )  # fmt: skip

    class Inner(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.dense = layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    nested = keras.Sequential([keras.Input((6,)), Inner(), layers.Dense(3)])
    with pytest.raises(ValueError, match="subclassed .Inner. is a nested model.*flatten it"):
        keras_local.from_keras(nested, rule="feedback-alignment")


def test_a_lone_output_layer_says_a_hidden_layer_is_needed():
    alone = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="out")])
    with pytest.raises(ValueError, match="at least one hidden layer before the output Dense"):
        keras_local.from_keras(alone)
