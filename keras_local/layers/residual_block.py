import keras
from keras import ops

from keras_local.layers.block import Block
from keras_local.layers.block import BlockOutput
from keras_local.layers.feedback_alignment_conv2d import FeedbackAlignmentConv2D
from keras_local.layers.initializers import torch_bias_initializer
from keras_local.layers.initializers import torch_kernel_initializer

#: The `shortcut` values `ResidualBlock` accepts.
SHORTCUTS = ("projection", "identity")

#: The `output_pooling` values `ResidualBlock` accepts.
OUTPUT_POOLINGS = (None, "global_average")


@keras.saving.register_keras_serializable(package="keras_local")
class ResidualBlock(Block):
    """The basic residual block of the CIFAR ResNets (He et al. 2016).

    conv3x3(strides) -> BN -> act -> conv3x3 -> BN, plus the shortcut, then
    act: `features = act(F(x) + shortcut(x))`. `call` returns a
    `BlockOutput(features, outputs)` like every block: a rule's heads read
    `features`, the block's output activation; `outputs` (after
    `SpatialDropout2D` and the optional global average pooling) feeds the
    next block. A local rule trains the whole block as one: no gradient
    reaches its input from its heads when the rule detaches blocks, and the
    shortcut is inside the block, so the second convolution's error also
    trains the projection.

    The shortcut is the identity when the block keeps the input's shape,
    else a projection or He et al.'s option A (`shortcut`). Both 3x3
    convolutions follow the block's `feedback` and `conv` (see `Block`);
    the projection is always a 1x1 convolution. Initialisation and padding
    are PyTorch's; the papers' choices: `docs/rules.md`, section "Layers
    from the papers".

    Args:
        filters: output channels of both convolutions.
        strides: stride of the first convolution and of the shortcut.
        activation: `"relu"`, `"leaky_relu"` (slope 0.01) or a Keras name;
            used inside the block and after the addition.
        dropout: rate of the `SpatialDropout2D` on the block's output.
        batch_norm: whether the convolutions are batch-normalised.
        shortcut: where the block changes the shape, `"projection"` (a
            1x1 convolution with `strides` and BatchNorm) or `"identity"`
            (the input subsampled by `strides`, padded with zero channels).
        output_pooling: `None`, or `"global_average"`: `outputs` is the
            channel-wise mean over the map, a `filters`-vector (the last
            block of a ResNet, so the output layer sees a vector).
        feedback: `None`, or a feedback of `keras_local.layers.feedback.FEEDBACKS`
            (`"random"`: feedback alignment; sign symmetry; Kolen-Pollack; see `Block`).
        conv: `"standard"` or `"perturbative"` (see above and `Block`); the
            input's spatial size must then be known when it is built.
        features_from: `"activation"` (the default) or `"pre_activation"`:
            `features` is then `F(x) + shortcut(x)`, before the last
            activation (for rules that make targets in pre-activation space,
            `rec-lra`; see `Block`); `outputs` is the same either way.

    Example:

    >>> block = ResidualBlock(32, strides=2)
    >>> features, outputs = block(keras.ops.ones((2, 16, 16, 16)))
    >>> features.shape, outputs.shape
    ((2, 8, 8, 32), (2, 8, 8, 32))
    >>> last = ResidualBlock(64, output_pooling="global_average")
    >>> tuple(last.compute_output_shape((2, 8, 8, 32)))
    ((2, 8, 8, 64), (2, 64))
    """

    #: `call` honours `features_from` (see `Block`): with
    #: `"pre_activation"`, `features` is `F(x) + shortcut(x)`, the input of
    #: the block's last activation.
    honours_features_from = True

    def __init__(
        self,
        filters,
        strides=1,
        activation="relu",
        dropout=0.0,
        batch_norm=True,
        shortcut="projection",
        output_pooling=None,
        **kwargs,
    ):
        super().__init__(
            activation=activation, dropout=dropout, batch_norm=batch_norm, **kwargs
        )
        for arg, value in (("filters", filters), ("strides", strides)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}.")
        if output_pooling not in OUTPUT_POOLINGS:
            raise ValueError(
                f"output_pooling must be one of {OUTPUT_POOLINGS}, got {output_pooling!r}."
            )
        self.filters = filters
        self.strides = strides
        self.shortcut = shortcut
        self.output_pooling = output_pooling

    @property
    def width(self):
        return self.filters

    # ------------------------------------------------------------- layers
    def _residual_conv(self, input_shape, strides, name):
        """A 3x3 convolution of the residual branch (see `_conv_layer`)."""
        if self.conv == "perturbative":
            # Its initialisers are PyTorch's for its own fan-in (C_in * nmasks).
            return self._conv_layer(
                self.filters, 3, strides=strides, use_bias=not self.batch_norm, name=name
            )
        return self._conv_layer(
            self.filters,
            3,
            strides=strides,
            padding="same" if strides == 1 else "valid",
            use_bias=not self.batch_norm,
            kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(9 * input_shape[-1]),
            name=name,
        )

    def _projection(self, input_shape):
        """The 1x1 strided convolution of the projection shortcut."""
        kwargs = dict(
            strides=self.strides,
            padding="valid",
            use_bias=not self.batch_norm,
            kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(input_shape[-1]),
            name="shortcut_conv",
        )
        if self.feedback is not None:
            return FeedbackAlignmentConv2D(
                self.filters, 1, **self._feedback_layer_kwargs(), **kwargs
            )
        return keras.layers.Conv2D(self.filters, 1, **kwargs)

    @property
    def _pads_explicitly(self):
        """Strided standard convolutions pad symmetrically (PyTorch's)."""
        return self.conv == "standard" and self.strides != 1

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"{self.name} expects images of rank 4 (batch, height, width, "
                f"channels); got input shape {tuple(input_shape)}. Add a "
                "channel axis to grayscale images (x[..., None])."
            )
        input_shape = tuple(input_shape)
        self._changes_shape = self.strides != 1 or input_shape[-1] != self.filters
        self._extra_channels = self.filters - input_shape[-1]
        if self._changes_shape and self.shortcut == "identity" and self._extra_channels < 0:
            raise ValueError(
                f"{self.name}: the 'identity' shortcut can only add channels (zero "
                f"padding); it cannot go from {input_shape[-1]} to {self.filters}. "
                "Use shortcut='projection'."
            )
        conv1_input = input_shape
        if self._pads_explicitly:
            conv1_input = (
                input_shape[0],
                None if input_shape[1] is None else input_shape[1] + 2,
                None if input_shape[2] is None else input_shape[2] + 2,
                input_shape[3],
            )
        self.conv1 = self._residual_conv(input_shape, self.strides, "conv1")
        self.conv1.build(conv1_input)
        shape = self.conv1.compute_output_shape(conv1_input)
        self.conv2 = self._residual_conv(shape, 1, "conv2")
        self.conv2.build(shape)
        if self.batch_norm:
            self.norm1 = self._make_norm("batch_norm1", shape)
            self.norm2 = self._make_norm("batch_norm2", shape)
        self.shortcut_conv = None
        if self._changes_shape and self.shortcut == "projection":
            self.shortcut_conv = self._projection(input_shape)
            self.shortcut_conv.build(input_shape)
            if self.batch_norm:
                self.shortcut_norm = self._make_norm("shortcut_batch_norm", shape)
        self.dropout_layer = self._make_dropout() if self.dropout > 0 else None

    def _make_dropout(self):
        return keras.layers.SpatialDropout2D(self.dropout, name="dropout")

    # -------------------------------------------------------------- forward
    def residual(self, inputs, training=None):
        """The residual branch F(x): conv-BN-act-conv-BN."""
        x = inputs
        if self._pads_explicitly:
            x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        x = self.conv1(x)
        if self.batch_norm:
            x = self.norm1(x, training=training)
        x = self._activation_fn(x)
        x = self.conv2(x)
        if self.batch_norm:
            x = self.norm2(x, training=training)
        return x

    def shortcut_path(self, inputs, training=None):
        """The shortcut: the identity, a projection, or option A."""
        if not self._changes_shape:
            return inputs
        if self.shortcut_conv is not None:
            x = self.shortcut_conv(inputs)
            if self.batch_norm:
                x = self.shortcut_norm(x, training=training)
            return x
        # He et al.'s option A: subsample, then zero channels after the input's.
        x = inputs[:, :: self.strides, :: self.strides, :]
        return ops.pad(x, ((0, 0), (0, 0), (0, 0), (0, self._extra_channels)))

    def call(self, inputs, training=None):
        pre_activation = self.residual(inputs, training=training) + self.shortcut_path(
            inputs, training=training
        )
        features = self._activation_fn(pre_activation)
        outputs = features
        if self.dropout_layer is not None:
            outputs = self.dropout_layer(outputs, training=training)
        if self.output_pooling == "global_average":
            outputs = ops.mean(outputs, axis=(1, 2))
        if self.features_from == "pre_activation":
            features = pre_activation
        return BlockOutput(features, outputs)

    def compute_output_shape(self, input_shape):
        def size(length):
            return None if length is None else -(-length // self.strides)

        features = (
            input_shape[0],
            size(input_shape[1]),
            size(input_shape[2]),
            self.filters,
        )
        if self.output_pooling == "global_average":
            return BlockOutput(features, (input_shape[0], self.filters))
        return BlockOutput(features, features)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "shortcut": self.shortcut,
            "output_pooling": self.output_pooling,
        }
