"""Probe heads: a linear classifier on every block that has none, so that
every rule has an exit per block (early exit, `keras_local.early_exit`).

`Probes(rule)` (or `with_probes(rule)`) is a rule that wraps any other rule.
It is the wrapped rule in every respect (activation, detaching, output layer,
top-down pass, ...) except that each objective without a local classifier
(and each block without an objective) gets a *probe*: a `PredictionHead` trained
with cross-entropy on `stop_gradient(features)`. The probe learns to read
the block but sends nothing back, so the block, and every other layer, gets
exactly the gradient the wrapped rule gives it. Objectives that already have
a local classifier (pred, predsim, random-classifier, ...) are left as they
are.

>>> from keras_local import rules, zoo
>>> rule = rules.with_probes("backprop")
>>> rule
Probes(Backprop())
>>> rules.get(rules.serialize(rule)) == rule
True
>>> model = zoo.mlp(layers=2, units=16, rule=rule, input_shape=(8, 8, 1))
>>> [objective.has_local_classifier for objective in model.objectives]
[True, True]
"""

import keras
from keras import ops

from keras_local.layers.prediction_head import HEAD_DTYPE
from keras_local.layers.prediction_head import PredictionHead
from keras_local.ops import prediction_loss
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.registry import register


@keras.saving.register_keras_serializable(package="keras_local")
class ProbedObjective(LocalObjective):
    """A block's objective (or none) plus a probe classifier.

    `call` returns the wrapped objective's result with the probe's
    `"probe_loss"` added to `"loss"` and the probe's `"logits"`; the probe
    reads `stop_gradient(features)`, so its loss trains the probe only.
    `top_down` is the wrapped objective's (a block without one passes the
    signal through unchanged).

    Args:
        objective: the wrapped rule's `LocalObjective` for the block, or
            `None`.
        num_classes: number of classes.
        dim_in_decoder: largest flattened input of the probe (conv maps are
            average-pooled down to it, as the local classifiers of pred).
    """

    has_local_classifier = True

    def __init__(self, objective, num_classes, dim_in_decoder=4096, **kwargs):
        super().__init__(**kwargs)
        self.objective = objective
        self.num_classes = num_classes
        self.dim_in_decoder = dim_in_decoder
        inner_names = tuple(objective.loss_names) if objective is not None else ()
        self.loss_names = inner_names + ("probe",)
        self.probe = PredictionHead(
            num_classes,
            dim_in_decoder=dim_in_decoder,
            kernel_initializer="zeros",
            dtype=HEAD_DTYPE,
            name="probe",
        )

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        if self.objective is not None and not self.objective.built:
            self.objective.build(features_shape, outputs_shape, labels_shape)
        self.probe.build(features_shape)
        self.built = True

    def predict(self, features, outputs):
        return self.probe(features)

    def call(self, features, outputs, labels, training=None):
        if self.objective is None:
            result = {}
        else:
            result = dict(self.objective(features, outputs, labels, training=training))
        logits = self.probe(ops.stop_gradient(features))
        probe_loss = prediction_loss(logits, labels)
        result["probe_loss"] = probe_loss
        result["loss"] = result["loss"] + probe_loss if "loss" in result else probe_loss
        result["logits"] = logits
        return result

    def top_down(self, result, signal):
        if self.objective is None:
            return 0.0, signal
        return self.objective.top_down(result, signal)

    def exit_weights(self):
        return []


@register
class Probes(Rule):
    """Any rule, with a probe classifier on every block that has none.

    The probes are `PredictionHead`s trained with cross-entropy on the
    block's detached activation (`stop_gradient(features)`): they make every
    block an exit for early-exit inference without changing what the wrapped
    rule trains. Everything else (activation, output layer, detaching,
    groups, top-down pass, ...) is the wrapped rule's. Block `i`'s probe is
    reported as `block<i>_probe_loss` and `block<i>_pred_accuracy`.

    Args:
        rule: the wrapped rule: a name, `Rule` or serialised rule.
        dim_in_decoder: largest flattened input of the probes (conv maps are
            average-pooled down to it). When given, it is also passed to the
            wrapped rule if that takes a `dim_in_decoder`; `None`: the wrapped
            rule's (else 4096).
    """

    name = "probes"

    def __init__(self, rule="backprop", dim_in_decoder=None):
        from keras_local import rules as rules_lib

        wrapped = rules_lib.get(rule)
        if dim_in_decoder is not None and "dim_in_decoder" in rules_lib.parameters(
            wrapped.name
        ):
            wrapped = rules_lib.get(wrapped, dim_in_decoder=dim_in_decoder)
        self.rule = wrapped
        self.dim_in_decoder = dim_in_decoder

    @property
    def probe_dim_in_decoder(self):
        if self.dim_in_decoder is not None:
            return self.dim_in_decoder
        return getattr(self.rule, "dim_in_decoder", 4096)

    def _probed(self, objective, block, num_classes):
        if objective is not None and objective.has_local_classifier:
            return objective
        return ProbedObjective(
            objective,
            num_classes,
            dim_in_decoder=self.probe_dim_in_decoder,
            name=f"{block.name}_probed",
        )

    def make_objective(self, block, num_classes):
        return self._probed(self.rule.make_objective(block, num_classes), block, num_classes)

    def make_objectives(self, blocks, num_classes):
        objectives = self.rule.make_objectives(blocks, num_classes)
        return [
            self._probed(objective, block, num_classes)
            for objective, block in zip(objectives, blocks)
        ]

    def get_config(self):
        from keras_local import rules as rules_lib

        return {"rule": rules_lib.serialize(self.rule), "dim_in_decoder": self.dim_in_decoder}

    def __repr__(self):
        extra = "" if self.dim_in_decoder is None else f", dim_in_decoder={self.dim_in_decoder!r}"
        return f"Probes({self.rule!r}{extra})"

    def __getattr__(self, name):
        # Attributes a rule has beyond `Rule`'s own (beta, feedback, ...).
        if name == "rule" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.rule, name)


def _delegate(attribute):
    return property(
        lambda self: getattr(self.rule, attribute),
        doc=f"The wrapped rule's `{attribute}`.",
    )


# Every public attribute and hook of `Rule` that `Probes` does not define is
# the wrapped rule's, including ones added to `Rule` later.
for _attribute in [name for name in vars(Rule) if not name.startswith("_")]:
    if _attribute not in vars(Probes):
        setattr(Probes, _attribute, _delegate(_attribute))


def with_probes(rule, **options):
    """`rule` (a name, `Rule` or serialised rule; `options` are its
    parameters) with a probe classifier on every block without one; see
    `Probes`.

    >>> with_probes("sim")
    Probes(Sim())
    """
    from keras_local import rules as rules_lib

    return Probes(rules_lib.get(rule, **options))
