"""The backend-specific training steps of `LocalModel`.

This is the only place (with export) where code differs per backend; the
network, heads and losses are `keras.ops`. The mixin for the active backend
is chosen when the package is imported.
"""

import keras

_backend = keras.backend.backend()
if _backend == "tensorflow":
    from keras_local.train_steps.tensorflow import TensorFlowSteps as BackendSteps
elif _backend == "jax":
    from keras_local.train_steps.jax import JaxSteps as BackendSteps
elif _backend == "torch":
    from keras_local.train_steps.torch import TorchSteps as BackendSteps
else:

    class BackendSteps:
        def train_step(self, *args, **kwargs):
            raise NotImplementedError(
                f"keras_local trains on the TensorFlow, JAX and PyTorch backends; "
                f"the {_backend!r} backend is not supported. Set KERAS_BACKEND "
                "to 'tensorflow', 'jax' or 'torch'."
            )

        test_step = train_step
        compute_gradients = train_step


__all__ = ["BackendSteps"]
