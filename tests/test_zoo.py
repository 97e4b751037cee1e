"""Zoo builders: parameter counts of the reference, architecture details,
rule composition and bad input."""

import dataclasses
import inspect
import math

import keras
import numpy as np
import pytest

from keras_local import rules
from keras_local import zoo
from keras_local.layers import ConvBlock
from keras_local.layers import DenseBlock
from keras_local.zoo.options import build_model
from keras_local.zoo.stacks import dense_stack

# Inference-network parameter counts of the reference README (millions).
REFERENCE_COUNTS = [
    ("vgg8b", dict(input_shape=(32, 32, 3)), 8.90),
    ("vgg11b", dict(input_shape=(32, 32, 3)), 11.56),
    ("vgg11b", dict(input_shape=(32, 32, 3), width=2), 41.98),
    ("vgg8b", dict(input_shape=(28, 28, 1)), 7.33),
    ("mlp", dict(input_shape=(28, 28, 1)), 2.92),
    ("vgg8b", dict(input_shape=(96, 96, 3)), 11.54),
    ("vgg8b", dict(input_shape=(32, 32, 3), num_classes=100), 9.00),
]


@pytest.mark.parametrize("name, kwargs, millions", REFERENCE_COUNTS)
def test_inference_parameter_counts(name, kwargs, millions):
    model = zoo.get(name)(rule="predsim", **kwargs)
    assert round(model.count_inference_params() / 1e6, 2) == millions
    # The local heads are extra, training-only parameters.
    assert model.count_params() > model.count_inference_params()


def test_backprop_has_no_heads():
    model = zoo.mlp(rule="backprop", input_shape=(28, 28, 1))
    assert model.count_params() == model.count_inference_params() + sum(
        np.prod(v.shape) for v in model.non_trainable_weights
    )


def test_large_inputs_get_the_7x7_stride_2_stem():
    small = zoo.vgg8b(input_shape=(32, 32, 3))
    large = zoo.vgg8b(input_shape=(96, 96, 3))
    assert small.hidden_blocks[0].kernel_layer.kernel.shape == (3, 3, 3, 128)
    stem = large.hidden_blocks[0].kernel_layer.layers[-1]
    assert stem.kernel.shape == (7, 7, 3, 128) and stem.strides == (2, 2)
    features, _ = large.hidden_blocks[0].compute_output_shape((None, 96, 96, 3))
    assert features[1:3] == (48, 48)


def test_vgg8b_layout():
    model = zoo.vgg8b(input_shape=(32, 32, 3), width=2)
    filters = [getattr(b, "filters", None) for b in model.hidden_blocks]
    pools = [getattr(b, "pool_size", None) for b in model.hidden_blocks]
    assert filters == [256, 512, 512, 1024, 1024, 1024, None]
    assert pools == [None, 2, None, 2, 2, 2, None]
    assert model.hidden_blocks[-1].units == 1024  # the dense width is not multiplied


@pytest.mark.parametrize("rule, activation", [("backprop", "relu"), ("pred", "relu"), ("sim", "leaky_relu"), ("predsim", "leaky_relu")])
def test_activation_follows_the_rule_unless_given(rule, activation):
    assert zoo.mlp(rule=rule).hidden_blocks[0].activation == activation
    assert zoo.mlp(rule=rule, activation="tanh").hidden_blocks[0].activation == "tanh"


def test_builders_compile_adam_with_the_papers_settings():
    model = zoo.vgg8b(learning_rate=3e-4, dropout=0.1)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer.epsilon == 1e-8
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert all(block.dropout == 0.1 for block in model.hidden_blocks)


def test_rule_options_reach_the_heads():
    options = {"beta": 0.9, "dim_in_decoder": 1024}
    for rule in (
        dict(rule="predsim", rule_options=options),
        dict(rule={"name": "predsim", "config": options}),
        dict(rule=rules.get("predsim", **options)),
    ):
        model = zoo.vgg8b(**rule, input_shape=(28, 28, 1))
        assert model.rule.beta == 0.9
        head = model.objectives[0].prediction_head
        assert head.decoder_input_dim == 1024 and head.pool_size == (16, 8)


