"""Recursive local representation alignment (rec-LRA; Ororbia, Mali, Kifer &
Giles, AAAI 2023, "Backpropagation-Free Deep Learning with Recursive Local
Representation Alignment").

Every hidden block gets a *target* made from an error signal sent to it by
learnable *error synapses* `E`, and learns to move its activity towards it
with a Hebbian-like update; nothing is differentiated through another layer,
nor through the activation (sign units train). With `h` a block's
pre-activation and `z = phi(h)` its activation, for a block `i` whose error
synapses read the error neurons `e_j` of a block (or the output) `j`:

- eq. 3, the displacement and the target: `d_i = E_{j->i} e_j`,
  `y_i = phi(h_i - beta d_i)`;
- eq. 4, the error neurons: `e_i = z_i - y_i`;
- eq. 5, the forward update: `dW_i = e_i z_{i-1}^T` (for any weighted layer,
  the gradient of `sum(h_i * e_i)` with `e_i` held constant: the same
  outer product for a dense layer, its convolutional form for a conv);
- eq. 6, the error-synapse update: `dE_{j->i} = -gamma d_i e_j^T`.

The output layer's error neurons are `e_L = softmax(v) - y` (the one-hot
label is the output's target), and its update `e_L z_{L-1}^T` is the gradient
of its cross-entropy, which the output layer minimises as under every rule.

Signs, averaged over the batch: the optimizer receives `dW` as `W`'s
gradient, so a plain SGD step is `W <- W - lr dW`, which moves `z_i`
towards `y_i`; and it *takes* `dE` as `E`'s step, `E <- E + lr dE =
E - lr gamma d_i e_j^T` (its gradient is `gamma d_i e_j^T`). So both
descend the total discrepancy `D = sum_l ||z_l - y_l||^2` (eq. 2), which
the paper says the system minimises: up to positive factors and the
activation's derivatives (which the rule never uses), `dW` and
`gamma d_i e_j^T` are `D`'s gradients, `dD/dW_i = 2 (e_i * phi'(h_i))
z_{i-1}^T` and, to first order in beta, `dD/dE_{j->i} = 2 beta^2
(phi'(h_i)^2 * d_i) e_j^T`. Handing `dE` to the optimizer as a gradient
instead (as the authors' LRA-E code does with its own `dE`) would make `E`
*ascend* `D`; on the 5x256 tanh MLP (gap 2, Adam 1e-3) that grows the
chained error synapses and lets the discrepancies run away: 81% test
accuracy after one epoch, 80% after three, against 83% and 85% for the
descent.

Wiring (Algorithm 1, lines 14-19, "residual gap g"): hidden block
`l = 1..L-1` (block `L` is the output layer) reads the output error through
`E_{L->l}` when `l` is a multiple of `gap`, and otherwise the error neurons
of its neighbour `l+1` through `E_{l+1->l}` (for the top block that is the
output anyway). `gap=1` wires every block to the output (depth 1, the
wiring of direct feedback alignment); `gap=0` gives no skip-error
connections: every block reads its neighbour (the chain of LRA-E).

Blocks whose activity is a feature map (`ConvBlock`, `ResidualBlock`) always
read the output error: an `E` between two maps would be `(H W C)^2`, while
one from the output is `num_classes x H W C`. That is the paper's skip-error
wiring of residual networks: each residual block's output gets its target
from the output error, and the block is one computational subgraph. Inside
a block the layers learn by the block's own local gradient of
`sum(h * e)` (the option the paper describes of treating the block's error
neurons as the proxy for dL/dz and computing the block's updates locally),
not through per-layer error synapses of their own: no gradient leaves the
block. For a `ResidualBlock`, `h` is `F(x) + shortcut(x)`, the input of its
last activation, and the gradient of `sum(h * e)` reaches both convolutions
(through the inner activation's derivative), the BatchNorms and the
projection.

The rule reads `h` by setting the block's `features_from` to
`"pre_activation"` (see `Block`). A block whose class does not say it
honours that (`Block.honours_features_from`) is aligned in activity space:
its target is `z - beta d` and its error neurons `beta d`, which the block
sends to its weights through its last activation (to first order the exact
rule for differentiable activations; a sign unit there would get no update).
"""

import math

import keras
from keras import ops

