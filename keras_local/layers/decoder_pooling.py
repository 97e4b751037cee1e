import math

import keras
from keras import ops


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
class DecoderPooling(keras.layers.Layer):
    """Average-pools a conv map so that its flattened size is at most
    `dim_in_decoder`; passes vectors (and everything when `dim_in_decoder` is
    `None`) through unchanged.

    The kernel is `decoder_pooling`'s; the zero padding is explicit and the
    pool 'valid', which reproduces PyTorch's `count_include_pad=True` (Keras'
    'same' pooling would leave the padded cells out of the average). The
    local classifiers read their block through it, and so does the
    similarity of the backprop-free rules.

    Args:
        dim_in_decoder: the largest flattened size allowed, or `None`.

    Example:

    >>> pooling = DecoderPooling(1024)
    >>> pooling(keras.ops.ones((2, 28, 28, 128))).shape
    (2, 2, 4, 128)
    >>> pooling.pool_size, pooling.padding
    ((16, 8), (8, 4))
    """

    def __init__(self, dim_in_decoder=4096, **kwargs):
        super().__init__(**kwargs)
        if dim_in_decoder is not None and (
            not isinstance(dim_in_decoder, int) or dim_in_decoder < 1
        ):
            raise ValueError(
                f"dim_in_decoder must be a positive integer or None, got {dim_in_decoder!r}."
            )
        self.dim_in_decoder = dim_in_decoder
        self.pool_size = (1, 1)
        self.padding = (0, 0)

    def build(self, input_shape):
        if len(input_shape) == 4 and self.dim_in_decoder is not None:
            _, height, width, channels = input_shape
            self.pool_size, self.padding, _ = decoder_pooling(
                channels, height, width, self.dim_in_decoder
            )

    def call(self, inputs):
        if len(inputs.shape) != 4 or self.pool_size == (1, 1):
            return inputs
        (ph, pw) = self.padding
        x = inputs
        if ph or pw:
            x = ops.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        return ops.average_pool(x, self.pool_size, strides=self.pool_size, padding="valid")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4 or self.pool_size == (1, 1):
            return tuple(input_shape)
        batch, height, width, channels = input_shape
        (kh, kw), (ph, pw) = self.pool_size, self.padding
        return (
            batch,
            (height + 2 * ph - kh) // kh + 1,
            (width + 2 * pw - kw) // kw + 1,
            channels,
        )

    def get_config(self):
        return {**super().get_config(), "dim_in_decoder": self.dim_in_decoder}
