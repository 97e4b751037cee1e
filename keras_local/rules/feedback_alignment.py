"""Feedback alignment (Lillicrap et al. 2016) and direct feedback alignment
(Nøkland 2016): the output error reaches the hidden layers through fixed
random matrices instead of the transposed forward weights.

- `feedback-alignment`: the error travels down layer by layer, as in
  backprop, but every weighted layer sends it to its input through a fixed
  random matrix (random filters for convolutions); activation derivatives,
  batch norm, max-pooling (the winner) and dropout masks are used as usual.
- `direct-feedback-alignment`: the output error `e` is projected straight
  to every block's output by a fixed random matrix `B_i` (`e @ B_i`); no
  gradient crosses a block boundary.
"""

import math

import keras
from keras import ops

from keras_local.layers.initializers import torch_kernel_initializer
from keras_local.ops import gradient_surrogate
from keras_local.ops import to_loss_dtype
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.base import renamed_from
from keras_local.rules.registry import register


@register
class FeedbackAlignment(Rule):
    """The output cross-entropy's error sent down through fixed random
    feedback weights (every block is asked for `feedback="random"`, and the
    output layer gets it; see `FeedbackAlignmentDense`)."""

    name = "feedback-alignment"
    detach_blocks = False
    default_activation = "relu"
    output_kernel_initializer = "torch"
    output_feedback = "random"

    def prepare_block(self, block):
        require_feedback_request(self, block)
        block.request_feedback("random", by=self.name)


def require_feedback_request(rule, block):
    """`ValueError` unless `block` takes the feedback request of `rule`
    (every feedback rule asks blocks the same way)."""
    if not hasattr(block, "request_feedback"):
        raise ValueError(
            f"{rule.name} needs blocks that take a feedback request "
            f"(keras_local Blocks: `Block.request_feedback`); {block.name} "
            f"({type(block).__name__}) does not."
        )


@keras.saving.register_keras_serializable(package="keras_local")
@renamed_from("DirectFeedback")
class DirectFeedbackObjective(LocalObjective):
    """A block's fixed random matrix `B` of direct feedback alignment.

    In the top-down pass the block's output (after dropout and pooling, what
    the next block reads) receives `e @ B` as its gradient, `e` being the
    output layer's error; the block itself adds no loss of its own.

    Args:
        num_classes: number of classes (rows of `B`).
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        shape = outputs_shape if outputs_shape is not None else features_shape
        width = math.prod(shape[1:])
        # PyTorch's default for a Linear(num_classes -> width): U(+-1/sqrt(K)).
        self.feedback_matrix = self.add_weight(
            shape=(self.num_classes, width),
            initializer=torch_kernel_initializer(),
            trainable=False,
            name="feedback_matrix",
        )
        self.built = True

    def call(self, features, outputs, labels, training=None):
        return {"loss": ops.zeros(()), "outputs": outputs}

    def top_down(self, result, signal):
        # `e @ B` in float32; the (maybe 16-bit) block output receives it
        # cast to its own dtype (`gradient_surrogate`).
        outputs = result["outputs"]
        flat = ops.reshape(outputs, (ops.shape(outputs)[0], -1))
        feedback = ops.matmul(to_loss_dtype(signal), to_loss_dtype(self.feedback_matrix))
        term = gradient_surrogate(flat, feedback)
        return term, signal

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


#: Former name.
DirectFeedback = DirectFeedbackObjective


@register
class DirectFeedbackAlignment(Rule):
    """The output layer's error projected directly to every block by a fixed
    random matrix (Nøkland 2016). Blocks are detached from each other; the
    output layer learns from its cross-entropy on detached features."""

    name = "direct-feedback-alignment"
    default_activation = "relu"
    output_kernel_initializer = "torch"
    top_down = True

    def make_objective(self, block, num_classes):
        return DirectFeedbackObjective(num_classes, name=f"{block.name}_feedback")

    def output_signal(self, logits, labels):
        # The gradient of the (weighted) mean cross-entropy w.r.t. the logits,
        # in float32 like the cross-entropy itself.
        logits = to_loss_dtype(logits)
        batch_size = ops.cast(ops.shape(logits)[0], logits.dtype)
        one_hot = ops.one_hot(ops.cast(labels, "int32"), ops.shape(logits)[-1])
        error = (ops.softmax(logits) - one_hot) * (self.output_loss_weight / batch_size)
        return ops.stop_gradient(error)
