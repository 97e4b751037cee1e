"""Associated learning (Kao & Chen, Neural Computation 33(1), 2021).

Each group of blocks learns to map its input to a learned code of the
label (a bridge, eq. 6) while a label autoencoder learns that code (eq. 5);
prediction decodes through the groups' decoders (eq. 7), so the rule has no
output layer. Equations, variants and the authors' code: `docs/rules.md`,
section "associated".
"""

import keras
from keras import ops

from keras_local.layers.prediction_head import HEAD_DTYPE
from keras_local.layers.scaled_dense import ScaledDense
from keras_local.ops import mean_squared_error
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.base import renamed_from
from keras_local.rules.registry import register

#: Added before the logarithm of the decoded class scores.
LOG_EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="keras_local")
@renamed_from("AssociatedComponent")
class AssociatedObjective(LocalObjective):
    """One group's bridge, label encoder and decoder, and its loss.

    Its loss is the forward loss `MSE(b(s), t)` plus the inverse loss
    `MSE(h(t), sg(t_lower))`, with `t = g(sg(t_lower))` the label's code;
    `predict` decodes `b(s)` through this and every lower decoder.

    Args:
        num_classes: number of classes.
        code_units: width of this group's label code `t_i` (the authors'
            `neuron_num`).
        bridge_multiplier: the bridge's hidden layer has `bridge_multiplier *
            code_units` units.
        lower: the previous group's `AssociatedObjective`, or `None` for
            the first (whose code encodes the one-hot label). The label path
            and the decoding pass through it; its weights stay its own (the
            model trains a shared variable with its first user's loss only).
        detach_targets: stop the forward loss's gradient at the code `t_i`
            (the authors' first code) or let it train the encoder too.
        code_activation: activation of the bridge, encoder and decoder.
        autoencoder_lr_multiplier: learning-rate factor of the encoder and
            decoder (see `ScaledDense`).

    Example:

    >>> first = AssociatedObjective(10, code_units=16)
    >>> second = AssociatedObjective(10, code_units=16, lower=first)
    >>> s1, s2 = keras.ops.ones((4, 8)), keras.ops.ones((4, 8))
    >>> labels = keras.ops.array([0, 1, 2, 3])
    >>> sorted(second(s2, s2, labels))
    ['forward_loss', 'inverse_loss', 'logits', 'loss']
    """

    loss_names = ("forward", "inverse")
    has_local_classifier = True

    def __init__(
        self,
        num_classes,
        code_units=256,
        bridge_multiplier=5,
        lower=None,
        detach_targets=True,
        code_activation="sigmoid",
        autoencoder_lr_multiplier=2.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.code_units = code_units
        self.bridge_multiplier = bridge_multiplier
        self.lower = lower
        self.detach_targets = detach_targets
        self.code_activation = code_activation
        self.autoencoder_lr_multiplier = autoencoder_lr_multiplier
        self.bridge = keras.Sequential(
            [
                keras.layers.Flatten(),
                keras.layers.Dense(
                    bridge_multiplier * code_units,
                    activation=code_activation,
                    kernel_initializer="he_normal",
                ),
                keras.layers.Dense(
                    code_units, activation=code_activation, kernel_initializer="he_normal"
                ),
            ],
            name="bridge",
        )
        self.encoder = ScaledDense(
            code_units,
            activation=code_activation,
            lr_multiplier=autoencoder_lr_multiplier,
            dtype=HEAD_DTYPE,
            name="encoder",
        )
        self.decoder = ScaledDense(
            self.lower_code_units,
            activation=code_activation,
            lr_multiplier=autoencoder_lr_multiplier,
            dtype=HEAD_DTYPE,
            name="decoder",
        )

    @property
    def lower_code_units(self):
        """Width of `t_{i-1}`: the lower group's code, or the classes."""
        return self.num_classes if self.lower is None else self.lower.code_units

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        self.bridge.build(outputs_shape or features_shape)
        self.encoder.build((None, self.lower_code_units))
        self.decoder.build((None, self.code_units))
        self.built = True

    # ------------------------------------------------------------ label path
    def lower_code(self, labels):
        """`t_{i-1}`: the one-hot labels, or the lower group's code."""
        if self.lower is None:
            return ops.one_hot(ops.cast(labels, "int32"), self.num_classes)
        return self.lower.code(labels)

    def code(self, labels):
        """`t_i = g_i(sg(t_{i-1}))` (eq. 2)."""
        return self.encoder(ops.stop_gradient(self.lower_code(labels)))

    def decode(self, code):
        """`h_1(.. h_i(code))`: a code of this group back to class scores
        in (0, 1)."""
        decoded = self.decoder(code)
        return decoded if self.lower is None else self.lower.decode(decoded)

    # -------------------------------------------------------------- objective
    def predict(self, features, outputs):
        scores = self.decode(self.bridge(outputs))
        return ops.log(scores + LOG_EPSILON)

    def call(self, features, outputs, labels, training=None):
        lower_code = ops.stop_gradient(self.lower_code(labels))
        code = self.encoder(lower_code)
        bridged = self.bridge(outputs)
        target = ops.stop_gradient(code) if self.detach_targets else code
        forward_loss = mean_squared_error(bridged, target)
        inverse_loss = mean_squared_error(self.decoder(code), lower_code)
        scores = ops.stop_gradient(self.decode(bridged))
        return {
            "loss": forward_loss + inverse_loss,
            "forward_loss": forward_loss,
            "inverse_loss": inverse_loss,
            "logits": ops.log(scores + LOG_EPSILON),
        }

    def exit_weights(self):
        # The bridge, then every decoder down to the classes: the encoders
        # and the lower bridges only help train (the paper's "affiliated"
        # parameters, section 2.4).
        weights, objective = list(self.bridge.trainable_weights), self
        while objective is not None:
            weights += objective.decoder.trainable_weights
            objective = objective.lower
        return weights

    def get_config(self):
        # `lower` is wiring, remade by the rule: objectives are not
        # deserialised on their own (the rule rebuilds them with the model).
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "code_units": self.code_units,
            "bridge_multiplier": self.bridge_multiplier,
            "detach_targets": self.detach_targets,
            "code_activation": self.code_activation,
            "autoencoder_lr_multiplier": self.autoencoder_lr_multiplier,
        }


