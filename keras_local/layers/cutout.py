import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_local")
class Cutout(keras.layers.Layer):
    """A preprocessing layer which zeroes random square patches of images.

    Cutout (DeVries & Taylor, 2017) as in the reference implementation: for
    each example a centre `(cy, cx)` is drawn uniformly over the whole image
    (so it may lie near the border), and the pixels with
    `cy - length // 2 <= y < cy + length // 2` and
    `cx - length // 2 <= x < cx + length // 2`, clipped to the image, are set
    to 0 in every channel. This is repeated `n_holes` times with independent
    centres. Holes are therefore squares of side `2 * (length // 2)` or
    smaller where they are clipped. Apply it after normalisation, so that holes
    take the data set's mean value. During inference (`training=False`) the
    layer is the identity. It only uses `keras.ops` and `keras.random`, so it
    runs on every backend and inside a jitted JAX step.

    Input shape:
        4D tensor `(batch, height, width, channels)` (channels-last).

    Output shape:
        Same as the input.

    Args:
        length: Positive int. Side of the square hole in pixels.
        n_holes: Positive int. Number of holes per image. Defaults to 1.
        seed: Integer. Used to create a random seed.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> layer = Cutout(16, seed=1)
    >>> x = np.random.rand(8, 32, 32, 3).astype("float32")
    >>> y = layer(x, training=True)
    >>> y.shape
    (8, 32, 32, 3)
    """

    def __init__(self, length, n_holes=1, seed=None, **kwargs):
        super().__init__(**kwargs)
        for arg, value in (("length", length), ("n_holes", n_holes)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(
                    f"`{arg}` must be a positive integer. Received: {arg}={value}"
                )
        self.length = int(length)
        self.n_holes = int(n_holes)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "Cutout expects 4D inputs (batch, height, width, channels). "
                f"Received: input_shape={input_shape}"
            )
        self.built = True

    def call(self, inputs, training=True):
        if not training:
            return inputs
        x = ops.convert_to_tensor(inputs)
        shape = ops.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        half = self.length // 2

        # keras.random.randint needs static bounds on some backends, so draw
        # uniform floats and scale them to integer centres in [0, size).
        u = keras.random.uniform(
            (batch, self.n_holes, 2), seed=self.seed_generator
        )
        size = ops.cast(ops.stack([height, width]), "float32")
        centres = ops.cast(ops.floor(u * size), "int32")
        centres = ops.minimum(centres, ops.cast(size, "int32") - 1)
        cy, cx = centres[..., 0:1], centres[..., 1:2]  # (B, n, 1)

        ys = ops.arange(height, dtype="int32")[None, None, :]  # (1, 1, H)
        xs = ops.arange(width, dtype="int32")[None, None, :]  # (1, 1, W)
        in_rows = ops.logical_and(ys >= cy - half, ys < cy + half)  # (B, n, H)
        in_cols = ops.logical_and(xs >= cx - half, xs < cx + half)  # (B, n, W)
        holes = ops.logical_and(in_rows[:, :, :, None], in_cols[:, :, None, :])
        hole = ops.any(holes, axis=1)[..., None]  # (B, H, W, 1)
        return ops.where(hole, ops.zeros_like(x), x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"length": self.length, "n_holes": self.n_holes, "seed": self.seed}
        )
        return config
