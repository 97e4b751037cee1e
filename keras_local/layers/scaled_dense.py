import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_local")
class ScaledDense(keras.layers.Layer):
    """A dense layer whose learning rate is `lr_multiplier` times the
    optimizer's, under a scale-invariant optimizer such as Adam.

    The weights are stored divided by `lr_multiplier` and multiplied back in
    `call` (`y = activation(x @ (c K) + c b)`): the layer computes the same
    function as a `Dense` with kernel `c K`, but Adam's step on the stored
    `K` is the learning rate whatever the gradient's scale, so the effective
    weights move `c` times as far. Associated learning trains its label
    autoencoders at twice the rate of the rest (Kao & Chen's code gives them
    their own Adam); this gives one optimizer the same effect. Under plain
    SGD the effective rate is `c**2` times the optimizer's instead.

    Args:
        units: output width.
        activation: a Keras activation name or callable.
        lr_multiplier: the factor `c` (> 0); 1 is an ordinary dense layer.
        kernel_initializer: initializer of the effective kernel `c K`
            (He normal, the AL paper's, by default).
        bias_initializer: initializer of the effective bias.

    Example:

    >>> layer = ScaledDense(4, activation="sigmoid", lr_multiplier=2.0)
    >>> layer(keras.ops.ones((3, 5))).shape
    (3, 4)
    """

    def __init__(
        self,
        units,
        activation=None,
        lr_multiplier=1.0,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not lr_multiplier > 0:
            raise ValueError(f"lr_multiplier must be positive, got {lr_multiplier}.")
        self.units = units
        self.activation = keras.activations.get(activation)
        self.lr_multiplier = float(lr_multiplier)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _stored(self, initializer):
        # The stored weight is the effective one divided by the multiplier.
        def initialize(shape, dtype=None):
            return initializer(shape, dtype=dtype) / self.lr_multiplier

        return initialize

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=self._stored(self.kernel_initializer),
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.units,), initializer=self._stored(self.bias_initializer), name="bias"
        )

    def effective_kernel(self):
        return self.kernel * self.lr_multiplier

    def effective_bias(self):
        return self.bias * self.lr_multiplier

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.effective_kernel()) + self.effective_bias()
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "lr_multiplier": self.lr_multiplier,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
