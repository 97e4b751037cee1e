"""The block contract: what a hidden block returns, declares and offers."""

import typing

import keras

from keras_local.layers.activations import get_activation
from keras_local.layers.feedback import FEEDBACKS as LAYER_FEEDBACKS
from keras_local.layers.feedback_alignment_conv2d import FeedbackAlignmentConv2D
from keras_local.layers.feedback_alignment_dense import FeedbackAlignmentDense
from keras_local.layers.perturbative_conv2d import FEEDBACKS as PERTURBATIVE_FEEDBACKS
from keras_local.layers.perturbative_conv2d import PerturbativeConv2D
from keras_local.layers.torch_batch_normalization import TorchBatchNormalization


class BlockOutput(typing.NamedTuple):
    """What a block returns: `block(x)` is a `BlockOutput`.

    Attributes:
        features: what the block's local heads read: its activation before
            dropout, or its pre-activation once a rule asked for it
            (`Block.request_pre_activation`).
        outputs: what the next block reads: the activation after dropout
            (and after any pooling).
    """

    features: typing.Any
    outputs: typing.Any


class BlockSpec(typing.NamedTuple):
    """What a block declares about itself (`Block.spec`), before it is built.

    Attributes:
        width: the last axis of `features`: units of a dense block,
            channels of a convolutional one.
        feature_map: whether `features` are maps `(batch, height, width,
            channels)` rather than vectors `(batch, width)`.
        activation: the name of the block's last activation.
        features_from: what `features` holds: `"activation"` or
            `"pre_activation"`.
        feedback: what the weighted layers send back to their input:
            `None` (the true gradient), `"random"` (feedback alignment) or
            another feedback of the feedback-alignment layers (`"usf"`,
            `"brsf"`, `"frsf"`, `"kolen-pollack"`; see
            `keras_local.layers.feedback`).
        offers_pre_activation: whether the block can return its
            pre-activation as `features` (`Block.request_pre_activation`).
    """

    width: int
    feature_map: bool
    activation: str
    features_from: str
    feedback: str | None
    offers_pre_activation: bool

    @classmethod
    def of(cls, block):
        """The spec a block declares through its attributes of these names
        (`offers_pre_activation` is `False` where the block lacks it)."""
        declared = {name: getattr(block, name) for name in cls._fields if hasattr(block, name)}
        return cls(**{"offers_pre_activation": False, **declared})