def test_rule_parameters_are_not_builder_arguments():
    for name in ("beta", "dim_in_decoder"):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'.*rule_options"):
            zoo.vgg8b(rule="predsim", **{name: 0.9})


def test_every_builder_takes_the_common_options_last():
    common = [field.name for field in dataclasses.fields(zoo.BuildOptions)]
    for builder in [*map(zoo.get, zoo.names()), zoo.vgg, zoo.resnet]:
        parameters = inspect.signature(builder).parameters
        assert list(parameters)[-len(common):] == common, builder.__name__
        assert parameters["name"].default == builder.__name__
    assert inspect.signature(zoo.al_mlp).parameters["learning_rate"].default == 1e-4
    assert inspect.signature(zoo.mlp).parameters["units"].default == 1024


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"Unknown model 'resnet9'.*al_cnn, al_mlp, lra_mlp, mlp, mostafa_cnn10, "
        r"mostafa_cnn5, mostafa_mlp, presnet18, resnet18, resnet20, resnet32, vgg11b, vgg8b",
    ):
        zoo.get("resnet9")


def test_rule_parameter_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="does not take beta"):
        zoo.mlp(rule="pred", rule_options={"beta": 0.5})


def test_wrong_input_rank_for_conv_models():
    with pytest.raises(ValueError, match=r"rank 4 \(batch, height, width, channels\)"):
        zoo.vgg8b(input_shape=(28, 28))


# --------------------------------------------- Mostafa, Ramesh & Cauwenberghs 2018
# Figure 6 of the paper: |P| (weights, no biases, batch norm or output layer)
# and |A| (activations per example: the outputs of the hidden layers, after
# pooling where a layer pools).
MOSTAFA_NETWORKS = [
    ("mostafa_mlp", (28, 28, 1), 2_784_000, 3_000),
    ("mostafa_cnn5", (32, 32, 3), 13_716_512, 40_960),
    ("mostafa_cnn10", (32, 32, 3), 9_402_048, 156_160),
]


def hidden_kernel_count(model):
    """The weights of the hidden blocks' kernels (not biases, not BatchNorm)."""
    return sum(
        math.prod(v.shape)
        for block in model.hidden_blocks
        for v in block.trainable_weights
        if v.path.endswith("kernel")
    )


@pytest.mark.parametrize("name", ["mostafa_mlp", "mostafa_cnn5", "mostafa_cnn10"])
def test_mostafa_builders_are_registered(name):
    assert name in zoo.names()
    assert zoo.get(name) is getattr(zoo, name)


@pytest.mark.parametrize("name, input_shape, weights, activations", MOSTAFA_NETWORKS)
def test_mostafa_networks_match_the_papers_counts(name, input_shape, weights, activations):
    model = zoo.get(name)(rule="backprop", input_shape=input_shape)
    assert hidden_kernel_count(model) == weights
    # Run the blocks on a real batch: the actual pooled sizes, not the declared ones.
    x = keras.ops.ones((2, *input_shape))
    total = 0
    for block in model.hidden_blocks:
        _, x = block(x)
        total += math.prod(x.shape[1:])
    assert total == activations
    assert model(keras.ops.ones((2, *input_shape))).shape == (2, 10)


def test_mostafa_cnn5_pools_3x3_stride_2_to_16_8_4():
    model = zoo.mostafa_cnn5(rule="pred", input_shape=(32, 32, 3))
    convs, fcs = model.hidden_blocks[:3], model.hidden_blocks[3:]
    assert [b.kernel_layer.kernel.shape for b in convs] == [
        (5, 5, 3, 96), (5, 5, 96, 128), (5, 5, 128, 256)
    ]
    assert all((b.pool_size, b.pool_strides, b.pool_padding) == (3, 2, "same") for b in convs)
    assert [b.units for b in fcs] == [2048, 2048]
    assert all(b.batch_norm and b.activation == "relu" for b in model.hidden_blocks)
    x = keras.ops.ones((2, 32, 32, 3))
    sizes = []
    for block in convs:
        declared = block.compute_output_shape(tuple(x.shape))[1]
        _, x = block(x)
        assert declared == tuple(x.shape)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(16, 16, 96), (8, 8, 128), (4, 4, 256)]


