"""Recursive local representation alignment (rec-LRA; Ororbia, Mali, Kifer &
Giles, AAAI 2023).

Every hidden block moves its activity towards a target made by learnable
error synapses from the error neurons of the output or of a neighbour,
with a Hebbian-like update; nothing is differentiated through another
block, nor through the activation. Equations, signs, wiring and defaults:
`docs/rules.md`, section "rec-lra".
"""

import math

import keras
from keras import ops

from keras_local.layers.activations import get_activation
from keras_local.layers.block import BlockSpec
from keras_local.ops import gradient_surrogate
from keras_local.ops import to_loss_dtype
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.base import renamed_from
from keras_local.rules.registry import register

#: What the rule assumes of a layer without the block contract (no `spec`):
#: its features are its activation, and not vectors it can wire to.
UNKNOWN_BLOCK = BlockSpec(
    width=None,
    feature_map=True,
    activation="linear",
    features_from="activation",
    feedback=None,
    offers_pre_activation=False,
)


def block_spec(block):
    """`block.spec`, or `UNKNOWN_BLOCK` for a layer without one."""
    return getattr(block, "spec", UNKNOWN_BLOCK)


@keras.saving.register_keras_serializable(package="keras_local")
@renamed_from("RecLRATargets")
class RecLRAObjective(LocalObjective):
    """A block's error synapses `E`, target and error neurons under rec-LRA.

    `call` passes the block's activity through; the top-down pass makes the
    target `y = phi(h - beta d)` from the error neurons `e_j` it reads
    (`d = e_j @ E`), the block's error neurons `e = z - y`, and adds a
    zero-valued term whose gradient is `e z_prev^T` for the block's weights
    and `gamma d e_j^T` for `E`, batch means. It sends `e` down and reports
    the discrepancy `||z - y||^2` as `block<i>_discrepancy_loss`.

    Args:
        num_classes: number of classes.
        source_units: width of the error neurons `E` reads: `num_classes`
            for the output error, the width of the block above otherwise.
        from_output: read the output error (`True`) or the error neurons of
            the block above (`False`).
        activation: the block's activation `phi` (a name).
        pre_activation: the block's `features` are its pre-activation `h`
            (`True`), or its activation `z` (`False`: the target is made in
            activity space, `y = z - beta d`).
        beta: the displacement's strength in the target (eq. 3).
        gamma: the error synapses' update factor (eq. 6).
        error_stddev: standard deviation of `E`'s zero-mean Gaussian start.
    """

    loss_names = ("discrepancy",)

    def __init__(
        self,
        num_classes,
        source_units,
        from_output=True,
        activation="tanh",
        pre_activation=True,
        beta=0.1,
        gamma=0.01,
        error_stddev=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.source_units = source_units
        self.from_output = from_output
        self.activation = activation
        self.pre_activation = pre_activation
        self.beta = beta
        self.gamma = gamma
        self.error_stddev = error_stddev
        self._phi = get_activation(activation) if pre_activation else (lambda x: x)

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        units = math.prod(features_shape[1:])
        self.error_synapses = self.add_weight(
            shape=(self.source_units, units),
            initializer=keras.initializers.RandomNormal(0.0, self.error_stddev),
            trainable=True,
            name="error_synapses",
        )
        self.built = True

    def call(self, features, outputs, labels, training=None):
        return {
            "loss": ops.zeros(()),
            "discrepancy_loss": ops.zeros(()),
            "features": features,
        }

    def top_down(self, result, signal):
        output_error, error_above = signal
        source = output_error if self.from_output else error_above
        features = result["features"]
        # Targets and errors in float32 (the error synapses' dtype) under a
        # mixed policy too; a 16-bit block gets its gradient cast back.
        h = to_loss_dtype(ops.reshape(features, (ops.shape(features)[0], -1)))
        source = to_loss_dtype(source)
        error_synapses = to_loss_dtype(self.error_synapses)
        batch_size = ops.cast(ops.shape(h)[0], h.dtype)
        z = ops.stop_gradient(self._phi(h))
        displacement = ops.stop_gradient(ops.matmul(source, error_synapses))  # eq. 3
        target = self._phi(ops.stop_gradient(h) - self.beta * displacement)  # eq. 3
        error = ops.stop_gradient(z - target)  # eq. 4
        # eq. 5: d sum(h * e) / dW = e z_prev^T (batch mean).
        term = gradient_surrogate(h, error / batch_size)
        # eq. 6: the step dE_{j->i} = -gamma d_i e_j^T (-gamma e_j^T d_i in
        # this layout), so the optimizer's gradient is its negative.
        gradient_e = self.gamma * ops.matmul(ops.transpose(source), displacement) / batch_size
        term = term + gradient_surrogate(self.error_synapses, gradient_e)
        result["discrepancy_loss"] = ops.mean(ops.sum(ops.square(error), axis=-1))
        return term, (output_error, error)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "source_units": self.source_units,
            "from_output": self.from_output,
            "activation": self.activation,
            "pre_activation": self.pre_activation,
            "beta": self.beta,
            "gamma": self.gamma,
            "error_stddev": self.error_stddev,
        }