class Block(keras.layers.Layer):
    """Base of the hidden blocks: weights -> BatchNorm -> activation -> dropout.

    A block is what a local rule trains with its heads, and the blocks
    speak to rules through one contract:

    - it returns a `BlockOutput(features, outputs)`: its heads read
      `features`, the activation *before* dropout; the next block reads
      `outputs`, after dropout (and after any pooling);
    - it declares a `BlockSpec` (`spec`): its width, whether its features
      are maps, its activation, ...;
    - a rule asks it, before it is built, for what the rule needs:
      `request_feedback("random")` (feedback alignment in every weighted
      layer) or `request_pre_activation()` (`features` become the input of
      the last activation, for rules whose targets live there).

    Subclasses make the weighted layer (`_make_kernel`) and the dropout
    layer, and declare their `width` and `feature_map`. BatchNorm uses
    PyTorch's momentum and epsilon (momentum 0.1 there, 0.9 here; epsilon
    1e-5), as the reference code; `batch_norm="pytorch"` also updates the
    running variance as PyTorch does (`TorchBatchNormalization`).

    Args:
        activation: `"relu"`, `"leaky_relu"` (slope 0.01) or a Keras name.
        dropout: rate of the dropout after the activation.
        batch_norm: whether to normalise before the activation: `False`,
            `True` (Keras' `BatchNormalization`, whose running variance
            takes the biased batch variance) or `"pytorch"`
            (`TorchBatchNormalization`: the unbiased one, as PyTorch).
        feedback: `None`, the true gradient, or `"random"`: the gradient
            through a fixed random matrix of the kernel's shape, or another
            feedback of the feedback-alignment layers (see
            `request_feedback`).
        feedback_options: what the feedback-alignment layers take besides
            `feedback` (`decay` of `"kolen-pollack"`, `seed` of `"brsf"`).
        conv: what `_conv_layer` makes: `"standard"`, a learned kxk
            convolution; `"perturbative"`, a `PerturbativeConv2D` (fixed
            noise masks and a learned 1x1 mixing, downsampling by
            max-pooling; with `feedback="random"` its mixing is a
            feedback-alignment convolution). Blocks without convolutions
            refuse `"perturbative"` when they are built.
        features_from: `"activation"` or `"pre_activation"` (see
            `request_pre_activation`); `outputs` is the same either way.

    Example:

    >>> block = DenseBlock(8, activation="tanh")
    >>> block.spec.width, block.spec.feature_map
    (8, False)
    >>> block.request_pre_activation()
    True
    >>> features, outputs = block(keras.ops.ones((2, 4)))
    """

    #: This class's own `call` honours `features_from`. A subclass that
    #: overrides `call` offers the pre-activation only if it says so in its
    #: own class body (and returns the input of its last activation as
    #: `features` when asked).
    honours_features_from = True

    #: Whether `features` are maps (batch, height, width, channels).
    feature_map = True

    FEEDBACKS = (None, *LAYER_FEEDBACKS)
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
        feedback_options=None,
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
        self._check_perturbative_feedback(conv, feedback)
        self.feedback = feedback
        self.feedback_options = dict(feedback_options or {})
        self.conv = conv
        self.features_from = features_from
        self.activation = activation
        self.dropout = dropout
        if batch_norm not in (True, False, "pytorch"):
            raise ValueError(f"batch_norm must be True, False or 'pytorch', got {batch_norm!r}.")
        self.batch_norm = batch_norm
        self._activation_fn = get_activation(activation)

    # ------------------------------------------------------------ contract
    @property
    def width(self):
        """The last axis of `features` (units or channels); `None` if a
        subclass does not say."""
        return None

    @property
    def offers_pre_activation(self):
        """Whether `call` can return the pre-activation as `features`: the
        class that defines `call` says `honours_features_from = True` in its
        own body."""
        for cls in type(self).__mro__:
            if "call" in vars(cls):
                return vars(cls).get("honours_features_from") is True
        return False

    @property
    def spec(self):
        """What this block declares (a `BlockSpec`)."""
        return BlockSpec.of(self)

    def request_feedback(self, feedback, by=None, **options):
        """Makes the weighted layers send `feedback` back to their input:
        `None`, `"random"` (a fixed random matrix of the kernel's shape:
        feedback alignment), or the sign-concordant `"usf"`, `"brsf"`,
        `"frsf"` or the trained `"kolen-pollack"` (see
        `keras_local.layers.feedback`). Only before the block is built.

        Args:
            feedback: one of `FEEDBACKS`.
            by: the name of who asks (a rule), for error messages.
            **options: for the feedback-alignment layers (`decay`, `seed`).
        """
        if feedback not in self.FEEDBACKS:
            raise ValueError(f"feedback must be one of {self.FEEDBACKS}, got {feedback!r}.")
        self._check_perturbative_feedback(self.conv, feedback, by)
        if self.built and (self.feedback != feedback or self.feedback_options != options):
            kind = "true" if self.feedback is None else repr(self.feedback)
            raise ValueError(
                f"{self.name} is already built with {kind} feedback; give "
                f"{by or 'the rule'} unbuilt blocks."
            )
        self.feedback = feedback
        self.feedback_options = dict(options)

    def _check_perturbative_feedback(self, conv, feedback, by=None):
        if conv == "perturbative" and feedback not in PERTURBATIVE_FEEDBACKS:
            raise ValueError(
                f"{self.name}: perturbative convolutions take feedback "
                f"{PERTURBATIVE_FEEDBACKS}, not {feedback!r}"
                + (f" (asked by {by})." if by else ".")
            )

    def _feedback_layer_kwargs(self):
        """`feedback` and its options, for a feedback-alignment layer."""
        return {"feedback": self.feedback, **self.feedback_options}

    def request_pre_activation(self, by=None):
        """Asks the block to return its pre-activation (after the weights
        and BatchNorm, before the last activation) as `features`, for rules
        whose targets live there and whose updates must not go through the
        activation's derivative (`rec-lra`). Only before the block is built.

        Returns whether the block will (`offers_pre_activation`); one that
        cannot keeps returning its activation.

        Args:
            by: the name of who asks (a rule), for error messages.
        """
        if not self.offers_pre_activation:
            return False
        if self.built and self.features_from != "pre_activation":
            raise ValueError(
                f"{self.name} is already built returning its activation; give "
                f"{by or 'the rule'} unbuilt blocks (it reads their pre-activation)."
            )
        self.features_from = "pre_activation"
        return True

    # -------------------------------------------------------------- layers
    def _make_kernel(self, input_shape):
        raise NotImplementedError

    def _dense_layer(self, units, **kwargs):
        """A `Dense`, or a `FeedbackAlignmentDense` when `feedback` is set."""
        if self.conv != "standard":
            raise ValueError(
                f"{self.name} ({type(self).__name__}) has no convolution; "
                f"conv={self.conv!r} applies to convolutional blocks (ConvBlock)."
            )
        if self.feedback is not None:
            return FeedbackAlignmentDense(units, **self._feedback_layer_kwargs(), **kwargs)
        return keras.layers.Dense(units, **kwargs)

    def _conv_layer(self, filters, kernel_size, **kwargs):
        """A `Conv2D`, or a `FeedbackAlignmentConv2D` when `feedback` is set.

        With `conv="perturbative"`, a `PerturbativeConv2D(filters,
        strides=...)` instead: `kernel_size` and `padding` do not apply (it
        keeps the map size, or pools it by `strides`), and its 1x1 mixing
        uses `feedback`. Its initialisers default to PyTorch's for its own
        fan-in (`C_in * nmasks`); pass them only to override that.
        """
        if self.conv == "perturbative":
            kwargs.pop("padding", None)
            return PerturbativeConv2D(filters, feedback=self.feedback, **kwargs)
        if self.feedback is not None:
            return FeedbackAlignmentConv2D(
                filters, kernel_size, **self._feedback_layer_kwargs(), **kwargs
            )
        return keras.layers.Conv2D(filters, kernel_size, **kwargs)

    def _make_norm(self, name, shape):
        """A built batch norm of PyTorch's momentum and epsilon; with
        `batch_norm="pytorch"` also its running-variance update."""
        pytorch = self.batch_norm == "pytorch"
        norm_class = TorchBatchNormalization if pytorch else keras.layers.BatchNormalization
        norm = norm_class(momentum=0.9, epsilon=1e-5, name=name)
        norm.build(shape)
        return norm

    def _make_dropout(self):
        raise NotImplementedError

    def _pool(self, x):
        return x

    def build(self, input_shape):
        self.kernel_layer = self._make_kernel(input_shape)
        self.kernel_layer.build(input_shape)
        shape = self.kernel_layer.compute_output_shape(input_shape)
        if self.batch_norm:
            self.norm = self._make_norm("batch_norm", shape)
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
        return BlockOutput(features, self._pool(outputs))

    def get_config(self):
        config = {
            **super().get_config(),
            "activation": self.activation,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
            "feedback": self.feedback,
            "conv": self.conv,
            "features_from": self.features_from,
        }
        if self.feedback_options:
            config["feedback_options"] = dict(self.feedback_options)
        return config
