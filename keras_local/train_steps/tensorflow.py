"""TensorFlow: one `GradientTape` per stage, one optimizer step."""

import contextlib

import tensorflow as tf


class TensorFlowSteps:
    """Mixin of `LocalModel` for the TensorFlow backend."""

    def compute_gradients(self, x, labels, training=True):
        """Gradients of every trainable variable, stage by stage.

        Each segment (a block with its heads, or the output layer) runs from
        its detached input under its own tape, and its variables are
        differentiated against its own loss only. Returns `(grads, total,
        results)` with `grads` aligned to `self.trainable_variables`.
        """
        if self.rule.top_down:
            gradients, total, results = self._gradients_after_top_down_pass(
                x, labels, training
            )
        else:
            gradients, total, results = self._gradients_block_by_block(x, labels, training)
        grads = [
            # A variable its stage's loss does not reach gets a zero gradient
            # (as on JAX), so that both backends apply the same update.
            gradients[id(v)] if gradients.get(id(v)) is not None else tf.zeros_like(v)
            for v in self.trainable_variables
        ]
        return grads, total, results

    def _gradients_block_by_block(self, x, labels, training):
        # Each tape is released before the next block runs, so only one
        # block's activations are held for its backward pass at a time.
        gradients, results, total = {}, [], 0.0
        for segment in self.segments():
            with tf.GradientTape() as tape:
                x, segment_results, loss = self.run_segment(segment, x, labels, training)
            variables = self.segment_variables(segment)
            for variable, gradient in zip(variables, tape.gradient(loss, variables)):
                gradients[id(variable)] = gradient
            results += segment_results
            total = total + loss
        return gradients, total, results

    def _gradients_after_top_down_pass(self, x, labels, training):
        # A block's loss is complete only after the error signal from above
        # has come down, so every block's tape stays open over the whole
        # forward and top-down pass. Each tape watches only its own segment's
        # variables, so it still differentiates just that segment's loss.
        segments = self.segments()
        variables = [self.segment_variables(segment) for segment in segments]
        with contextlib.ExitStack() as stack:
            tapes = []
            for segment_variables in variables:
                tape = stack.enter_context(tf.GradientTape(watch_accessed_variables=False))
                tape.watch([v.value for v in segment_variables])
                tapes.append(tape)
            total, results = self.local_objective(x, labels, training)
            losses = self.segment_losses(results)
        gradients = {}
        for tape, loss, segment_variables in zip(tapes, losses, variables):
            if not tf.is_tensor(loss):
                continue  # a segment without a loss (a block with no objective)
            for variable, gradient in zip(
                segment_variables, tape.gradient(loss, segment_variables)
            ):
                gradients[id(variable)] = gradient
        return gradients, total, results

    def train_step(self, data):
        x, labels = self.unpack(data)
        grads, total, results = self.compute_gradients(self.augment(x), labels)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.update_metrics(total, results, labels)

    def test_step(self, data):
        x, labels = self.unpack(data)
        total, results = self.local_objective(x, labels, training=False)
        return self.update_metrics(total, results, labels)
