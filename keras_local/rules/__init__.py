"""Learning rules and their registry.

>>> from keras_local import rules
>>> rules.names()  # doctest: +NORMALIZE_WHITESPACE
['associated', 'backprop', 'direct-feedback-alignment', 'feedback-alignment',
 'kolen-pollack', 'pred', 'pred-bpf', 'predsim', 'predsim-bpf', 'probes',
 'random-classifier', 'rec-lra', 'sign-symmetry', 'sim', 'sim-bpf']
>>> rules.get("predsim", beta=0.9)
PredSim(beta=0.9, dim_in_decoder=4096)
"""

import importlib
import pkgutil

from keras_local.rules.associated import Associated
from keras_local.rules.associated import AssociatedComponent
from keras_local.rules.associated import AssociatedObjective
from keras_local.rules.backprop import Backprop
from keras_local.rules.backprop_free import BackpropFreeHeads
from keras_local.rules.backprop_free import BackpropFreeObjective
from keras_local.rules.backprop_free import PredBPF
from keras_local.rules.backprop_free import PredSimBPF
from keras_local.rules.backprop_free import SimBPF
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.feedback_alignment import DirectFeedback
from keras_local.rules.feedback_alignment import DirectFeedbackAlignment
from keras_local.rules.feedback_alignment import DirectFeedbackObjective
from keras_local.rules.feedback_alignment import FeedbackAlignment
from keras_local.rules.local_losses import LocalLossHeads
from keras_local.rules.local_losses import LocalLossObjective
from keras_local.rules.local_losses import Pred
from keras_local.rules.local_losses import PredSim
from keras_local.rules.local_losses import Sim
from keras_local.rules.local_losses import WeightedLossObjective
from keras_local.rules.probes import ProbedObjective
from keras_local.rules.probes import Probes
from keras_local.rules.probes import with_probes
from keras_local.rules.random_classifier import RandomClassifier
from keras_local.rules.random_classifier import RandomClassifierHead
from keras_local.rules.random_classifier import RandomClassifierObjective
from keras_local.rules.rec_lra import RecLRA
from keras_local.rules.rec_lra import RecLRAObjective
from keras_local.rules.rec_lra import RecLRATargets
from keras_local.rules.registry import get
from keras_local.rules.registry import names
from keras_local.rules.registry import parameters
from keras_local.rules.registry import register
from keras_local.rules.registry import serialize
from keras_local.rules.sign_symmetry import FeedbackRule
from keras_local.rules.sign_symmetry import KolenPollack
from keras_local.rules.sign_symmetry import SignSymmetry

# Every module of this package, so that a new rule file registers its rules
# (`@register`) without being named here.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    # Rules.
    "Associated",
    "Backprop",
    "DirectFeedbackAlignment",
    "FeedbackAlignment",
    "FeedbackRule",
    "KolenPollack",
    "Pred",
    "PredBPF",
    "PredSim",
    "PredSimBPF",
    "Probes",
    "RandomClassifier",
    "RecLRA",
    "Rule",
    "SignSymmetry",
    "Sim",
    "SimBPF",
    # Objectives.
    "AssociatedObjective",
    "BackpropFreeObjective",
    "DirectFeedbackObjective",
    "LocalLossObjective",
    "LocalObjective",
    "ProbedObjective",
    "RandomClassifierObjective",
    "RecLRAObjective",
    "WeightedLossObjective",
    # Former names of objectives.
    "AssociatedComponent",
    "BackpropFreeHeads",
    "DirectFeedback",
    "LocalLossHeads",
    "RandomClassifierHead",
    "RecLRATargets",
    # The registry.
    "get",
    "names",
    "parameters",
    "register",
    "serialize",
    "with_probes",
]
