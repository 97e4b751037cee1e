import keras

from keras_local.layers.block import Block
from keras_local.layers.block import BlockOutput
from keras_local.layers.initializers import torch_bias_initializer
from keras_local.layers.initializers import torch_kernel_initializer

#: Inputs larger than this many pixels get the 7x7 stride-2 stem when
#: `large_input_stem=True` (the paper's STL-10 variant).
LARGE_INPUT_SIZE = 64

#: The `pool_padding` values `ConvBlock` accepts (those of `keras.ops.max_pool`).
POOL_PADDINGS = ("valid", "same")


@keras.saving.register_keras_serializable(package="keras_local")
class ConvBlock(Block):
    """Conv (with bias) -> BatchNorm -> activation -> SpatialDropout [-> MaxPool].

    The local-loss conv block of Nøkland & Eidnes (2019). `call` returns a
    `BlockOutput(features, outputs)`: the heads read `features`, the
    activation before dropout; `outputs` (after dropout and the optional
    max-pooling) feeds the next block. Convolutions pad symmetrically by `kernel_size // 2`, as
    PyTorch's `padding=k//2`.

    Args:
        filters: output channels.
        kernel_size: side of the square kernel.
        strides: stride of the convolution.
        activation: `"relu"`, `"leaky_relu"` (slope 0.01) or a Keras name.
        dropout: rate of `SpatialDropout2D` (whole channels, PyTorch's
            `Dropout2d`).
        pool_size: if set, a `pool_size` x `pool_size` max-pool is applied to
            the outputs (not seen by the heads).
        pool_strides: stride of the max-pool; `None` (the default) means equal
            to `pool_size` (non-overlapping windows). Mostafa et al. (2018)
            use overlapping 3x3 windows with stride 2.
        pool_padding: `"valid"` (the default: no padding, the output side is
            `(size - pool_size) // pool_strides + 1`) or `"same"` (the output
            side is `ceil(size / pool_strides)`). With `pool_size=3,
            pool_strides=2`, `"same"` gives the sizes of PyTorch's
            `MaxPool2d(3, 2, padding=1)` (32 -> 16 -> 8 -> 4), but pads as
            TensorFlow does: the padding goes to the bottom and right, so the
            windows sit one pixel lower and further right than PyTorch's,
            which pads one pixel on every side. Padded cells never win the max.
        batch_norm: whether to normalise before the activation.
        feedback: `None`, or a feedback of `keras_local.layers.feedback.FEEDBACKS`
            (`"random"`: feedback alignment; sign symmetry; Kolen-Pollack; see `Block`).
        conv: `"standard"` (a learned `kernel_size` convolution) or
            `"perturbative"`: a `PerturbativeConv2D` in its place (one fixed
            U(-0.1, 0.1) noise mask per input channel and pixel, ReLU, a
            learned 1x1 mixing; `kernel_size` is then ignored and `strides`
            max-pools, giving the same output size as the padded
            convolution). The input's spatial size must be known when the
            block is built.
        large_input_stem: use a 7x7 stride-2 convolution instead when the input
            is larger than 64 px (the first block of the paper's STL-10 VGG).

    Example:

    >>> block = ConvBlock(128, pool_size=2)
    >>> features, outputs = block(keras.ops.ones((2, 32, 32, 3)))
    >>> features.shape, outputs.shape
    ((2, 32, 32, 128), (2, 16, 16, 128))
    >>> block = ConvBlock(96, kernel_size=5, pool_size=3, pool_strides=2,
    ...                   pool_padding="same")
    >>> block.compute_output_shape((2, 32, 32, 3)).outputs
    (2, 16, 16, 96)
    >>> block = ConvBlock(64, strides=2, conv="perturbative")
    >>> block.compute_output_shape((2, 32, 32, 3)).features
    (2, 16, 16, 64)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        activation="relu",
        dropout=0.0,
        pool_size=None,
        batch_norm=True,
        large_input_stem=False,
        pool_strides=None,
        pool_padding="valid",
        **kwargs,
    ):
        super().__init__(
            activation=activation, dropout=dropout, batch_norm=batch_norm, **kwargs
        )
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        for arg, value in (("pool_size", pool_size), ("pool_strides", pool_strides)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"{arg} must be a positive integer or None, got {value!r}."
                )
        if pool_padding not in POOL_PADDINGS:
            raise ValueError(
                f"pool_padding must be one of {', '.join(map(repr, POOL_PADDINGS))}; "
                f"got {pool_padding!r}."
            )
        if pool_size is None and pool_strides is not None:
            raise ValueError(
                f"pool_strides={pool_strides!r} was given without pool_size; "
                "pool_strides only applies to a max-pool (set pool_size)."
            )
        self.pool_size = pool_size
        self.pool_strides = pool_strides
        self.pool_padding = pool_padding
        self.large_input_stem = large_input_stem

    @property
    def width(self):
        return self.filters

    @property
    def _pool_stride(self):
        return self.pool_size if self.pool_strides is None else self.pool_strides

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"{self.name} expects images of rank 4 (batch, height, width, "
                f"channels); got input shape {tuple(input_shape)}. Add a "
                "channel axis to grayscale images (x[..., None])."
            )
        super().build(input_shape)

    def _kernel_geometry(self, input_shape):
        size = max(input_shape[1] or 0, input_shape[2] or 0)
        if self.large_input_stem and size > LARGE_INPUT_SIZE:
            return 7, 2
        return self.kernel_size, self.strides

    def _make_kernel(self, input_shape):
        kernel_size, strides = self._kernel_geometry(input_shape)
        if self.conv == "perturbative":
            # No padding (the map keeps its size, or is pooled by `strides`)
            # and PyTorch's initialisers for the 1x1 mixing's own fan-in.
            return self._conv_layer(self.filters, kernel_size, strides=strides, name="conv")
        fan_in = kernel_size * kernel_size * input_shape[-1]
        # 'same' equals PyTorch's symmetric padding for odd kernels at stride
        # 1, without a copy; otherwise pad explicitly as PyTorch does.
        same = strides == 1 and kernel_size % 2 == 1
        conv = self._conv_layer(
            self.filters,
            kernel_size,
            strides=strides,
            padding="same" if same else "valid",
            kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(fan_in),
            name="conv",
        )
        if same:
            return conv
        return keras.Sequential(
            [keras.layers.ZeroPadding2D(kernel_size // 2, name="pad"), conv],
            name="padded_conv",
        )

    def _make_dropout(self):
        return keras.layers.SpatialDropout2D(self.dropout, name="dropout")

    def _pool(self, x):
        if self.pool_size is None:
            return x
        return keras.ops.max_pool(
            x, self.pool_size, strides=self._pool_stride, padding=self.pool_padding
        )

    def compute_output_shape(self, input_shape):
        kernel_size, strides = self._kernel_geometry(input_shape)
        pad = kernel_size // 2

        def conv(size):
            if size is None:
                return None
            if self.conv == "perturbative":
                return -(-size // strides)
            return (size + 2 * pad - kernel_size) // strides + 1

        def pool(size):
            if size is None or self.pool_size is None:
                return size
            if self.pool_padding == "same":
                return -(-size // self._pool_stride)
            return (size - self.pool_size) // self._pool_stride + 1

        features = (input_shape[0], conv(input_shape[1]), conv(input_shape[2]), self.filters)
        outputs = (features[0], pool(features[1]), pool(features[2]), self.filters)
        return BlockOutput(features, outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "pool_size": self.pool_size,
            "pool_strides": self.pool_strides,
            "pool_padding": self.pool_padding,
            "large_input_stem": self.large_input_stem,
        }
