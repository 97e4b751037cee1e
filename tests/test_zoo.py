"""Zoo builders: parameter counts of the reference, architecture details,
rule composition and bad input."""

import keras
import numpy as np
import pytest

from keras_local import zoo

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


def test_beta_and_dim_in_decoder_reach_the_heads():
    model = zoo.vgg8b(rule="predsim", beta=0.9, dim_in_decoder=1024, input_shape=(28, 28, 1))
    assert model.rule.beta == 0.9
    head = model.objectives[0].prediction_head
    assert head.decoder_input_dim == 1024 and head.pool_size == (16, 8)


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet9'.*mlp, vgg11b, vgg8b"):
        zoo.get("resnet9")


def test_rule_parameter_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="does not take beta"):
        zoo.mlp(rule="pred", beta=0.5)


def test_wrong_input_rank_for_conv_models():
    with pytest.raises(ValueError, match=r"rank 4 \(batch, height, width, channels\)"):
        zoo.vgg8b(input_shape=(28, 28))