def test_mostafa_mlp_has_no_batch_norm_unless_asked():
    model = zoo.mostafa_mlp(rule="pred", input_shape=(28, 28, 1))
    assert [b.units for b in model.hidden_blocks] == [1000, 1000, 1000]
    assert not any(b.batch_norm for b in model.hidden_blocks)
    assert all(b.activation == "relu" for b in model.hidden_blocks)
    normed = zoo.mostafa_mlp(rule="pred", input_shape=(28, 28, 1), batch_norm=True)
    assert all(b.batch_norm for b in normed.hidden_blocks)
    assert model(keras.ops.ones((3, 28, 28, 1))).shape == (3, 10)


def test_mostafa_cnn10_layout():
    model = zoo.mostafa_cnn10(rule="predsim", input_shape=(32, 32, 3), num_classes=100)
    assert [b.filters for b in model.hidden_blocks] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert [b.pool_size for b in model.hidden_blocks] == [None, 2] * 5
    assert all(b.kernel_layer.kernel.shape[:2] == (3, 3) for b in model.hidden_blocks)
    # ReLU, the paper's, even under a rule whose default is leaky ReLU.
    assert all(b.activation == "relu" and b.batch_norm for b in model.hidden_blocks)
    assert model(keras.ops.ones((2, 32, 32, 3))).shape == (2, 100)


def test_mostafa_cnn5_input_dropout_is_a_training_only_augmentation():
    assert zoo.mostafa_cnn5(rule="pred", width=0.25, fc_units=16).augmentation is None
    model = zoo.mostafa_cnn5(
        rule="pred", input_shape=(32, 32, 3), width=0.25, fc_units=16,
        dropout=0.2, input_dropout=0.5,
    )
    assert isinstance(model.augmentation, keras.layers.Dropout)
    assert model.augmentation.rate == 0.5
    x = np.ones((4, 32, 32, 3), "float32")
    dropped = keras.ops.convert_to_numpy(model.augment(x))
    assert set(np.unique(dropped)) == {0.0, 2.0}  # inverted dropout at rate 0.5
    # Inference never sees it.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(model(x))
    )
    # One training step through the augmentation slot (without XLA: faster to build).
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    logs = model.train_on_batch(x, np.array([0, 1, 2, 3]), return_dict=True)
    assert np.isfinite(logs["loss"])


def test_mostafa_cnn5_chains_augmentation_then_input_dropout():
    flip = keras.layers.RandomFlip("horizontal", name="flip")
    model = zoo.mostafa_cnn5(
        rule="backprop", input_shape=(32, 32, 3), width=0.25, fc_units=16,
        augmentation=flip, input_dropout=0.1,
    )
    assert isinstance(model.augmentation, keras.Sequential)
    assert [type(layer) for layer in model.augmentation.layers] == [
        keras.layers.RandomFlip, keras.layers.Dropout
    ]
    assert model.augment(np.ones((2, 32, 32, 3), "float32")).shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match=r"input_dropout must be in \[0, 1\)"):
        zoo.mostafa_cnn5(rule="backprop", input_dropout=1.0)


def test_conv_block_pool_strides_and_padding():
    x = keras.ops.ones((2, 9, 9, 3))
    cases = [
        (dict(pool_size=2), (4, 4)),  # the default: stride = pool_size, valid
        (dict(pool_size=3, pool_strides=2), (4, 4)),  # (9 - 3) // 2 + 1
        (dict(pool_size=3, pool_strides=2, pool_padding="same"), (5, 5)),  # ceil(9 / 2)
        (dict(pool_size=3, pool_strides=1, pool_padding="same"), (9, 9)),
    ]
    for kwargs, size in cases:
        block = ConvBlock(4, **kwargs)
        features, outputs = block(x)
        assert outputs.shape[1:3] == size, kwargs
        assert block.compute_output_shape(x.shape)[1] == tuple(outputs.shape), kwargs


