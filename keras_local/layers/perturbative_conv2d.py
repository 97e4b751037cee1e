"""The perturbative layer of Juefei-Xu, Boddeti & Savvides (2018): fixed
random noise masks and a learned 1x1 mixing in place of a learned kxk
convolution (the "pconv" of the rec-LRA paper's pResNet)."""

import keras
from keras import ops

from keras_local.layers.activations import get_activation
from keras_local.layers.initializers import bias_initializer
from keras_local.layers.initializers import kernel_initializer
from keras_local.layers.initializers import serialize_initializer
from keras_local.ops import feedback_alignment

#: The mask distributions `PerturbativeConv2D` accepts.
DISTRIBUTIONS = ("uniform", "normal")
#: The feedbacks `PerturbativeConv2D` accepts (as `Block.FEEDBACKS`).
FEEDBACKS = (None, "random")


@keras.saving.register_keras_serializable(package="keras_local")
class PerturbativeConv2D(keras.layers.Layer):
    """Fixed additive noise masks, an activation and a learned 1x1 mixing.

    A perturbative layer (Juefei-Xu, Boddeti & Savvides, CVPR 2018; the
    "pseudo-convolution" of the rec-LRA paper's pResNet) replaces a learned
    kxk convolution. At build it draws `nmasks` noise masks per input
    channel, each the size of the input map: a tensor `N` of shape
    `(H, W, C_in, nmasks)`, stored as a non-trainable weight (saved with the
    model, shared by every example, never trained). Then

        y = Conv1x1(act(x[..., None] + N) reshaped to C_in * nmasks channels) + b

    the perturbed channel `c`, mask `m` being channel `c * nmasks + m` of
    the mixing's input, as in the authors' update repository. The 1x1
    kernel `(1, 1, C_in * nmasks, filters)` and the bias are the only
    trainable weights: `C_in * nmasks * filters + filters` parameters,
    against `9 * C_in * filters + filters` for the 3x3 convolution it
    replaces.

    With `strides > 1` the mixed maps are max-pooled (window and stride
    `strides`, `"same"` padding). Where it differs from the reference code:
    `docs/rules.md`, section "Layers from the papers".

    The masks are tied to the input's spatial size, which must be known
    when the layer is built.

    Args:
        filters: output channels.
        nmasks: noise masks per input channel (1 in the reference code).
        level: the masks' scale: U(-level, level) (the reference code's
            default 0.1; the update repository draws U(-1, 1) times
            `level`, the same thing), or N(0, level^2) with
            `distribution="normal"`.
        strides: an int or `(height, width)`; the max-pool's window and
            stride after the mixing.
        activation: applied to `x + N` before the mixing: `"relu"` (the
            reference's), `"leaky_relu"` (slope 0.01), any Keras name, or
            `None` (linear).
        use_bias: whether the mixing adds a bias.
        kernel_initializer: of the 1x1 kernel; `"torch"` (PyTorch's
            default, U(+-1/sqrt(C_in * nmasks))) or any Keras initializer.
        bias_initializer: `"torch"` (U(+-1/sqrt(C_in * nmasks))) or any
            Keras initializer.
        seed: seed of the noise masks (`None`: Keras' global seed state,
            e.g. `keras.utils.set_random_seed`).
        distribution: `"uniform"` (the reference code's) or `"normal"`
            (the rec-LRA paper describes Gaussian masks).
        feedback: `None` (true gradients) or `"random"`: the 1x1 mixing
            sends its input gradient through fixed random filters of its
            kernel's shape (feedback alignment, as
            `FeedbackAlignmentConv2D`), so blocks under the
            `feedback-alignment` rule can be perturbative; the masks and
            the activation pass the gradient as usual.

    Example:

    >>> layer = PerturbativeConv2D(16, nmasks=2, strides=2)
    >>> layer(keras.ops.ones((4, 32, 32, 3))).shape
    (4, 16, 16, 16)
    >>> tuple(layer.masks.shape), layer.masks.trainable
    ((32, 32, 3, 2), False)
    >>> [tuple(w.shape) for w in layer.trainable_weights]  # 3 * 2 * 16 + 16 params
    [(1, 1, 6, 16), (16,)]
    """

    def __init__(
        self,
        filters,
        nmasks=1,
        level=0.1,
        strides=1,
        activation="relu",
        use_bias=True,
        kernel_initializer="torch",
        bias_initializer="torch",
        seed=None,
        distribution="uniform",
        feedback=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value in (("filters", filters), ("nmasks", nmasks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
        if not level >= 0:
            raise ValueError(f"level must be >= 0, got {level!r}.")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}."
            )
        if feedback not in FEEDBACKS:
            raise ValueError(f"feedback must be one of {FEEDBACKS}, got {feedback!r}.")
        self.filters = filters
        self.nmasks = nmasks
        self.level = float(level)
        self.strides = _pair(strides)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.strides):
            raise ValueError(f"strides must be positive integers, got {strides!r}.")
        self.activation = activation
        self._activation_fn = (lambda x: x) if activation is None else get_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.seed = seed
        self.distribution = distribution
        self.feedback = feedback

    def _mask_initializer(self):
        if self.distribution == "normal":
            return keras.initializers.RandomNormal(0.0, self.level, seed=self.seed)
        return keras.initializers.RandomUniform(-self.level, self.level, seed=self.seed)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"{self.name} expects images of rank 4 (batch, height, width, "
                f"channels); got input shape {tuple(input_shape)}."
            )
        height, width, channels = input_shape[1:]
        if height is None or width is None or channels is None:
            raise ValueError(
                f"{self.name} draws one noise mask per pixel, so it needs the "
                "input's height, width and channels when it is built; got input "
                f"shape {tuple(input_shape)}. Give the model a fixed input_shape "
                "(e.g. LocalModel(..., input_shape=(32, 32, 3)))."
            )
        self.masks = self.add_weight(
            shape=(height, width, channels, self.nmasks),
            initializer=self._mask_initializer(),
            trainable=False,
            name="masks",
        )
        mixed = channels * self.nmasks
        shape = (1, 1, mixed, self.filters)
        self.kernel = self.add_weight(
            shape=shape, initializer=kernel_initializer(self.kernel_initializer), name="kernel"
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.filters,),
                initializer=bias_initializer(self.bias_initializer, mixed),
                name="bias",
            )
        self.feedback_kernel = None
        if self.feedback == "random":
            self.feedback_kernel = self.add_weight(
                shape=shape,
                initializer=kernel_initializer("torch"),
                trainable=False,
                name="feedback_kernel",
            )
        # Later calls on another map size fail with Keras' clear message,
        # not a broadcasting error.
        self.input_spec = keras.layers.InputSpec(shape=(None, height, width, channels))

    @staticmethod
    def _mix(x, kernel):
        return ops.conv(x, kernel, strides=1, padding="valid")

    def call(self, inputs):
        perturbed = self._activation_fn(ops.expand_dims(inputs, -1) + self.masks)
        height, width, channels, nmasks = self.masks.shape
        x = ops.reshape(perturbed, (-1, height, width, channels * nmasks))
        if self.feedback_kernel is None:
            x = self._mix(x, self.kernel)
        else:
            x = feedback_alignment(self._mix, x, self.kernel, self.feedback_kernel)
        if self.bias is not None:
            x = x + self.bias
        if self.strides != (1, 1):
            x = ops.max_pool(x, self.strides, strides=self.strides, padding="same")
        return x

    def compute_output_shape(self, input_shape):
        def size(length, stride):
            return None if length is None else -(-length // stride)

        return (
            input_shape[0],
            size(input_shape[1], self.strides[0]),
            size(input_shape[2], self.strides[1]),
            self.filters,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "nmasks": self.nmasks,
            "level": self.level,
            "strides": self.strides,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": serialize_initializer(self.kernel_initializer),
            "bias_initializer": serialize_initializer(self.bias_initializer),
            "seed": self.seed,
            "distribution": self.distribution,
            "feedback": self.feedback,
        }


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)