#: Former name.
RecLRATargets = RecLRAObjective


@register
class RecLRA(Rule):
    """Recursive local representation alignment (Ororbia et al. 2023).

    Every block learns to move its activity towards a target made by
    learnable error synapses from the error neurons of the output or of its
    neighbour above. The blocks are detached from each other; the output
    layer learns from its cross-entropy on detached features. The rule asks
    every block for its pre-activation (`Block.request_pre_activation`).

    Args:
        beta: strength of the displacement in the targets `phi(h - beta d)`.
        gamma: factor of the error synapses' update.
        gap: the residual gap `g` of Algorithm 1: block `l` (1-based) reads
            the output error when `l % gap == 0`, its neighbour's error
            neurons otherwise. `1`: every block reads the output error;
            `0`: no skip-error connections. Blocks of feature maps always
            read the output error.
        error_stddev: the error synapses start as N(0, error_stddev^2).

    Example:

    >>> rule = rules.get("rec-lra", gap=1)
    >>> model = zoo.lra_mlp(rule=rule, input_shape=(28, 28, 1))
    """

    name = "rec-lra"
    default_activation = "tanh"
    output_kernel_initializer = "torch"
    top_down = True

    def __init__(self, beta=0.1, gamma=0.01, gap=2, error_stddev=1.0):
        if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
            raise ValueError(
                f"gap must be an integer >= 0 (0: no skip-error connections), got {gap!r}."
            )
        for label, value in (("beta", beta), ("gamma", gamma), ("error_stddev", error_stddev)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{label} must be a number >= 0, got {value!r}.")
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.gap = gap
        self.error_stddev = float(error_stddev)

    def prepare_block(self, block):
        # A block that does not offer its pre-activation is aligned in
        # activity space (docs/rules.md, "rec-lra").
        if hasattr(block, "request_pre_activation"):
            block.request_pre_activation(by=self.name)

    def reads_output_error(self, index, blocks):
        """Whether block `index` (0-based) reads the output error (else its
        neighbour's error neurons): Algorithm 1's wiring, with maps always
        wired to the output."""
        if index == len(blocks) - 1:
            return True
        if self.gap > 0 and (index + 1) % self.gap == 0:
            return True
        return block_spec(blocks[index]).feature_map or block_spec(blocks[index + 1]).feature_map

    def make_objectives(self, blocks, num_classes):
        objectives = []
        for index, block in enumerate(blocks):
            from_output = self.reads_output_error(index, blocks)
            spec = block_spec(block)
            source_units = num_classes if from_output else block_spec(blocks[index + 1]).width
            objectives.append(
                RecLRAObjective(
                    num_classes,
                    source_units=source_units,
                    from_output=from_output,
                    activation=spec.activation,
                    pre_activation=spec.features_from == "pre_activation",
                    beta=self.beta,
                    gamma=self.gamma,
                    error_stddev=self.error_stddev,
                    name=f"{block.name}_targets",
                )
            )
        return objectives

    def make_objective(self, block, num_classes):
        return self.make_objectives([block], num_classes)[0]

    def output_signal(self, logits, labels):
        # The output's error neurons: softmax(v) - y, per example (eq. 4 at L).
        logits = to_loss_dtype(logits)
        one_hot = ops.one_hot(ops.cast(labels, "int32"), ops.shape(logits)[-1])
        error = ops.stop_gradient(ops.softmax(logits) - one_hot)
        return error, error

    def get_config(self):
        return {
            "beta": self.beta,
            "gamma": self.gamma,
            "gap": self.gap,
            "error_stddev": self.error_stddev,
        }
