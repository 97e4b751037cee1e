import keras

from keras_local.layers.initializers import torch_kernel_initializer
from keras_local.ops import similarity_matrix


@keras.saving.register_keras_serializable(package="keras_local")
class SimilarityHead(keras.layers.Layer):
    """The learned map before the similarity matrix, and the matrix itself.

    A 3x3 convolution C->C without bias on conv maps, a C x C linear map
    without bias on vectors (Nøkland & Eidnes 2019, sec. 3.1); its output goes
    through `similarity_matrix`, so the layer returns an `(N, N)` matrix.

    Args:
        spatial_std: reduce conv maps by their per-channel spatial standard
            deviation before the similarity (the paper); `False` flattens.

    Example:

    >>> head = SimilarityHead()
    >>> head(keras.ops.ones((8, 16))).shape
    (8, 8)
    """

    def __init__(self, spatial_std=True, **kwargs):
        super().__init__(**kwargs)
        self.spatial_std = spatial_std

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) == 4:
            self.projection = keras.layers.Conv2D(
                channels,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer=torch_kernel_initializer(),
                name="conv",
            )
        else:
            self.projection = keras.layers.Dense(
                channels,
                use_bias=False,
                kernel_initializer=torch_kernel_initializer(),
                name="dense",
            )
        self.projection.build(input_shape)

    def call(self, inputs):
        return similarity_matrix(self.projection(inputs), spatial_std=self.spatial_std)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[0])

    def get_config(self):
        return {**super().get_config(), "spatial_std": self.spatial_std}
