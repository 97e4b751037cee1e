"""The block contract (what a block returns, declares and offers), the
renamed objectives' former names, and models saved under those names."""

import json
import zipfile

import keras
import numpy as np
import pytest

from keras_local import LocalModel
from keras_local import rules
from keras_local import zoo
from keras_local.layers import BlockOutput
from keras_local.layers import BlockSpec
from keras_local.layers import ConvBlock
from keras_local.layers import DenseBlock
from keras_local.layers import ResidualBlock
from keras_local.rules.base import FORMER_CLASSES
from keras_local.rules.base import LocalObjective

rng = np.random.default_rng(0)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


class ActivityBlock(DenseBlock):
    """A block whose own `call` does not say it honours `features_from`."""

    def call(self, inputs, training=None):
        return super().call(inputs, training=training)


@pytest.mark.parametrize(
    "block, shape, spec",
    [
        (DenseBlock(5, activation="tanh"), (2, 3, 3, 1), (5, False, "tanh")),
        (ConvBlock(4, pool_size=2), (2, 6, 6, 3), (4, True, "relu")),
        (ResidualBlock(6, strides=2, output_pooling="global_average"), (2, 6, 6, 3),
         (6, True, "relu")),  # fmt: skip
    ],
)
def test_every_block_returns_and_declares_the_contract(block, shape, spec):
    assert block.spec == BlockSpec(*spec, "activation", None, True)
    out = block(rng.normal(size=shape).astype("float32"))
    assert isinstance(out, BlockOutput)
    expected = block.compute_output_shape(shape)
    assert isinstance(expected, BlockOutput)
    assert tuple(out.features.shape) == expected.features
    assert tuple(out.outputs.shape) == expected.outputs
    symbolic = block(keras.KerasTensor((None, *shape[1:])))
    assert isinstance(symbolic, BlockOutput)


def test_a_block_grants_requests_before_it_is_built_only():
    block = DenseBlock(4)
    assert block.request_pre_activation() is True
    block.request_feedback("random")
    assert block.spec.features_from == "pre_activation" and block.spec.feedback == "random"
    assert block.get_config()["features_from"] == "pre_activation"
    with pytest.raises(ValueError, match="feedback must be one of"):
        block.request_feedback("transpose")
    built = DenseBlock(4)
    built.build((None, 3))
    with pytest.raises(ValueError, match="already built with true feedback; give feedback-al"):
        built.request_feedback("random", by="feedback-alignment")
    with pytest.raises(ValueError, match="already built returning its activation"):
        built.request_pre_activation()
    built.request_feedback(None)  # what it has already: nothing to change
    # A block whose `call` does not say it honours the request refuses it.
    activity = ActivityBlock(4)
    assert not activity.spec.offers_pre_activation
    assert activity.request_pre_activation() is False
    assert activity.features_from == "activation"