def test_conv_block_rejects_bad_pooling_arguments():
    with pytest.raises(ValueError, match=r"pool_padding must be one of 'valid', 'same'; got 'SAME'"):
        ConvBlock(4, pool_size=2, pool_padding="SAME")
    with pytest.raises(ValueError, match=r"pool_padding must be one of .*got 'full'"):
        ConvBlock(4, pool_size=2, pool_padding="full")
    with pytest.raises(ValueError, match="pool_strides must be a positive integer or None, got 0"):
        ConvBlock(4, pool_size=2, pool_strides=0)
    with pytest.raises(ValueError, match="pool_size must be a positive integer or None, got 2.5"):
        ConvBlock(4, pool_size=2.5)
    with pytest.raises(ValueError, match="pool_strides=2 was given without pool_size"):
        ConvBlock(4, pool_strides=2)


def test_conv_block_pooling_round_trips_through_its_config():
    block = ConvBlock(8, kernel_size=5, pool_size=3, pool_strides=2, pool_padding="same", name="b")
    config = block.get_config()
    assert (config["pool_size"], config["pool_strides"], config["pool_padding"]) == (3, 2, "same")
    clone = ConvBlock.from_config(config)
    assert (clone.pool_size, clone.pool_strides, clone.pool_padding) == (3, 2, "same")
    assert clone.get_config() == config
    x = keras.ops.ones((2, 32, 32, 3))
    assert clone(x)[1].shape == block(x)[1].shape == (2, 16, 16, 8)
    # Through Keras' own (de)serialisation too, as in saved models.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
    assert isinstance(restored, ConvBlock) and restored.get_config() == config
    # Configs saved before these arguments existed load with the old behaviour.
    old = {k: v for k, v in config.items() if k not in ("pool_strides", "pool_padding")}
    legacy = ConvBlock.from_config(old)
    assert (legacy.pool_strides, legacy.pool_padding) == (None, "valid")
    assert legacy(x)[1].shape == (2, 10, 10, 8)  # (32 - 3) // 3 + 1


# ------------------------------------------------------------------ groups
def test_builder_groups():
    """The groups of rules that train groups (associated learning)."""
    cases = [
        (zoo.mlp(rule="backprop"), [1, 1, 1]),
        # Kao & Chen's VGG_AL groups: conv128+conv256+pool, conv256+conv512+pool,
        # conv512+pool+conv512+pool, the dense block.
        (zoo.vgg8b(rule="backprop"), [2, 2, 2, 1]),
        (zoo.vgg11b(rule="backprop"), [4, 2, 3, 1]),
        (zoo.vgg8b(rule="backprop", fc_layers=2), [2, 2, 2, 1, 1]),
        (zoo.vgg8b(rule="backprop", conv_groups=(1,) * 6), [1] * 7),
        # A plain `vgg` config: one group per pooled stage.
        (zoo.vgg((8, "M", 8, 8, "M", 16), rule="backprop"), [1, 2, 1, 1]),
        (zoo.mostafa_mlp(rule="backprop"), [1, 1, 1]),
        (zoo.mostafa_cnn5(rule="backprop"), [1] * 5),
        (zoo.mostafa_cnn10(rule="backprop"), [2] * 5),
        (zoo.lra_mlp(rule="backprop"), [1] * 5),
    ]
    for model, groups in cases:
        assert model.groups == groups, model.name
    with pytest.raises(ValueError, match="conv_groups must add up to the 6 conv blocks"):
        zoo.vgg8b(rule="backprop", conv_groups=(2, 2))


def test_associated_learning_trains_the_builders_groups():
    model = zoo.vgg8b(rule="associated", width=1 / 32, fc_units=16, input_shape=(16, 16, 1))
    assert model.block_groups() == [[0, 1], [2, 3], [4, 5], [6]]
    assert [o is not None for o in model.objectives] == [False, True] * 3 + [True]
    assert model.output_layer is None


