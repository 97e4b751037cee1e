"""TensorFlow: one `GradientTape` per stage, one optimizer step."""

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
        gradients = {}
        results, total = [], 0.0
        for segment in self.segments():
            with tf.GradientTape() as tape:
                x, segment_results, loss = self.run_segment(segment, x, labels, training)
            variables = [v for stage in segment for v in self.stage_variables(stage)]
            for variable, gradient in zip(variables, tape.gradient(loss, variables)):
                gradients[id(variable)] = gradient
            results += segment_results
            total = total + loss
        grads = [
            # A variable its stage's loss does not reach gets a zero gradient
            # (as on JAX), so that both backends apply the same update.
            gradients[id(v)] if gradients.get(id(v)) is not None else tf.zeros_like(v)
            for v in self.trainable_variables
        ]
        return grads, total, results

    def train_step(self, data):
        x, labels = self.unpack(data)
        grads, total, results = self.compute_gradients(self.augment(x), labels)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.update_metrics(total, results, labels)

    def test_step(self, data):
        x, labels = self.unpack(data)
        total, results = self.local_objective(x, labels, training=False)
        return self.update_metrics(total, results, labels)
