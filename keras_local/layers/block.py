import keras

from keras_local.layers.activations import get_activation
from keras_local.layers.feedback_alignment_conv2d import FeedbackAlignmentConv2D
from keras_local.layers.feedback_alignment_dense import FeedbackAlignmentDense
from keras_local.layers.perturbative_conv2d import PerturbativeConv2D


class Block(keras.layers.Layer):
    """Base of the hidden blocks: weights -> BatchNorm -> activation -> dropout.

    A block is the unit a local rule trains: its heads read the activation
    *before* dropout (the "features"), and the next block reads the output
    after dropout (and after any pooling). `call` returns both, as
    `(features, outputs)`. Subclasses make the weighted layer (`_make_kernel`)
    and the dropout layer.

    BatchNorm uses PyTorch's settings (momentum 0.1 there, 0.9 here;
    epsilon 1e-5), as the reference code.

    `feedback` says what the weighted layer sends back to its input: `None`,
    the true gradient (the kernel's transpose); `"random"`, the gradient
    through a fixed random matrix of the kernel's shape (feedback alignment).
    Rules that need it (`feedback-alignment`) set it before the block is
    built; subclasses make their layer with `_dense_layer`/`_conv_layer`,
    which honour it.

    `conv` says what `_conv_layer` makes: `"standard"`, a learned kxk
    convolution; `"perturbative"`, a `PerturbativeConv2D` (fixed noise
    masks and a learned 1x1 mixing, downsampling by max-pooling) in its
    place. With `feedback="random"` the perturbative layer's 1x1 mixing is
    itself a feedback-alignment convolution. Blocks without convolutions
    (`DenseBlock`) refuse `"perturbative"` when they are built.

    `features_from` says what `call` returns as `features`: `"activation"`
    (the default), the activation as described above; `"pre_activation"`,
    its input (after the weights and BatchNorm), for rules whose targets are
    made in pre-activation space and whose updates must not go through the
    activation's derivative (`rec-lra`: `y = phi(h - beta * d)`; the rule
    applies `phi` itself). `outputs` is the same either way. The rule sets
    it before the block is built; the block's heads (and
    `keras_local.analysis`) then read the pre-activation. A subclass that
    overrides `call` honours it only if it says so with
    `honours_features_from = True` in its own class body (and returns the
    input of its last activation as `features` when asked); rules treat
    other blocks as not exposing their pre-activation.
    """

    #: This class's `call` honours `features_from` (see above).
    honours_features_from = True

    FEEDBACKS = (None, "random")
    CONVS = ("standard", "perturbative")
    FEATURES_FROM = ("activation", "pre_activation")

    def __init__(
        self,
        activation="relu",
        dropout=0.0,
        batch_norm=True,
        feedback=None,
        conv="standard",
        features_from="activation",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if feedback not in self.FEEDBACKS:
            raise ValueError(f"feedback must be one of {self.FEEDBACKS}, got {feedback!r}.")
        if conv not in self.CONVS:
            raise ValueError(f"conv must be one of {self.CONVS}, got {conv!r}.")
        if features_from not in self.FEATURES_FROM:
            raise ValueError(
                f"features_from must be one of {self.FEATURES_FROM}, got {features_from!r}."
            )
        self.feedback = feedback
        self.conv = conv
        self.features_from = features_from
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self._activation_fn = get_activation(activation)

    def _make_kernel(self, input_shape):
        raise NotImplementedError

    def _dense_layer(self, units, **kwargs):
        """A `Dense`, or a `FeedbackAlignmentDense` when `feedback="random"`."""
        if self.conv != "standard":
            raise ValueError(
                f"{self.name} ({type(self).__name__}) has no convolution; "
                f"conv={self.conv!r} applies to convolutional blocks (ConvBlock)."
            )
        if self.feedback == "random":
            return FeedbackAlignmentDense(units, **kwargs)
        return keras.layers.Dense(units, **kwargs)

    def _conv_layer(self, filters, kernel_size, **kwargs):
        """A `Conv2D`, or a `FeedbackAlignmentConv2D` when `feedback="random"`.

        With `conv="perturbative"`, a `PerturbativeConv2D(filters,
        strides=...)` instead: `kernel_size` and `padding` do not apply (it
        keeps the map size, or pools it by `strides`), and its 1x1 mixing
        uses `feedback`. Its initialisers default to PyTorch's for its own
        fan-in (`C_in * nmasks`); pass them only to override that.
        """
        if self.conv == "perturbative":
            kwargs.pop("padding", None)
            return PerturbativeConv2D(filters, feedback=self.feedback, **kwargs)
        if self.feedback == "random":
            return FeedbackAlignmentConv2D(filters, kernel_size, **kwargs)
        return keras.layers.Conv2D(filters, kernel_size, **kwargs)

    def _make_dropout(self):
        raise NotImplementedError

    def _pool(self, x):
        return x

    def build(self, input_shape):
        self.kernel_layer = self._make_kernel(input_shape)
        self.kernel_layer.build(input_shape)
        shape = self.kernel_layer.compute_output_shape(input_shape)
        if self.batch_norm:
            self.norm = keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-5, name="batch_norm"
            )
            self.norm.build(shape)
        self.dropout_layer = self._make_dropout() if self.dropout > 0 else None

    def call(self, inputs, training=None):
        x = self.kernel_layer(inputs)
        if self.batch_norm:
            x = self.norm(x, training=training)
        features = self._activation_fn(x)
        outputs = features
        if self.dropout_layer is not None:
            outputs = self.dropout_layer(outputs, training=training)
        if self.features_from == "pre_activation":
            features = x
        return features, self._pool(outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "activation": self.activation,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
            "feedback": self.feedback,
            "conv": self.conv,
            "features_from": self.features_from,
        }