# ---------------------------------------------- architecture rule defaults
@pytest.fixture
def toy_mlp():
    """A builder registered by the test (architecture defaults of two rule
    parameters), unregistered after it."""

    @zoo.register(
        "toy_mlp", rule="associated", rule_defaults={"code_units": 6, "target_dim": 64}
    )
    def toy_mlp(layers=2, units=8, *, options):
        """Two small dense blocks."""
        blocks = dense_stack([int(units * options.width)] * layers, options)
        return build_model(blocks, options)

    yield toy_mlp
    zoo.unregister("toy_mlp")
    assert "toy_mlp" not in zoo.names()


def test_a_model_registered_in_one_file_is_a_zoo_model(toy_mlp):
    assert "toy_mlp" in zoo.names() and zoo.get("toy_mlp") is toy_mlp
    assert list(inspect.signature(toy_mlp).parameters)[:3] == ["layers", "units", "rule"]
    assert zoo.resolve_rule("toy_mlp").code_units == 6
    assert zoo.resolve_rule("toy_mlp", "associated", {"code_units": 4}).code_units == 4
    model = toy_mlp(units=8, input_shape=(4, 4, 1), num_classes=3, learning_rate=1e-3)
    assert model.name == "toy_mlp" and model.rule == zoo.resolve_rule("toy_mlp")
    assert [b.units for b in model.hidden_blocks] == [8, 8]
    assert all(b.activation == model.rule.default_activation for b in model.hidden_blocks)
    x = np.random.default_rng(0).normal(size=(32, 4, 4, 1)).astype("float32")
    history = model.fit(x, np.arange(32) % 3, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_architecture_defaults_apply_only_to_rules_that_take_them(toy_mlp):
    # `target_dim` as an architecture default: pred-bpf takes it, backprop
    # and predsim do not (and are built as without it).
    assert zoo.resolve_rule("toy_mlp", "pred-bpf").target_dim == 64
    assert zoo.resolve_rule("toy_mlp", "backprop") == rules.get("backprop")
    assert zoo.resolve_rule("toy_mlp", "predsim", {"beta": 0.9}) == rules.get(
        "predsim", beta=0.9
    )
    assert toy_mlp(rule="pred-bpf").rule.target_dim == 64
    # The caller's own rule parameters still apply (over the architecture's
    # defaults and a dict's config), and still fail loudly for a rule that
    # does not take them.
    assert zoo.resolve_rule("toy_mlp", "predsim-bpf", {"beta": 0.5}).beta == 0.5
    assert zoo.resolve_rule("toy_mlp", "pred-bpf", {"target_dim": 8}).target_dim == 8
    given = {"name": "pred-bpf", "config": {"target_dim": 16}}
    assert zoo.resolve_rule("toy_mlp", given).target_dim == 16
    assert zoo.resolve_rule("toy_mlp", given, {"target_dim": 8}).target_dim == 8
    assert toy_mlp(rule=given, rule_options={"target_dim": 8}).rule.target_dim == 8
    with pytest.raises(ValueError, match="does not take beta"):
        zoo.resolve_rule("toy_mlp", "pred", {"beta": 0.5})
    with pytest.raises(ValueError, match="does not take beta"):
        toy_mlp(rule="pred", rule_options={"beta": 0.5})
    # A Rule instance (or a serialised rule) keeps its own values; only the
    # caller's options override them.
    own = rules.get("pred-bpf", target_dim=32)
    assert zoo.resolve_rule("toy_mlp", own) is own
    assert toy_mlp(rule=own).rule is own
    assert zoo.resolve_rule("toy_mlp", rules.serialize(own)).target_dim == 32
    assert zoo.resolve_rule("toy_mlp", own, {"target_dim": 8}).target_dim == 8
    with pytest.raises(ValueError, match="Unknown rule 'nope'"):
        zoo.resolve_rule("toy_mlp", "nope")


@pytest.mark.parametrize(
    "builder, code_units",
    [(zoo.al_mlp, 1024), (zoo.al_cnn, 256), (zoo.vgg8b, 300), (zoo.resnet20, 300)],
)
def test_associated_code_width_per_architecture(builder, code_units):
    assert builder(rule="associated").rule.code_units == code_units
    # Given as an instance, the rule keeps its own width.
    rule = rules.get("associated", code_units=12)
    assert builder(rule=rule).rule.code_units == 12


def test_resolve_rule_is_the_builders_rule():
    """`resolve_rule` gives the rule each builder uses: the architecture's
    defaults where the user set nothing, the user's options otherwise."""
    for name, code_units in [("al_mlp", 1024), ("al_cnn", 256), ("vgg11b", 300), ("resnet18", 300)]:
        assert zoo.resolve_rule(name, "associated").code_units == code_units
        assert zoo.resolve_rule(name, "associated", {"code_units": 64}).code_units == 64
        assert zoo.resolve_rule(
            name, {"name": "associated", "config": {"code_units": 64}}
        ).code_units == 64
    assert zoo.resolve_rule("al_mlp").name == "associated"
    assert zoo.resolve_rule("al_mlp", "associated", units=64, width=0.5).code_units == 32
    assert zoo.resolve_rule("al_cnn", "associated", code_units=16).code_units == 16
    assert zoo.resolve_rule("mlp", "predsim", {"beta": 0.5}) == rules.get("predsim", beta=0.5)
    assert zoo.resolve_rule("mlp", "predsim", {"beta": 0.5}, learning_rate=1.0).beta == 0.5
    # Rule parameters are options, not builder arguments.
    with pytest.raises(TypeError, match="takes no argument beta; rule parameters go in"):
        zoo.resolve_rule("mlp", "predsim", beta=0.5)
    assert zoo.resolve_rule(zoo.vgg, "associated").code_units == 300
    own = rules.get("associated", code_units=12)
    assert zoo.resolve_rule("al_mlp", own) is own
    with pytest.raises(ValueError, match="does not take code_units"):
        zoo.resolve_rule("al_mlp", "backprop", {"code_units": 64})
    with pytest.raises(ValueError, match="Unknown model"):
        zoo.resolve_rule("nope", "backprop")


# ------------------------------------------------- Kao & Chen's MNIST nets
def test_al_mlp_layers_and_parameters_match_across_rules():
    al = zoo.al_mlp(rule="associated", input_shape=(28, 28, 1))
    bp = zoo.al_mlp(rule="backprop", input_shape=(28, 28, 1))
    assert [b.units for b in al.hidden_blocks] == [1024, 1024]
    assert al.groups == [1, 1] and al.output_layer is None
    assert all(b.activation == "elu" and not b.batch_norm for b in al.hidden_blocks)
    # The network other rules train: the paper's 1024, 1024, 5120, 1024, 1024, 10.
    assert [b.units for b in bp.hidden_blocks] == [1024, 1024, 5120, 1024, 1024]
    assert bp.groups == [1] * 5 and bp.output_layer is not None
    assert all(b.activation == "relu" and not b.batch_norm for b in bp.hidden_blocks)
    dense = lambda i, o: i * o + o  # noqa: E731
    expected = (
        dense(784, 1024) + dense(1024, 1024) + dense(1024, 5120) + dense(5120, 1024)
        + dense(1024, 1024) + dense(1024, 10)
    )
    print(f"al_mlp: associated {al.count_inference_params():,}, "
          f"backprop {bp.count_inference_params():,} (expected {expected:,})")
    assert bp.count_inference_params() == expected == 13_405_194
    # f_1, f_2 + the last bridge (1024 -> 5120 -> 1024) + h_2, h_1: the same.
    assert al.count_inference_params() == expected
    # Other rules with an output layer get the same network as backprop.
    assert [b.units for b in zoo.al_mlp(rule="predsim").hidden_blocks] == [
        1024, 1024, 5120, 1024, 1024
    ]


def test_al_mlp_code_width_follows_units():
    model = zoo.al_mlp(rule="backprop", units=64, layers=3)
    assert [b.units for b in model.hidden_blocks] == [64] * 3 + [320, 64, 64, 64]
    model = zoo.al_mlp(rule="backprop", units=64, code_units=16)
    assert [b.units for b in model.hidden_blocks] == [64, 64, 80, 16, 16]
    assert zoo.al_mlp(rule="associated", units=64).rule.code_units == 64


def test_al_cnn_layers_and_parameters_match_across_rules():
    al = zoo.al_cnn(rule="associated", input_shape=(28, 28, 1))
    bp = zoo.al_cnn(rule="backprop", input_shape=(28, 28, 1))
    convs = [32] * 4 + [64] * 4
    assert [b.filters for b in al.hidden_blocks] == convs
    assert al.groups == [2, 2, 2, 2] and al.output_layer is None
    assert [getattr(b, "filters", None) or b.units for b in bp.hidden_blocks] == (
        convs + [1280, 256, 256, 256, 256]
    )
    assert bp.groups == [2, 2, 2, 2, 1, 1, 1, 1, 1]
    # Downsampling by the 4th and 8th convolutions (stride 2): 28 -> 14 -> 7.
    assert [b.strides for b in bp.hidden_blocks[:8]] == [1, 1, 1, 2, 1, 1, 1, 2]
    x = keras.ops.ones((1, 28, 28, 1))
    for block in bp.hidden_blocks[:8]:
        _, x = block(x)
    assert x.shape == (1, 7, 7, 64)
    conv = lambda i, o: 9 * i * o + o  # noqa: E731
    dense = lambda i, o: i * o + o  # noqa: E731
    expected = (
        conv(1, 32) + 3 * conv(32, 32) + conv(32, 64) + 3 * conv(64, 64)
        + dense(7 * 7 * 64, 1280) + dense(1280, 256) + 3 * dense(256, 256) + dense(256, 10)
    )
    print(f"al_cnn: associated {al.count_inference_params():,}, "
          f"backprop {bp.count_inference_params():,} (expected {expected:,})")
    assert bp.count_inference_params() == expected == al.count_inference_params()
    pooled = zoo.al_cnn(rule="backprop", downsample="pool", input_shape=(28, 28, 1))
    assert [b.pool_size for b in pooled.hidden_blocks[:8]] == [None] * 3 + [2] + [None] * 3 + [2]
    assert pooled.count_inference_params() == expected
    with pytest.raises(ValueError, match="downsample must be 'stride' or 'pool'"):
        zoo.al_cnn(rule="backprop", downsample="avg")


def test_paper_rules_are_the_defaults():
    assert zoo.al_mlp().rule.name == "associated"
    assert zoo.al_cnn().rule.name == "associated"
    assert zoo.lra_mlp().rule.name == "rec-lra"


def test_lra_mlp_layout():
    model = zoo.lra_mlp(rule="backprop", input_shape=(28, 28, 1))
    assert [b.units for b in model.hidden_blocks] == [256] * 5
    assert all(isinstance(b, DenseBlock) and not b.batch_norm for b in model.hidden_blocks)
    assert all(b.activation == "relu" for b in model.hidden_blocks)  # backprop's default
    assert zoo.lra_mlp(rule="rec-lra").hidden_blocks[0].activation == "tanh"


@pytest.mark.backend
def test_xla_everywhere_but_for_convolutions_on_tensorflows_cpu():
    """On TensorFlow's CPU path its oneDNN convolutions beat XLA's (VGG8B's
    step about 0.8x the time without XLA), while XLA halves an MLP's step;
    JAX always compiles with XLA (torch runs eagerly whatever is asked)."""
    vgg = zoo.vgg8b(width=0.125, input_shape=(28, 28, 1))
    mlp = zoo.mlp(width=0.0625, input_shape=(28, 28, 1))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        on_gpu = bool(tf.config.list_physical_devices("GPU"))
        assert (vgg.jit_compile, mlp.jit_compile) == (on_gpu, True)
    elif backend == "jax":
        assert (vgg.jit_compile, mlp.jit_compile) == (True, True)
    else:
        assert (vgg.jit_compile, mlp.jit_compile) == (False, False)
