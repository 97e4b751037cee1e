import keras

from keras_local.layers.block import Block
from keras_local.layers.initializers import torch_bias_initializer
from keras_local.layers.initializers import torch_kernel_initializer

#: Inputs larger than this many pixels get the 7x7 stride-2 stem when
#: `large_input_stem=True` (the paper's STL-10 variant).
LARGE_INPUT_SIZE = 64


@keras.saving.register_keras_serializable(package="keras_local")
class ConvBlock(Block):
    """Conv (with bias) -> BatchNorm -> activation -> SpatialDropout [-> MaxPool].

    The local-loss conv block of Nøkland & Eidnes (2019). `call` returns
    `(features, outputs)`: the heads read `features`, the activation before
    dropout; `outputs` (after dropout and the optional max-pooling) feeds the
    next block. Convolutions pad symmetrically by `kernel_size // 2`, as
    PyTorch's `padding=k//2`.

    Args:
        filters: output channels.
        kernel_size: side of the square kernel.
        strides: stride of the convolution.
        activation: `"relu"`, `"leaky_relu"` (slope 0.01) or a Keras name.
        dropout: rate of `SpatialDropout2D` (whole channels, PyTorch's
            `Dropout2d`).
        pool_size: if set, a `pool_size` max-pool with equal stride is applied
            to the outputs (not seen by the heads).
        batch_norm: whether to normalise before the activation.
        large_input_stem: use a 7x7 stride-2 convolution instead when the input
            is larger than 64 px (the first block of the paper's STL-10 VGG).

    Example:

    >>> block = ConvBlock(128, pool_size=2)
    >>> features, outputs = block(keras.ops.ones((2, 32, 32, 3)))
    >>> features.shape, outputs.shape
    ((2, 32, 32, 128), (2, 16, 16, 128))
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
        **kwargs,
    ):
        super().__init__(
            activation=activation, dropout=dropout, batch_norm=batch_norm, **kwargs
        )
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.pool_size = pool_size
        self.large_input_stem = large_input_stem

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
        fan_in = kernel_size * kernel_size * input_shape[-1]
        # 'same' equals PyTorch's symmetric padding for odd kernels at stride
        # 1, without a copy; otherwise pad explicitly as PyTorch does.
        same = strides == 1 and kernel_size % 2 == 1
        conv = keras.layers.Conv2D(
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
            x, self.pool_size, strides=self.pool_size, padding="valid"
        )

    def compute_output_shape(self, input_shape):
        kernel_size, strides = self._kernel_geometry(input_shape)
        pad = kernel_size // 2

        def conv(size):
            return None if size is None else (size + 2 * pad - kernel_size) // strides + 1

        def pool(size):
            if size is None or self.pool_size is None:
                return size
            return size // self.pool_size

        features = (input_shape[0], conv(input_shape[1]), conv(input_shape[2]), self.filters)
        outputs = (features[0], pool(features[1]), pool(features[2]), self.filters)
        return features, outputs

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "pool_size": self.pool_size,
            "large_input_stem": self.large_input_stem,
        }
