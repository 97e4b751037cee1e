"""JAX: the detached group objectives differentiated in one jitted step."""

import jax
import keras


class JaxSteps:
    """Mixin of `LocalModel` for the JAX backend.

    The trained groups' objectives are summed with `stop_gradient` at every
    group boundary, so `jax.value_and_grad` of the sum gives each variable
    exactly the gradient of its own group's objective; XLA then schedules
    the blocks' backward passes. One optimizer update per step.
    """

    def _stateless_objective(
        self, trainable, non_trainable, x, labels, training, optimizer_values=None
    ):
        """Returns `(loss to differentiate, (total, results, non_trainable))`.

        With `optimizer_values` the loss to differentiate is multiplied by the
        optimizer's loss scale (`mixed_float16`'s `LossScaleOptimizer`, which
        divides it out of the gradients in `stateless_apply`). A
        `keras.distribution` runs this on the global batch, so no scaling
        for the number of devices is needed.
        """
        mapping = list(zip(self.trainable_variables, trainable)) + list(
            zip(self.non_trainable_variables, non_trainable)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            if training:
                x = self.augment(x)
            total, results = self.local_objective(x, labels, training=training)
        non_trainable = [
            _current(scope, variable) for variable in self.non_trainable_variables
        ]
        loss = total
        if optimizer_values is not None:
            mapping = list(zip(self.optimizer.variables, optimizer_values))
            with keras.StatelessScope(state_mapping=mapping):
                loss = self.optimizer.scale_loss(total)
        return loss, (total, results, non_trainable)

    def _stateless_metrics(self, metrics_values, total, results, labels):
        mapping = list(zip(self.metrics_variables, metrics_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self.update_metrics(total, results, labels)
        return logs, [_current(scope, v) for v in self.metrics_variables]

    def compute_gradients(self, x, labels, training=True):
        """Gradients of every trainable variable (aligned to
        `self.trainable_variables`), without changing the model's state.
        Returns `(grads, total, results)`."""
        trainable = [v.value for v in self.trainable_variables]
        non_trainable = [v.value for v in self.non_trainable_variables]
        (_, (total, results, _)), grads = jax.value_and_grad(
            self._stateless_objective, has_aux=True
        )(trainable, non_trainable, x, labels, training)
        return grads, total, results

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metrics_values = state
        x, labels = self.unpack(data)
        (_, (total, results, non_trainable)), grads = jax.value_and_grad(
            self._stateless_objective, has_aux=True
        )(trainable, non_trainable, x, labels, True, optimizer_values)
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        logs, metrics_values = self._stateless_metrics(
            metrics_values, total, results, labels
        )
        return logs, (trainable, non_trainable, optimizer_values, metrics_values)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_values = state
        x, labels = self.unpack(data)
        _, (total, results, non_trainable) = self._stateless_objective(
            trainable, non_trainable, x, labels, False
        )
        logs, metrics_values = self._stateless_metrics(
            metrics_values, total, results, labels
        )
        return logs, (trainable, non_trainable, metrics_values)


def _current(scope, variable):
    value = scope.get_current_value(variable)
    return variable.value if value is None else value
