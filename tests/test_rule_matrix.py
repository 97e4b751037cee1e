"""Every rule builds and takes a training step on every zoo model (tiny
inputs, narrow widths): rules and models compose without per-pair code."""

import keras
import numpy as np
import pytest

from keras_local import rules
from keras_local import zoo

# Narrow versions of every builder, on inputs just big enough for its pools.
MODELS = {
    "mlp": dict(units=16, input_shape=(8, 8, 1)),
    "vgg8b": dict(width=1 / 32, fc_units=16, input_shape=(16, 16, 1)),
    "vgg11b": dict(width=1 / 32, fc_units=16, input_shape=(16, 16, 3)),
    "mostafa_mlp": dict(units=16, input_shape=(8, 8, 1)),
    "mostafa_cnn5": dict(width=1 / 16, fc_units=16, input_shape=(8, 8, 3)),
    "mostafa_cnn10": dict(width=1 / 32, input_shape=(32, 32, 3)),
    "resnet20": dict(width=1 / 4, input_shape=(8, 8, 3)),
    "resnet32": dict(width=1 / 4, input_shape=(8, 8, 3)),
    "resnet18": dict(width=1 / 16, input_shape=(8, 8, 3)),
    "presnet18": dict(width=1 / 16, input_shape=(8, 8, 3)),
    "al_mlp": dict(units=16, input_shape=(8, 8, 1)),
    "al_cnn": dict(width=1 / 8, code_units=8, input_shape=(8, 8, 1)),
    "lra_mlp": dict(units=16, input_shape=(8, 8, 1)),
}

#: The builders with convolutions, which take `conv="perturbative"`.
CONV_MODELS = [
    "vgg8b", "vgg11b", "mostafa_cnn5", "mostafa_cnn10",
    "resnet20", "resnet32", "resnet18", "al_cnn",
]


def test_the_matrix_covers_every_model():
    assert sorted(MODELS) == zoo.names()


def steps(model_name, rule, **kwargs):
    """Two eager training steps on a tiny batch; checks the logs, that most
    variables moved and the prediction's shape."""
    model = zoo.get(model_name)(rule=rule, num_classes=4, **MODELS[model_name], **kwargs)
    # Eager: one step on a tiny model is faster than compiling it.
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8), run_eagerly=True)
    x = np.random.default_rng(0).normal(size=(4, *MODELS[model_name]["input_shape"])).astype("float32")
    y = np.array([0, 1, 2, 3])
    before = [np.array(v) for v in model.trainable_variables]
    # Two steps: zero-initialised local classifiers pass no error to their
    # block until their first update.
    model.train_on_batch(x, y)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and 0.0 <= logs["accuracy"] <= 1.0
    changed = sum(not np.allclose(np.array(v), b) for v, b in zip(model.trainable_variables, before))
    assert changed > len(before) // 2, f"{changed} of {len(before)} variables moved"
    assert model.predict(x, verbose=0).shape == (4, 4)
    return model


#: Models whose blocks repeat another model's kinds (dense blocks as in
#: `mlp`, conv blocks as in `vgg8b`): each steps under backprop and its own
#: papers' rules only, to keep the matrix affordable on 2 CPU cores.
REPEATED_KINDS = {
    "vgg11b": ["backprop", "predsim"],
    "mostafa_mlp": ["backprop", "random-classifier"],
    "al_mlp": ["backprop", "associated"],
    "lra_mlp": ["backprop", "rec-lra"],
}

#: Rules whose feedbacks perturbative convolutions do not take (sign-
#: concordant, Kolen-Pollack): presnet18, perturbative throughout, refuses them.
NOT_PERTURBATIVE = ["kolen-pollack", "sign-symmetry"]

MATRIX = [
    (rule, model_name)
    for model_name in sorted(MODELS)
    for rule in REPEATED_KINDS.get(model_name, rules.names())
    if not (model_name == "presnet18" and rule in NOT_PERTURBATIVE)
]


def test_the_reduced_rows_use_registered_rules():
    assert all(r in rules.names() for names in REPEATED_KINDS.values() for r in names)


@pytest.mark.parametrize("rule, model_name", MATRIX)
def test_every_rule_steps_on_every_model(rule, model_name):
    steps(model_name, rule)


@pytest.mark.parametrize("rule", NOT_PERTURBATIVE)
def test_perturbative_models_refuse_feedbacks_they_cannot_send(rule):
    with pytest.raises(ValueError, match=f"perturbative convolutions take .*asked by {rule}"):
        zoo.get("presnet18")(rule=rule, num_classes=4, **MODELS["presnet18"])


@pytest.mark.parametrize("model_name", CONV_MODELS)
def test_every_conv_model_takes_perturbative_convolutions(model_name):
    # Feedback alignment: the perturbative layers' own random feedback and
    # a global backward pass through every block.
    model = steps(model_name, "feedback-alignment", conv="perturbative")
    convs = [b for b in model.hidden_blocks if hasattr(b, "filters")]
    # Every conv block but a ResNet's stem (an ordinary convolution).
    expected = convs[1:] if model_name.startswith("resnet") else convs
    assert expected and all(b.conv == "perturbative" for b in expected)
    assert all(b.conv == "standard" for b in convs if b not in expected)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_conv_is_an_argument_of_exactly_the_conv_builders(model_name):
    builder = zoo.get(model_name)
    if model_name in CONV_MODELS or model_name == "presnet18":
        # Unbuilt (no input shape): only the blocks are made.
        model = builder(rule="backprop", conv="perturbative")
        assert any(getattr(b, "conv", None) == "perturbative" for b in model.hidden_blocks)
    else:
        with pytest.raises(TypeError, match="conv"):
            builder(rule="backprop", conv="perturbative")
