import keras

from keras_local.layers.feedback import FeedbackMixin
from keras_local.layers.initializers import bias_initializer
from keras_local.layers.initializers import kernel_initializer
from keras_local.layers.initializers import serialize_initializer
from keras_local.ops import feedback_alignment_matmul


def check_kernel_settings(layer):
    """Refuses what a feedback-alignment layer cannot honour: under
    `"kolen-pollack"` the feedback matrix must get the kernel's updates
    exactly (so that `B - W` only shrinks), and a regularizer or constraint
    acting on the kernel alone would move `W` without `B`."""
    if layer.feedback != "kolen-pollack":
        return
    for setting in ("kernel_regularizer", "kernel_constraint"):
        if getattr(layer, setting) is not None:
            raise ValueError(
                f"{layer.name} has a {setting}, which feedback='kolen-pollack' cannot "
                "honour: it would change the kernel but not its feedback matrix, which "
                "must get the same updates. Remove it (the rule's `decay` is a weight "
                "decay of both)."
            )


def kernel_settings_config(layer):
    """The regularizers and constraints of `layer`, serialised (`None`s
    left out, so that configs saved before they existed stay the same)."""
    config = {}
    for kind, serialize in (
        ("regularizer", keras.regularizers.serialize),
        ("constraint", keras.constraints.serialize),
    ):
        for weight in ("kernel", "bias"):
            value = getattr(layer, f"{weight}_{kind}")
            if value is not None:
                config[f"{weight}_{kind}"] = serialize(value)
    return config


@keras.saving.register_keras_serializable(package="keras_local")
class FeedbackAlignmentDense(FeedbackMixin, keras.layers.Layer):
    """A dense layer that sends its input gradient through a fixed random matrix
    (or another feedback matrix, `feedback`).

    The forward pass is `x @ kernel + bias`. In the backward pass the kernel
    and the bias get their true gradients (`x^T g`, `sum(g)`), but the input
    receives `g @ feedback_kernel^T` instead of `g @ kernel^T`: feedback
    alignment (Lillicrap et al. 2016). `feedback_kernel` has the kernel's
    shape, is drawn once and is never trained; it is saved with the model.

    Args:
        units: output width.
        use_bias: whether to add a bias.
        kernel_initializer: `"torch"` (PyTorch's default, U(+-1/sqrt(fan_in))),
            `"zeros"` or any Keras initializer.
        bias_initializer: `"torch"` or any Keras initializer.
        feedback_initializer: initialiser of the fixed feedback matrix;
            PyTorch's default like the kernel, as the reference code's
            backprop-free heads. For `"frsf"` the magnitudes (its absolute
            value), for `"kolen-pollack"` the start of the trained matrix.
        feedback: what the input gradient goes through (see
            `keras_local.layers.feedback`): `"random"` (fixed random),
            `"usf"`, `"brsf"`, `"frsf"` (sign-concordant: `B` has the
            kernel's signs) or `"kolen-pollack"` (`B` trained with the
            kernel's gradient and decayed with it).
        decay: for `"kolen-pollack"`: kernel and `feedback_kernel` are
            multiplied by `1 - decay` after every optimizer step.
        seed: for `"brsf"`: seed of the magnitudes drawn every step.
        kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: as `keras.layers.Dense`'s (what `from_keras`
            carries over); under `"kolen-pollack"` the kernel takes neither
            a regularizer nor a constraint (see `check_kernel_settings`).

    Example:

    >>> layer = FeedbackAlignmentDense(10)
    >>> layer(keras.ops.ones((4, 32))).shape
    (4, 10)
    >>> [w.name for w in layer.non_trainable_weights]
    ['feedback_kernel']
    """

    def __init__(
        self,
        units,
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
        self.units = units
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.feedback_initializer = feedback_initializer

    def build(self, input_shape):
        fan_in = input_shape[-1]
        shape = (fan_in, self.units)
        self.kernel = self.add_weight(
            shape=shape,
            initializer=kernel_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint or self._kernel_constraint(),
            name="kernel",
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                initializer=bias_initializer(self.bias_initializer, fan_in),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )
        self._build_feedback(shape, fan_in)

    def call(self, inputs, training=None):
        feedback = self.feedback_weights(training)
        x = feedback_alignment_matmul(inputs, self.kernel, feedback)
        if self.bias is not None:
            x = x + self.bias
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "kernel_initializer": serialize_initializer(self.kernel_initializer),
            "bias_initializer": serialize_initializer(self.bias_initializer),
            "feedback_initializer": serialize_initializer(self.feedback_initializer),
            **kernel_settings_config(self),
            **self._feedback_config(),
        }
