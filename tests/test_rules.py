"""The rule registry and what each rule of the local-loss family sets."""

import importlib
import pkgutil

import numpy as np
import pytest

from keras_local import rules
from keras_local import zoo
from keras_local.layers import DenseBlock
from keras_local.rules import registry


def test_registry_names():
    assert rules.names() == [
        "associated",
        "backprop",
        "direct-feedback-alignment",
        "feedback-alignment",
        "kolen-pollack",
        "pred",
        "pred-bpf",
        "predsim",
        "predsim-bpf",
        "probes",
        "random-classifier",
        "rec-lra",
        "sign-symmetry",
        "sim",
        "sim-bpf",
    ]


def test_get_by_name_with_overrides_and_round_trip():
    rule = rules.get("predsim", beta=0.9, dim_in_decoder=None)
    assert isinstance(rule, rules.PredSim)
    assert rule.beta == 0.9 and rule.dim_in_decoder == 4096
    assert rules.get(rules.serialize(rule)) == rule
    assert rules.get(rule) is rule
    assert rules.get(rule, beta=0.5).beta == 0.5


@pytest.mark.parametrize(
    "name, activation, output_weight, output_init, detach",
    [
        ("backprop", "relu", 1.0, "torch", False),
        ("pred", "relu", 1.0, "zeros", True),
        ("sim", "leaky_relu", 1.0, "zeros", True),
        ("predsim", "leaky_relu", 0.01, "zeros", True),
        ("pred-bpf", "relu", 1.0, "zeros", True),
        ("sim-bpf", "leaky_relu", 1.0, "zeros", True),
        ("predsim-bpf", "leaky_relu", 0.99, "zeros", True),
        ("random-classifier", "relu", 1.0, "zeros", True),
        ("feedback-alignment", "relu", 1.0, "torch", False),
        ("direct-feedback-alignment", "relu", 1.0, "torch", True),
    ],
)
def test_rule_settings_follow_the_paper(name, activation, output_weight, output_init, detach):
    rule = rules.get(name)
    assert rule.default_activation == activation
    assert rule.output_loss_weight == pytest.approx(output_weight)
    assert rule.output_kernel_initializer == output_init
    assert rule.detach_blocks is detach


def test_objectives_carry_the_rules_heads():
    block = DenseBlock(8, name="block1")
    assert rules.get("backprop").make_objective(block, 10) is None
    pred = rules.get("pred").make_objective(block, 10)
    assert pred.loss_names == ("pred",) and pred.has_local_classifier
    sim = rules.get("sim").make_objective(block, 10)
    assert sim.loss_names == ("sim",) and not sim.has_local_classifier
    predsim = rules.get("predsim", beta=0.8).make_objective(block, 10)
    assert predsim.loss_names == ("pred", "sim")
    assert predsim.pred_weight == pytest.approx(0.2) and predsim.sim_weight == 0.8


def test_unknown_rule_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown rule 'predsimm'.*backprop, direct-feedback-alignment, .*, sim, sim-bpf\."):
        rules.get("predsimm")


def test_parameter_the_rule_does_not_take():
    with pytest.raises(ValueError, match=r"'pred' does not take beta; it takes dim_in_decoder"):
        rules.get("pred", beta=0.5)
    with pytest.raises(ValueError, match=r"'sim' does not take dim_in_decoder; it takes no parameters"):
        rules.get("sim", dim_in_decoder=1024)


def test_beta_out_of_range():
    with pytest.raises(ValueError, match="beta"):
        rules.get("predsim", beta=1.5)


def test_register_a_new_rule():
    @rules.register
    class Nothing(rules.Rule):
        name = "test-nothing"

    try:
        assert "test-nothing" in rules.names()
        assert isinstance(rules.get("test-nothing"), Nothing)
    finally:
        registry._REGISTRY.pop("test-nothing")


def test_every_named_rule_in_the_package_is_registered():
    # The decorator is the registration: every module of keras_local.rules is
    # imported by the package, so each named Rule in it is in the registry.
    found = set()
    for module in pkgutil.iter_modules(rules.__path__):
        namespace = vars(importlib.import_module(f"keras_local.rules.{module.name}"))
        found |= {
            value.name
            for value in namespace.values()
            if isinstance(value, type) and issubclass(value, rules.Rule) and value.name
        }
    assert found == set(rules.names())


def test_a_rule_in_one_new_definition_trains_in_a_zoo_model():
    # What a new rule file holds: an objective and a decorated Rule. Nothing
    # else is touched for a zoo builder to train with it.
    @rules.register
    class HalfPred(rules.Pred):
        name = "test-half-pred"

        @property
        def output_loss_weight(self):
            return 0.5

    try:
        model = zoo.mlp(rule="test-half-pred", units=16, layers=2, input_shape=(4, 4, 1))
        x = np.random.default_rng(0).normal(size=(8, 4, 4, 1)).astype("float32")
        logs = model.train_on_batch(x, np.arange(8) % 10, return_dict=True)
        assert isinstance(model.rule, HalfPred)
        assert np.isfinite(logs["loss"]) and "block1_pred_loss" in logs
    finally:
        registry._REGISTRY.pop("test-half-pred")