class RecordingBlock(DenseBlock):
    """Records what rules ask of it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    def request_feedback(self, feedback, by=None):
        self.requests.append(("feedback", feedback, by))
        super().request_feedback(feedback, by=by)

    def request_pre_activation(self, by=None):
        self.requests.append(("pre_activation", by))
        return super().request_pre_activation(by=by)


@pytest.mark.parametrize(
    "rule, requests",
    [
        ("feedback-alignment", [("feedback", "random", "feedback-alignment")]),
        ("rec-lra", [("pre_activation", "rec-lra")]),
        (rules.with_probes("rec-lra"), [("pre_activation", "rec-lra")]),
        ("predsim", []),
    ],
)
def test_rules_ask_blocks_through_the_contract(rule, requests):
    blocks = [RecordingBlock(4, name=f"block{i}") for i in (1, 2)]
    LocalModel(blocks, 3, rule=rule, input_shape=(5,))
    assert all(block.requests == requests for block in blocks)


def test_objectives_have_one_naming_scheme_and_their_former_names():
    former = {
        "LocalLossHeads": rules.LocalLossObjective,
        "BackpropFreeHeads": rules.BackpropFreeObjective,
        "RecLRATargets": rules.RecLRAObjective,
        "AssociatedComponent": rules.AssociatedObjective,
        "DirectFeedback": rules.DirectFeedbackObjective,
        "RandomClassifierHead": rules.RandomClassifierObjective,
    }
    for name, cls in former.items():
        assert getattr(rules, name) is cls
        assert cls.__name__.endswith("Objective")
        registered = keras.saving.get_registered_object(f"keras_local>{name}")
        assert registered is FORMER_CLASSES[cls] and registered.__name__ == name
        assert issubclass(registered, cls)
    assert rules.WeightedLossObjective.__name__ == "WeightedLossObjective"
    assert rules.local_losses.WeightedLossParts is rules.WeightedLossObjective


def test_has_classifier_is_the_former_name_of_has_local_classifier():
    class Former(LocalObjective):
        has_classifier = True

    class Current(LocalObjective):
        has_local_classifier = True

    assert Former().has_local_classifier and Former().has_classifier
    assert Current().has_classifier and not LocalObjective().has_classifier
    objective = LocalObjective()
    objective.has_classifier = True
    assert objective.has_local_classifier


def test_classifier_is_a_read_only_alias_of_the_output_layer():
    model = zoo.mlp(rule="pred", layers=1, units=4, num_classes=3, input_shape=(4,))
    assert model.classifier is model.output_layer is not None
    with pytest.raises(AttributeError):
        model.classifier = None
    assert model.example_shape == (4,)
    assert model.block_groups() == [[0]] and model.trained_groups() == [[0], [1]]


def written_before_the_rename(path, model):
    """`model` saved as a `.keras` file of before the objectives' rename:
    weights under the former class names, no `former_objective_names`."""
    model.use_former_objective_names()
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    assert config["config"].pop("former_objective_names") is True
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.parametrize("rule", ["predsim", "associated", "rec-lra", "random-classifier"])
def test_models_saved_under_the_former_names_load(tmp_path, rule):
    model = zoo.mlp(rule=rule, layers=2, units=8, num_classes=3, input_shape=(4, 4, 1))
    x = rng.normal(size=(6, 4, 4, 1)).astype("float32")
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
    path = str(tmp_path / "former.keras")
    written_before_the_rename(path, model)
    loaded = keras.saving.load_model(path)
    assert loaded.uses_former_objective_names
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(numpy(a), numpy(b), err_msg=a.path)
    np.testing.assert_allclose(numpy(loaded(x)), numpy(model(x)), rtol=1e-6, atol=1e-6)
    # Saved again, it keeps the former names; a new model does not use them.
    loaded.save(path)
    assert keras.saving.load_model(path).uses_former_objective_names
    fresh = zoo.mlp(rule=rule, layers=2, units=8, num_classes=3, input_shape=(4, 4, 1))
    fresh.save(path)
    assert not keras.saving.load_model(path).uses_former_objective_names


def test_the_readme_custom_block_trains_and_reloads(tmp_path):
    """The README's "Your own model" example, run as it stands there: a
    user's own layer is a block, trains under predsim on real data, and
    reloads; a feedback rule refuses it with a message naming the contract."""
    import math
    import pathlib

    from keras import ops

    import keras_local

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    code = next(b for b in readme.split("```python")[1:] if "class GatedBlock" in b)
    scope = {"math": math, "keras": keras, "ops": ops, "keras_local": keras_local,
             "BlockOutput": BlockOutput, "BlockSpec": BlockSpec}  # fmt: skip
    exec(code.split("```")[0], scope)
    model = scope["model"]  # compiled there, as a user's would be
    (x, y), _ = keras_local.data.load("fashion_mnist")
    history = model.fit(x[:1024], y[:1024], batch_size=128, epochs=2, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    path = str(tmp_path / "gated.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.hidden_blocks[0]).__name__ == "GatedBlock"
    np.testing.assert_allclose(loaded.predict(x[:64], verbose=0), model.predict(x[:64], verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="GatedBlock"):
        LocalModel([scope["GatedBlock"](8)], 10, rule="feedback-alignment")
