import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_local")
class RandomJitter(keras.layers.Layer):
    """A preprocessing layer which randomly translates images by whole pixels.

    This is a zero-padded random crop, equivalent to torchvision's
    `RandomCrop(size, padding=max_shift)` with constant fill: each image is
    padded by `max_shift` pixels on every side with `fill_value`, then cropped
    back to its original size at an offset drawn uniformly from
    `{0, ..., 2 * max_shift}`, independently for each example and for the
    vertical and horizontal axes. In other words every image is shifted by an
    integer `(dy, dx)` with `|dy|, |dx| <= max_shift`, and the uncovered border is
    filled with `fill_value`. During inference (`training=False`) the layer is
    the identity. It only uses `keras.ops` and `keras.random`, so it runs on
    every backend and inside a jitted JAX step.

    Input shape:
        4D tensor `(batch, height, width, channels)` (channels-last).

    Output shape:
        Same as the input.

    Args:
        max_shift: Non-negative int. The padding, i.e. the largest shift in
            pixels along each axis.
        fill_value: Float, or a list of floats with one value per channel.
            Value of the pixels uncovered by the shift. For normalised images
            use `-mean / std`, the normalised value of a black pixel. Defaults
            to `0.0`.
        seed: Integer. Used to create a random seed.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> layer = RandomJitter(2, seed=1)
    >>> x = np.random.rand(8, 28, 28, 1).astype("float32")
    >>> layer(x, training=True).shape
    (8, 28, 28, 1)
    >>> bool(np.all(layer(x, training=False) == x))
    True
    """

    def __init__(self, max_shift, fill_value=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(max_shift, bool) or int(max_shift) != max_shift or max_shift < 0:
            raise ValueError(
                "`max_shift` must be a non-negative integer. "
                f"Received: max_shift={max_shift}"
            )
        self.max_shift = int(max_shift)
        if isinstance(fill_value, (list, tuple)):
            fill_value = [float(v) for v in fill_value]
        elif hasattr(fill_value, "tolist"):  # NumPy scalar or array
            fill_value = fill_value.tolist()
            if isinstance(fill_value, list):
                fill_value = [float(v) for v in fill_value]
            else:
                fill_value = float(fill_value)
        else:
            fill_value = float(fill_value)
        self.fill_value = fill_value
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "RandomJitter expects 4D inputs (batch, height, width, channels). "
                f"Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        if (
            isinstance(self.fill_value, list)
            and len(self.fill_value) != 1
            and channels is not None
            and len(self.fill_value) != channels
        ):
            raise ValueError(
                "`fill_value` must be a scalar or have one value per channel. "
                f"Received {len(self.fill_value)} values for {channels} channels."
            )
        self.built = True

    def call(self, inputs, training=True):
        if not training or self.max_shift == 0:
            return inputs
        x = ops.convert_to_tensor(inputs)
        shape = ops.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        p = self.max_shift

        # Shift of each example; output pixel (i, j) reads input (i + dy, j + dx).
        offsets = keras.random.randint(
            (batch, 2), minval=-p, maxval=p + 1, dtype="int32",
            seed=self.seed_generator,
        )
        rows = ops.arange(height, dtype="int32")[None, :] + offsets[:, 0:1]  # (B, H)
        cols = ops.arange(width, dtype="int32")[None, :] + offsets[:, 1:2]  # (B, W)
        rows_ok = ops.logical_and(rows >= 0, rows < height)
        cols_ok = ops.logical_and(cols >= 0, cols < width)
        rows = ops.clip(rows, 0, height - 1)
        cols = ops.clip(cols, 0, width - 1)

        out = ops.take_along_axis(x, rows[:, :, None, None], axis=1)
        out = ops.take_along_axis(out, cols[:, None, :, None], axis=2)

        inside = ops.logical_and(rows_ok[:, :, None, None], cols_ok[:, None, :, None])
        fill = ops.cast(ops.convert_to_tensor(self.fill_value), x.dtype)
        return ops.where(inside, out, fill)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_shift": self.max_shift,
                "fill_value": self.fill_value,
                "seed": self.seed,
            }
        )
        return config
