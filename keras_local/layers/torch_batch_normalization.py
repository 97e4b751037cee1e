"""Batch normalisation whose moving variance follows PyTorch's update."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_local")
class TorchBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with PyTorch's running-variance update.

    In training both Keras and PyTorch (`torch.nn.BatchNorm1d/2d`) normalise a
    batch by its own mean and biased variance. They differ in the moving
    variance used at inference: Keras averages the biased batch variance,
    PyTorch the unbiased one,

    ```python
    moving_variance = momentum * moving_variance
                      + (1 - momentum) * variance * n / (n - 1)
    ```

    with `n` the number of values reduced per channel (the batch size for
    `(N, C)` inputs, `N * H * W` for `(N, H, W, C)`). This layer does the
    latter; everything else (the training output, the moving mean, the
    inference output) is Keras' `BatchNormalization`.

    With `n == 1` the batch variance is 0 and this layer keeps it at 0 (the
    biased value); PyTorch refuses such a batch in training ("Expected more
    than 1 value per channel when training"). With a mask (Keras' masked
    moments), `n` is the number of unmasked positions per channel.

    The defaults are PyTorch's: `momentum=0.9` is PyTorch's `momentum=0.1`
    (Keras' momentum is the weight of the old value) and `epsilon=1e-5`.
    `renorm` and `synchronized=True` are not supported (a ValueError): the
    count `n` of a synchronised batch spans the replicas.

    Args:
        momentum: Weight of the old moving statistics. Defaults to `0.9`.
        epsilon: Added to the variance before its square root. Defaults to
            `1e-5`.
        **kwargs: The other arguments of `keras.layers.BatchNormalization`
            (`axis`, `center`, `scale`, the initializers, regularizers and
            constraints, `name`, ...).

    Example:

    >>> import numpy as np
    >>> from keras_local.layers import TorchBatchNormalization
    >>> layer = TorchBatchNormalization()
    >>> x = np.array([[0.0], [2.0]], dtype="float32")
    >>> _ = layer(x, training=True)
    >>> round(float(layer.moving_variance.numpy()[0]), 6)  # 0.9 + 0.1 * 2, not 0.1 * 1
    1.1
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, **kwargs):
        if kwargs.get("renorm"):
            raise ValueError("TorchBatchNormalization does not support `renorm=True`.")
        if kwargs.get("synchronized"):
            raise ValueError(
                "TorchBatchNormalization does not support `synchronized=True`: "
                "the unbiased variance needs the count of values over all replicas."
            )
        super().__init__(momentum=momentum, epsilon=epsilon, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "The mask provided should be one dimension less than the inputs. "
                f"Received: mask.shape={mask.shape}, inputs.shape={inputs.shape}"
            )
        # Upcast float16/bfloat16 inputs as Keras does.
        inputs = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(inputs, mask)
        unbiased = ops.multiply(variance, self._bessel_correction(inputs, mask))
        moving_mean = ops.cast(self.moving_mean, inputs.dtype)
        moving_variance = ops.cast(self.moving_variance, inputs.dtype)
        self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            moving_variance * self.momentum + unbiased * (1.0 - self.momentum)
        )
        outputs = ops.batch_normalization(
            x=inputs,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=ops.cast(self.beta, inputs.dtype) if self.center else None,
            scale=ops.cast(self.gamma, inputs.dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def _bessel_correction(self, inputs, mask):
        """`n / (n - 1)`, with `n` the count of reduced values per channel;
        1 where `n <= 1`."""
        if mask is None:
            shape = ops.shape(inputs)
            count = 1
            for axis in self._reduction_axes:
                count = count * shape[axis]
            if isinstance(count, int):  # a static shape: a Python number
                return count / (count - 1) if count > 1 else 1.0
        else:
            weights = ops.broadcast_to(
                ops.cast(ops.expand_dims(mask, axis=-1), inputs.dtype), ops.shape(inputs)
            )
            count = ops.squeeze(ops.sum(weights, axis=self._reduction_axes))
        count = ops.cast(count, inputs.dtype)
        return ops.where(count > 1, count / ops.maximum(count - 1, 1), 1)
