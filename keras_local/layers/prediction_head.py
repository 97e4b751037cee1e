import math

import keras
from keras import ops

from keras_local.layers.decoder_pooling import DecoderPooling
from keras_local.layers.decoder_pooling import decoder_pooling  # noqa: F401 (re-export)
from keras_local.layers.feedback import FEEDBACKS
from keras_local.layers.feedback_alignment_dense import FeedbackAlignmentDense
from keras_local.layers.initializers import bias_initializer
from keras_local.layers.initializers import kernel_initializer

#: The dtype policy of every classifier head (the output layer, the local
#: classifiers, the probes), as keras-hub's `head_dtype`: under a mixed
#: precision policy the blocks compute in 16 bits but the logits, and the
#: probabilities and cross-entropies made from them, stay float32.
HEAD_DTYPE = "float32"


@keras.saving.register_keras_serializable(package="keras_local")
class PredictionHead(keras.layers.Layer):
    """A linear classifier: average-pool (conv maps), flatten, linear map.

    It is the local classifier of the `pred` and `predsim` rules and also the
    network's output layer. On a conv map `(N, H, W, C)` it first applies
    `DecoderPooling`, so the flattened size is at most `dim_in_decoder`.

    Args:
        num_classes: number of output logits.
        dim_in_decoder: largest flattened input of the linear map; `None`
            flattens without pooling.
        kernel_initializer: `"zeros"` (local heads, and the output layer of
            local rules), `"torch"` (PyTorch's default) or a Keras initializer.
        bias_initializer: `"torch"`, PyTorch's default U(+-1/sqrt(fan_in)),
            or a Keras initializer.
        feedback: `None` (true gradients) or `"random"`: the input receives
            the error through a fixed random matrix (feedback alignment), as
            the backprop-free heads and the `feedback-alignment` rule's output
            layer; or another feedback of `FeedbackAlignmentDense`
            (`"usf"`, `"brsf"`, `"frsf"`, `"kolen-pollack"`).
        feedback_options: what `FeedbackAlignmentDense` takes besides
            `feedback` (`decay`, `seed`).
        dtype: the layer's dtype policy, which its pooling and linear map
            share; the heads this package creates pass `HEAD_DTYPE`
            (float32) so that logits are float32 under a mixed policy.

    Example:

    >>> head = PredictionHead(10, dim_in_decoder=1024)
    >>> logits = head(keras.ops.ones((2, 28, 28, 128)))
    >>> head.pool_size, head.padding, head.decoder_input_dim
    ((16, 8), (8, 4), 1024)
    """

    def __init__(
        self,
        num_classes,
        dim_in_decoder=4096,
        kernel_initializer="zeros",
        bias_initializer="torch",
        feedback=None,
        feedback_options=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if feedback is not None and feedback not in FEEDBACKS:
            raise ValueError(f"feedback must be None or one of {FEEDBACKS}, got {feedback!r}.")
        self.feedback_options = dict(feedback_options or {})
        self.num_classes = num_classes
        self.dim_in_decoder = dim_in_decoder
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.feedback = feedback
        # Sublayers take the global policy unless told, so pass ours on.
        self.pooling = DecoderPooling(dim_in_decoder, dtype=self.dtype_policy, name="pooling")

    @property
    def pool_size(self):
        return self.pooling.pool_size

    @property
    def padding(self):
        return self.pooling.padding

    def build(self, input_shape):
        self.pooling.build(input_shape)
        self.decoder_input_dim = math.prod(self.pooling.compute_output_shape(input_shape)[1:])
        bias_init = bias_initializer(self.bias_initializer, self.decoder_input_dim)
        dense, options = keras.layers.Dense, {}
        if self.feedback is not None:
            dense = FeedbackAlignmentDense
            options = {"feedback": self.feedback, **self.feedback_options}
        self.dense = dense(
            self.num_classes,
            **options,
            kernel_initializer=kernel_initializer(self.kernel_initializer),
            bias_initializer=bias_init,
            dtype=self.dtype_policy,
            name="dense",
        )
        self.dense.build((None, self.decoder_input_dim))

    def call(self, inputs):
        x = self.pooling(inputs)
        x = ops.reshape(x, (ops.shape(x)[0], -1))
        return self.dense(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "dim_in_decoder": self.dim_in_decoder,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "feedback": self.feedback,
            **({"feedback_options": self.feedback_options} if self.feedback_options else {}),
        }
