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
else:

    class BackendSteps:
        def train_step(self, *args, **kwargs):
            raise NotImplementedError(
                f"keras_local trains on the TensorFlow and JAX backends; the "
                f"{_backend!r} backend is not supported yet. Set KERAS_BACKEND "
                "to 'tensorflow' or 'jax'."
            )

        test_step = train_step
        compute_gradients = train_step


__all__ = ["BackendSteps"]
