"""The global-loss baseline: one objective, gradients through every block."""

from keras_local.rules.base import Rule
from keras_local.rules.registry import register


@register
class Backprop(Rule):
    """Ordinary backpropagation of the output cross-entropy.

    No local heads; the network is a single block from the training step's
    point of view. The output layer keeps PyTorch's default initialisation, as
    in the reference code's `--backprop` mode.
    """

    name = "backprop"
    detach_blocks = False
    default_activation = "relu"
    output_kernel_initializer = "torch"
