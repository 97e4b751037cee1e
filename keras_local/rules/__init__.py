"""Learning rules and their registry.

>>> from keras_local import rules
>>> rules.names()  # doctest: +NORMALIZE_WHITESPACE
['associated', 'backprop', 'direct-feedback-alignment', 'feedback-alignment',
 'pred', 'pred-bpf', 'predsim', 'predsim-bpf', 'probes', 'random-classifier',
 'rec-lra', 'sim', 'sim-bpf']
>>> rules.get("predsim", beta=0.9)
PredSim(beta=0.9, dim_in_decoder=4096)
"""

import inspect

from keras_local.rules.associated import Associated
from keras_local.rules.associated import AssociatedComponent
from keras_local.rules.backprop import Backprop
from keras_local.rules.backprop_free import BackpropFreeHeads
from keras_local.rules.backprop_free import PredBPF
from keras_local.rules.backprop_free import PredSimBPF
from keras_local.rules.backprop_free import SimBPF
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.feedback_alignment import DirectFeedback
from keras_local.rules.feedback_alignment import DirectFeedbackAlignment
from keras_local.rules.feedback_alignment import FeedbackAlignment
from keras_local.rules.local_losses import LocalLossHeads
from keras_local.rules.local_losses import Pred
from keras_local.rules.local_losses import PredSim
from keras_local.rules.local_losses import Sim
from keras_local.rules.probes import Probes
from keras_local.rules.probes import ProbedObjective
from keras_local.rules.probes import with_probes
from keras_local.rules.random_classifier import RandomClassifier
from keras_local.rules.random_classifier import RandomClassifierHead
from keras_local.rules.rec_lra import RecLRA
from keras_local.rules.rec_lra import RecLRATargets

_REGISTRY = {}


def register(rule_class):
    """Adds a `Rule` subclass to the registry under its `name`."""
    if not (isinstance(rule_class, type) and issubclass(rule_class, Rule)):
        raise TypeError(f"Expected a Rule subclass, got {rule_class!r}.")
    if not rule_class.name:
        raise ValueError(f"{rule_class.__name__} has no `name`.")
    _REGISTRY[rule_class.name] = rule_class
    return rule_class


def names():
    """The registered rule names, sorted."""
    return sorted(_REGISTRY)


def parameters(name):
    """The parameter names (with defaults) a registered rule accepts."""
    rule_class = _lookup(name)
    signature = inspect.signature(rule_class.__init__)
    return {
        p.name: p.default
        for p in list(signature.parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _lookup(name):
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown rule {name!r}. Valid rules: {', '.join(names())}."
        ) from None


def get(identifier, **overrides):
    """Returns a `Rule` instance.

    Args:
        identifier: a rule name (`"predsim"`), a `Rule` instance, or a dict
            from `serialize`.
        **overrides: rule parameters, e.g. `beta=0.9`. `None` values are
            ignored, so callers can pass optional settings through unchanged.
            A parameter the rule does not take raises `ValueError`.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(identifier, Rule):
        if not overrides:
            return identifier
        name, config = identifier.name, identifier.get_config()
    elif isinstance(identifier, dict):
        name, config = identifier.get("name"), dict(identifier.get("config", {}))
    else:
        name, config = identifier, {}
    rule_class = _lookup(name)
    accepted = parameters(name)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no parameters"
        raise ValueError(
            f"Rule {name!r} does not take {', '.join(unknown)}; it takes {takes}."
        )
    return rule_class(**{**config, **overrides})


def serialize(rule):
    """A JSON-serialisable description of `rule`, for `get`."""
    return {"name": rule.name, "config": rule.get_config()}


for _rule_class in (
    Backprop,
    Pred,
    Sim,
    PredSim,
    PredBPF,
    SimBPF,
    PredSimBPF,
    RandomClassifier,
    FeedbackAlignment,
    DirectFeedbackAlignment,
    Associated,
    Probes,
    RecLRA,
):
    register(_rule_class)

__all__ = [
    "Associated",
    "AssociatedComponent",
    "Backprop",
    "BackpropFreeHeads",
    "DirectFeedback",
    "DirectFeedbackAlignment",
    "FeedbackAlignment",
    "PredBPF",
    "PredSimBPF",
    "RandomClassifier",
    "RandomClassifierHead",
    "RecLRA",
    "RecLRATargets",
    "SimBPF",
    "LocalLossHeads",
    "LocalObjective",
    "Pred",
    "PredSim",
    "ProbedObjective",
    "Probes",
    "Rule",
    "Sim",
    "get",
    "names",
    "parameters",
    "register",
    "serialize",
    "with_probes",
]
