import math

import keras
from keras import ops

from keras_local.layers.block import Block
from keras_local.layers.block import BlockOutput
from keras_local.layers.initializers import torch_bias_initializer
from keras_local.layers.initializers import torch_kernel_initializer


@keras.saving.register_keras_serializable(package="keras_local")
class DenseBlock(Block):
    """Linear (with bias) -> BatchNorm -> activation -> Dropout.

    The local-loss fully connected block of Nøkland & Eidnes (2019). Inputs of
    rank > 2 (images, conv maps) are flattened first. `call` returns a
    `BlockOutput(features, outputs)`: the heads read `features`, the
    activation before dropout; `outputs` feeds the next block.

    Args:
        units: output width.
        activation: `"relu"`, `"leaky_relu"` (slope 0.01) or a Keras name.
        dropout: rate of the element-wise dropout after the activation.
        batch_norm: whether to normalise before the activation.
        feedback: `None`, or a feedback of `keras_local.layers.feedback.FEEDBACKS`
            (`"random"`: feedback alignment; sign symmetry; Kolen-Pollack; see `Block`).
        features_from: `"activation"` or `"pre_activation"` (see `Block`).

    Example:

    >>> block = DenseBlock(1024, activation="leaky_relu")
    >>> features, outputs = block(keras.ops.ones((2, 28, 28, 1)))
    >>> outputs.shape
    (2, 1024)
    """

    #: `call` flattens, then runs `Block.call`, which honours `features_from`.
    honours_features_from = True
    feature_map = False

    def __init__(self, units, activation="relu", dropout=0.0, batch_norm=True, **kwargs):
        super().__init__(
            activation=activation, dropout=dropout, batch_norm=batch_norm, **kwargs
        )
        self.units = units

    @property
    def width(self):
        return self.units

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"{self.name} expects inputs of rank >= 2 (batch, features...); "
                f"got input shape {tuple(input_shape)}."
            )
        super().build((input_shape[0], math.prod(input_shape[1:])))

    def _make_kernel(self, input_shape):
        return self._dense_layer(
            self.units,
            kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(input_shape[-1]),
            name="dense",
        )

    def _make_dropout(self):
        return keras.layers.Dropout(self.dropout, name="dropout")

    def call(self, inputs, training=None):
        if len(inputs.shape) > 2:
            inputs = ops.reshape(inputs, (ops.shape(inputs)[0], -1))
        return super().call(inputs, training=training)

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], self.units)
        return BlockOutput(shape, shape)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
