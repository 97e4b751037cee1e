"""TensorFlow: one `GradientTape` per trained group, one optimizer step."""

import contextlib

import keras
import tensorflow as tf


class TensorFlowSteps:
    """Mixin of `LocalModel` for the TensorFlow backend.

    Under a `tf.distribute` strategy (the model made in its scope) every
    replica runs `train_step` on its share of the batch (`fit` splits each
    batch; `train_on_batch` gives every replica all of it): batch statistics
    (BatchNorm, a similarity matrix) are the replica's own, and the optimizer
    sums the replicas' gradients, each of the loss divided by the number of
    replicas.
    """

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # With `jit_compile=True` Keras compiles the whole distributed step
        # with XLA: `strategy.run` and the optimizer's all-reduce in one
        # cluster on the first device, which cannot reach the other
        # replicas' variables ("variable on a different device"). With more
        # than one replica, Keras' step runs without XLA and each replica's
        # gradients (or test objective) are compiled on its own device
        # instead; the all-reduce and the update stay outside XLA.
        self._xla_per_replica = False
        if self.jit_compile and self.distribute_strategy.num_replicas_in_sync > 1:
            self._xla_per_replica = True
            self.jit_compile = False

    def compile_from_config(self, config):
        # Keras skips compiling a loaded model whose class overrides
        # `compile` (it cannot know what the override takes); this one takes
        # Keras' own arguments, so a loaded model is compiled as it was saved.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _per_replica_xla(self, function):
        if getattr(self, "_xla_per_replica", False):
            # A new function each time a replica's step is traced, so each
            # replica's trace captures that replica's variables.
            return tf.function(function, jit_compile=True)
        return function

    def compute_gradients(self, x, labels, training=True, for_optimizer=False):
        """Gradients of every trainable variable, group by group.

        Each group (a block with its heads, or the output layer) runs from
        its detached input under its own tape, and its variables are
        differentiated against its own loss only. Returns `(grads, total,
        results)` with `grads` aligned to `self.trainable_variables`.

        With `for_optimizer=True` the gradients are those `optimizer.apply`
        expects: of the loss divided by the number of replicas of a
        `tf.distribute` strategy (which sums the replicas' gradients) and
        multiplied by the optimizer's loss scale (`mixed_float16`'s
        `LossScaleOptimizer` divides it out in `apply`).
        """
        scale = self._scale_for_optimizer if for_optimizer else (lambda loss: loss)
        if self.rule.top_down:
            gradients, total, results = self._gradients_after_top_down_pass(
                x, labels, training, scale
            )
        else:
            gradients, total, results = self._gradients_block_by_block(
                x, labels, training, scale
            )
        grads = [
            # A variable its group's loss does not reach gets a zero gradient
            # (as on JAX), so that both backends apply the same update.
            gradients[id(v)] if gradients.get(id(v)) is not None else tf.zeros_like(v)
            for v in self.trainable_variables
        ]
        return grads, total, results

    def _scale_for_optimizer(self, loss):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss / replicas
        return self.optimizer.scale_loss(loss)

    def _gradients_block_by_block(self, x, labels, training, scale):
        # Each tape is released before the next block runs, so only one
        # block's activations are held for its backward pass at a time.
        gradients, results, total = {}, [], 0.0
        for group in self.trained_groups():
            with tf.GradientTape() as tape:
                x, group_results, loss = self.run_group(group, x, labels, training)
                # Scaled under the tape: a tape does not see what is computed
                # after it closes, and would give `None` gradients.
                scaled = scale(loss)
            variables = self.group_variables(group)
            for variable, gradient in zip(variables, tape.gradient(scaled, variables)):
                gradients[id(variable)] = gradient
            results += group_results
            total = total + loss
        return gradients, total, results

    def _gradients_after_top_down_pass(self, x, labels, training, scale):
        # A block's loss is complete only after the error signal from above
        # has come down, so every block's tape stays open over the whole
        # forward and top-down pass. Each tape watches only its own group's
        # variables, so it still differentiates just that group's loss.
        variables = [self.group_variables(group) for group in self.trained_groups()]
        with contextlib.ExitStack() as stack:
            tapes = []
            for own_variables in variables:
                tape = stack.enter_context(tf.GradientTape(watch_accessed_variables=False))
                tape.watch([v.value for v in own_variables])
                tapes.append(tape)
            total, results = self.local_objective(x, labels, training)
            # Scaled under the tapes, which see nothing computed after them.
            losses = [
                scale(loss) if tf.is_tensor(loss) else None
                for loss in self.group_losses(results)
            ]
        gradients = {}
        for tape, loss, own_variables in zip(tapes, losses, variables):
            if loss is None:
                continue  # a group without a loss (a block with no objective)
            for variable, gradient in zip(
                own_variables, tape.gradient(loss, own_variables)
            ):
                gradients[id(variable)] = gradient
        return gradients, total, results

    def train_step(self, data):
        x, labels = self.unpack(data)
        grads, total, results = self._per_replica_xla(self.compute_gradients)(
            self.augment(x), labels, for_optimizer=True
        )
        self.optimizer.apply(grads, self.trainable_variables)
        return self.update_metrics(total, results, labels)

    def test_step(self, data):
        x, labels = self.unpack(data)
        total, results = self._per_replica_xla(self.local_objective)(
            x, labels, training=False
        )
        return self.update_metrics(total, results, labels)
