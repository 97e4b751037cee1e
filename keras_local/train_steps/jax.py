"""JAX: the groups differentiated in turn in one jitted step (or their
detached objectives summed and differentiated at once)."""

import jax
import keras


class JaxSteps:
    """Mixin of `LocalModel` for the JAX backend.

    A model that trains block by block (`LocalModel.trains_block_by_block`)
    differentiates each group's objective in turn, ordered by optimization
    barriers (`_staged_gradients`). Otherwise the trained groups' objectives
    are summed with `stop_gradient` at every group boundary, so
    `jax.value_and_grad` of the sum gives each variable exactly the gradient
    of its own group's objective, and XLA schedules the blocks' backward
    passes. Either way, one optimizer update per step.
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
            loss = self._scaled(total, optimizer_values)
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

    def _staged_gradients(self, trainable, non_trainable, x, labels, optimizer_values):
        """Group by group: each group's forward pass, loss and gradient are
        complete before the next group starts, so XLA holds one group's
        activations at a time (with one `value_and_grad` of the summed
        objective it may run every forward pass first and keep them all).

        The order is forced by an optimization barrier over the group's
        output and gradients: the next group's input is released only once
        the gradients exist. Returns what `value_and_grad` of
        `_stateless_objective` returns, the same values: `(grads, total,
        results, non_trainable)`.
        """
        values = dict(zip(map(id, self.trainable_variables), trainable))
        values.update(zip(map(id, self.non_trainable_variables), non_trainable))

        def run(function, own=(), own_values=()):
            """`function()` with the variables at `values` (and `own` at
            `own_values`); returns its result and updates `values` with the
            non-trainable variables it changed."""
            current = {**values, **dict(zip(map(id, own), own_values))}
            mapping = [(v, current[id(v)]) for v in self.variables if id(v) in current]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                result = function()
            changed = {id(v): _current(scope, v) for v in self.non_trainable_variables}
            return result, changed

        x, changed = run(lambda: self.augment(x))
        values.update(changed)
        gradients, results, total = {}, [], 0.0
        for group in self.trained_groups():
            own = self.group_variables(group)

            def group_loss(own_values, inputs, group=group, own=own):
                (outputs, group_results, loss), changed = run(
                    lambda: self.run_group(group, inputs, labels, training=True),
                    own,
                    own_values,
                )
                return self._scaled(loss, optimizer_values), (
                    outputs, group_results, loss, changed,
                )  # fmt: skip

            (_, (x, group_results, loss, changed)), own_grads = jax.value_and_grad(
                group_loss, has_aux=True
            )([values[id(v)] for v in own], x)
            values.update(changed)
            x, own_grads = jax.lax.optimization_barrier((x, own_grads))
            gradients.update(zip(map(id, own), own_grads))
            results += group_results
            total = total + loss
        grads = [
            # A variable no group's loss trains gets a zero gradient, as
            # from `value_and_grad` of the summed objective.
            gradients.get(id(v), jax.numpy.zeros_like(value))
            for v, value in zip(self.trainable_variables, trainable)
        ]
        non_trainable = [values[id(v)] for v in self.non_trainable_variables]
        return grads, total, results, non_trainable

    def _scaled(self, loss, optimizer_values):
        mapping = list(zip(self.optimizer.variables, optimizer_values))
        with keras.StatelessScope(state_mapping=mapping):
            return self.optimizer.scale_loss(loss)

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metrics_values = state
        x, labels = self.unpack(data)
        if self.trains_block_by_block:
            grads, total, results, non_trainable = self._staged_gradients(
                trainable, non_trainable, x, labels, optimizer_values
            )
        else:
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