#: Former name.
AssociatedComponent = AssociatedObjective


@register
class Associated(Rule):
    """Associated learning: per group of blocks, a bridge to a learned code of
    the label and a label autoencoder; prediction decodes through the
    decoders.

    The groups are the model builder's groups of blocks
    (`LocalModel(groups=...)`), so `zoo.vgg8b(rule="associated")` and the
    ResNets work as built. The hidden blocks use ELU, as the paper's.

    Args:
        code_units: width of every group's label code (the authors'
            `neuron_num`: 300 for VGG and ResNets, 256 for their CNN).
        bridge_multiplier: the bridge's hidden layer is this many times
            `code_units` wide (5 in the authors' code).
        detach_targets: `True` (the authors' first code): the forward loss
            does not train the label encoder; `False` (their later code): it
            does.
        code_activation: activation of bridges, encoders and decoders
            (sigmoid in the paper).
        autoencoder_lr_multiplier: the encoders' and decoders' learning rate
            relative to the optimizer's (2 in the authors' code).
    """

    name = "associated"
    default_activation = "elu"
    trains_groups = True
    has_output_layer = False

    def __init__(
        self,
        code_units=256,
        bridge_multiplier=5,
        detach_targets=True,
        code_activation="sigmoid",
        autoencoder_lr_multiplier=2.0,
    ):
        for name, value in (("code_units", code_units), ("bridge_multiplier", bridge_multiplier)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(detach_targets, bool):
            raise ValueError(f"detach_targets must be True or False, got {detach_targets!r}.")
        self.code_units = code_units
        self.bridge_multiplier = bridge_multiplier
        self.detach_targets = detach_targets
        self.code_activation = code_activation
        self.autoencoder_lr_multiplier = autoencoder_lr_multiplier

    def make_objectives(self, blocks, num_classes):
        objectives, lower = [], None
        for block in blocks:
            lower = AssociatedObjective(
                num_classes,
                code_units=self.code_units,
                bridge_multiplier=self.bridge_multiplier,
                lower=lower,
                detach_targets=self.detach_targets,
                code_activation=self.code_activation,
                autoencoder_lr_multiplier=self.autoencoder_lr_multiplier,
                name=f"{block.name}_objective",
            )
            objectives.append(lower)
        return objectives

    def get_config(self):
        return {
            "code_units": self.code_units,
            "bridge_multiplier": self.bridge_multiplier,
            "detach_targets": self.detach_targets,
            "code_activation": self.code_activation,
            "autoencoder_lr_multiplier": self.autoencoder_lr_multiplier,
        }
