import keras
from keras import ops

from keras_local.layers.feedback import FeedbackMixin
from keras_local.layers.feedback_alignment_dense import check_kernel_settings
from keras_local.layers.feedback_alignment_dense import kernel_settings_config
from keras_local.layers.initializers import bias_initializer
from keras_local.layers.initializers import kernel_initializer
from keras_local.layers.initializers import serialize_initializer
from keras_local.ops import feedback_alignment


@keras.saving.register_keras_serializable(package="keras_local")
class FeedbackAlignmentConv2D(FeedbackMixin, keras.layers.Layer):
    """A 2D convolution that sends its input gradient through fixed random filters
    (or other feedback filters, `feedback`).

    The forward pass is `conv(x, kernel) + bias`; the kernel and bias get
    their true gradients, but the input receives the transposed convolution
    of the output gradient with `feedback_kernel` (random filters of the
    kernel's shape, drawn once, never trained, saved with the model) instead
    of with `kernel`: feedback alignment for convolutions, as Mostafa et al.
    (2018) use it ("fixed random filters that we convolve with the errors").
    Written with `keras_local.ops.feedback_alignment`, which needs no custom
    gradient on any backend.

    Args:
        filters: output channels.
        kernel_size: an int or `(height, width)`.
        strides: an int or `(height, width)`.
        padding: `"same"` or `"valid"`.
        use_bias: whether to add a bias.
        kernel_initializer, bias_initializer, feedback_initializer,
        feedback, decay, seed: as in `FeedbackAlignmentDense` (the sign
            feedbacks take the signs of the filters, fan-in `kh * kw * C_in`).
        kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: as in `FeedbackAlignmentDense`.

    Example:

    >>> layer = FeedbackAlignmentConv2D(8, 3, padding="same")
    >>> layer(keras.ops.ones((2, 6, 6, 3))).shape
    (2, 6, 6, 8)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        use_bias=True,
        kernel_initializer="torch",
        bias_initializer="torch",
        feedback_initializer="torch",
        feedback="random",
        decay=0.0,
        seed=None,
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_feedback(feedback, decay, seed)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        check_kernel_settings(self)
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
        self.filters = filters
        self.kernel_size = _pair(kernel_size)
        self.strides = _pair(strides)
        self.padding = padding
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.feedback_initializer = feedback_initializer

    def build(self, input_shape):
        shape = (*self.kernel_size, input_shape[-1], self.filters)
        self.kernel = self.add_weight(
            shape=shape,
            initializer=kernel_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint or self._kernel_constraint(),
            name="kernel",
        )
        fan_in = self.kernel_size[0] * self.kernel_size[1] * input_shape[-1]
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.filters,),
                initializer=bias_initializer(self.bias_initializer, fan_in),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )
        self._build_feedback(shape, fan_in)

    def _conv(self, x, kernel):
        return ops.conv(x, kernel, strides=self.strides, padding=self.padding)

    def call(self, inputs, training=None):
        feedback = self.feedback_weights(training)
        x = feedback_alignment(self._conv, inputs, self.kernel, feedback)
        if self.bias is not None:
            x = x + self.bias
        return x

    def compute_output_shape(self, input_shape):
        def size(length, kernel, stride):
            if length is None:
                return None
            if self.padding == "same":
                return -(-length // stride)
            return (length - kernel) // stride + 1

        return (
            input_shape[0],
            size(input_shape[1], self.kernel_size[0], self.strides[0]),
            size(input_shape[2], self.kernel_size[1], self.strides[1]),
            self.filters,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "use_bias": self.use_bias,
            "kernel_initializer": serialize_initializer(self.kernel_initializer),
            "bias_initializer": serialize_initializer(self.bias_initializer),
            "feedback_initializer": serialize_initializer(self.feedback_initializer),
            **kernel_settings_config(self),
            **self._feedback_config(),
        }


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)
