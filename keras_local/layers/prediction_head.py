import math

import keras
from keras import ops

from keras_local.layers.initializers import kernel_initializer
from keras_local.layers.initializers import torch_bias_initializer


def decoder_pooling(channels, height, width, dim_in_decoder):
    """The average pooling that brings a conv map down to the decoder size.

    Reproduces the reference code's search: starting from a 1x1 kernel,
    double the kernel height, then (if still too big) the width, until the
    flattened pooled map has at most `dim_in_decoder` entries or the kernel is
    as tall as the map. The pool's stride equals its kernel; maps that the
    kernel does not divide are zero-padded symmetrically, and the padding
    counts in the average (PyTorch's `count_include_pad=True`).

    Args:
        channels, height, width: the conv map's size.
        dim_in_decoder: the largest flattened size allowed.

    Returns:
        `(pool_size, padding, decoder_input_dim)` where `pool_size` is
        `(kh, kw)`, `padding` is `(pad_h, pad_w)` on each side, and
        `decoder_input_dim` is the flattened size after pooling.
    """
    kh = kw = 1
    h, w = height, width
    size = channels * h * w
    while size > dim_in_decoder and kh < height:
        kh *= 2
        h = math.ceil(height / kh)
        size = channels * h * w
        if size > dim_in_decoder:
            kw *= 2
            w = math.ceil(width / kw)
            size = channels * h * w
    pad_h = (kh * (h - height // kh)) // 2
    pad_w = (kw * (w - width // kw)) // 2
    return (kh, kw), (pad_h, pad_w), size


@keras.saving.register_keras_serializable(package="keras_local")
class PredictionHead(keras.layers.Layer):
    """A linear classifier: average-pool (conv maps), flatten, linear map.

    It is the local classifier of the `pred` and `predsim` rules and also the
    network's output layer. On a conv map `(N, H, W, C)` it average-pools with
    the kernel `decoder_pooling` chooses, so the flattened size is at most
    `dim_in_decoder`; the zero padding is explicit and the pool 'valid', which
    reproduces PyTorch's `count_include_pad=True` (Keras' 'same' pooling would
    leave the padded cells out of the average).

    Args:
        num_classes: number of output logits.
        dim_in_decoder: largest flattened input of the linear map; `None`
            flattens without pooling.
        kernel_initializer: `"zeros"` (local heads, and the output layer of
            local rules), `"torch"` (PyTorch's default) or a Keras initializer.
            The bias is always PyTorch's default, U(+-1/sqrt(fan_in)).

    Example:

    >>> head = PredictionHead(10, dim_in_decoder=1024)
    >>> logits = head(keras.ops.ones((2, 28, 28, 128)))
    >>> head.pool_size, head.padding, head.decoder_input_dim
    ((16, 8), (8, 4), 1024)
    """

    def __init__(
        self, num_classes, dim_in_decoder=4096, kernel_initializer="zeros", **kwargs
    ):
        super().__init__(**kwargs)
        if dim_in_decoder is not None and (
            not isinstance(dim_in_decoder, int) or dim_in_decoder < 1
        ):
            raise ValueError(
                f"dim_in_decoder must be a positive integer or None, got {dim_in_decoder!r}."
            )
        self.num_classes = num_classes
        self.dim_in_decoder = dim_in_decoder
        self.kernel_initializer = kernel_initializer
        self.pool_size = (1, 1)
        self.padding = (0, 0)

    def build(self, input_shape):
        if len(input_shape) == 4 and self.dim_in_decoder is not None:
            _, height, width, channels = input_shape
            self.pool_size, self.padding, _ = decoder_pooling(
                channels, height, width, self.dim_in_decoder
            )
        self.decoder_input_dim = math.prod(self._pooled_shape(input_shape)[1:])
        self.dense = keras.layers.Dense(
            self.num_classes,
            kernel_initializer=kernel_initializer(self.kernel_initializer),
            bias_initializer=torch_bias_initializer(self.decoder_input_dim),
            name="dense",
        )
        self.dense.build((None, self.decoder_input_dim))

    def _pooled_shape(self, input_shape):
        if len(input_shape) != 4 or self.pool_size == (1, 1):
            return input_shape
        batch, height, width, channels = input_shape
        (kh, kw), (ph, pw) = self.pool_size, self.padding
        return (
            batch,
            (height + 2 * ph - kh) // kh + 1,
            (width + 2 * pw - kw) // kw + 1,
            channels,
        )

    def call(self, inputs):
        x = inputs
        if len(x.shape) == 4 and self.pool_size != (1, 1):
            (ph, pw) = self.padding
            if ph or pw:
                x = ops.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
            x = ops.average_pool(
                x, self.pool_size, strides=self.pool_size, padding="valid"
            )
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
        }