from keras_local.layers.activations import get_activation
from keras_local.layers.block import Block
from keras_local.layers.dense_block import DenseBlock
from keras_local.ops import gradient_surrogate
from keras_local.ops import to_loss_dtype
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.registry import register


def returns_pre_activation(block):
    """Whether `block(x)` returns its pre-activation as `features` when its
    `features_from` is `"pre_activation"`: true if the class that defines
    its `call` is `Block` or `DenseBlock` (which flattens, then calls
    `Block.call`), or says `honours_features_from = True` in its own body."""
    if not isinstance(block, Block):
        return False
    for cls in type(block).__mro__:
        if "call" in vars(cls):
            return cls in (Block, DenseBlock) or vars(cls).get("honours_features_from") is True
    return False


@keras.saving.register_keras_serializable(package="keras_local")
class RecLRATargets(LocalObjective):
    """A block's error synapses `E`, target and error neurons under rec-LRA.

    `call` passes the block's activity through; the top-down pass makes the
    target `y = phi(h - beta d)` from the error neurons `e_j` it reads
    (`d = E e_j`, eq. 3), the block's error neurons `e = z - y` (eq. 4),
    and adds a zero-valued term whose gradient is `e z_prev^T` for the
    block's weights (eq. 5, through `sum(h * e)`) and `gamma d e_j^T` for
    `E` (minus eq. 6's step `-gamma d e_j^T`), both averaged over the
    batch. It sends `e` down. The block's discrepancy `||z - y||^2` (eq. 2,
    mean over the batch) is reported as `block<i>_discrepancy_loss`.

    `E` is stored as `(source_units, units)`, so that `d = e_j @ E` for
    row-major batches; the paper's `E_{j->i}` is its transpose.

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


@register
class RecLRA(Rule):
    """Recursive local representation alignment (Ororbia et al. 2023).

    Every block learns to move its activity towards a target made by
    learnable error synapses from the error neurons of the output or of its
    neighbour above (module docstring: equations 2-6 and the wiring of
    Algorithm 1). The blocks are detached from each other; the output layer
    learns from its cross-entropy on detached features.

    Args:
        beta: strength of the displacement in the targets
            `phi(h - beta d)` (eq. 3). 0.1, the value of the authors'
            LRA-E code; the paper does not print it.
        gamma: factor of the error synapses' update (eq. 6), below 1 "to
            change the error synapses more slowly than the forward ones"
            (the paper, which does not print its value); 0.01, that of a
            third-party port of Algorithm 1. Under Adam it matters only
            against epsilon (Adam divides out a constant factor).
        gap: the residual gap `g` of Algorithm 1: block `l` (1-based) reads
            the output error when `l % gap == 0`, its neighbour's error
            neurons otherwise; 2, the `g` of the paper's ResNets. `1`: every
            block reads the output error; `0`: no skip-error connections,
            every block reads its neighbour's. Blocks of feature maps always
            read the output error (see the module docstring).
        error_stddev: the error synapses start as N(0, error_stddev^2); 1,
            the unit Gaussian of the authors' LRA-E code.
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
        if not returns_pre_activation(block):
            return  # aligned in activity space (see the module docstring)
        if block.built and block.features_from != "pre_activation":
            raise ValueError(
                f"{block.name} is already built returning its activation; give "
                f"{self.name} unbuilt blocks (it reads their pre-activation)."
            )
        block.features_from = "pre_activation"

    def reads_output_error(self, index, blocks):
        """Whether block `index` (0-based) reads the output error (else its
        neighbour's error neurons): Algorithm 1's wiring, with maps always
        wired to the output."""
        if index == len(blocks) - 1:
            return True
        if self.gap > 0 and (index + 1) % self.gap == 0:
            return True
        return not (
            isinstance(blocks[index], DenseBlock) and isinstance(blocks[index + 1], DenseBlock)
        )

    def make_objectives(self, blocks, num_classes):
        objectives = []
        for index, block in enumerate(blocks):
            from_output = self.reads_output_error(index, blocks)
            objectives.append(
                RecLRATargets(
                    num_classes,
                    source_units=num_classes if from_output else blocks[index + 1].units,
                    from_output=from_output,
                    activation=getattr(block, "activation", "linear"),
                    pre_activation=getattr(block, "features_from", None) == "pre_activation",
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
