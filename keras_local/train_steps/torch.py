"""PyTorch: each group's loss backpropagated as soon as it is computed."""

import torch


class TorchSteps:
    """Mixin of `LocalModel` for the PyTorch backend.

    Follows Keras' own torch trainer: the forward pass records the autograd
    graph eagerly, `backward()` leaves each variable's gradient in
    `variable.value.grad`, and `optimizer.apply` runs under `torch.no_grad()`.
    What differs is that a rule that detaches blocks calls `backward()` once
    per trained group, right after that group's forward pass, so the group's
    graph (its saved activations) is freed before the next group runs: at
    most one group's activations are held at a time, as with the
    TensorFlow step's one tape per group. One optimizer update per step.
    """

    # Keras' `jit_compile=True` means `torch.compile` on this backend, not
    # XLA. It would trace this step's Python loop of per-group backward
    # passes: on 2 CPU cores, fitting a small vgg8b on 64 examples, saving,
    # loading and fitting it again took 214 s compiled (recompiling for each
    # new batch shape) and 18 s eagerly. So the zoo's `jit_compile=True` (XLA on TensorFlow and JAX)
    # runs eagerly here, as Keras' "auto" does. A property rather than a
    # `compile` override: Keras does not restore the compiled state of a
    # saved model whose `compile` is overridden.
    @property
    def jit_compile(self):
        return False

    @jit_compile.setter
    def jit_compile(self, value):
        pass

    def _backward(self, x, labels, training, scale):
        """Runs the forward pass and leaves every trainable variable's
        gradient of its own group's objective (of `scale(loss)`) in
        `variable.value.grad`. Returns `(total, results)`."""
        # As Keras' trainer clears leftover gradients with `self.zero_grad()`,
        # but over exactly the variables whose `.grad` is read afterwards:
        # `backward()` adds to `.grad`, so a stale one would go into the step.
        for variable in self.trainable_variables:
            variable.value.grad = None
        if self.rule.top_down:
            # A block's loss is complete only after the error signal from
            # above has come down, so all groups' graphs are needed at
            # once. Groups are detached from each other, so one backward
            # of the total gives each variable its own group's gradient.
            total, results = self.local_objective(x, labels, training)
            scale(total).backward()
            return total.detach(), results
        total, results = 0.0, []
        for group in self.trained_groups():
            # `run_group` detaches its input: this backward stops at the
            # group boundary and frees only this group's graph.
            x, group_results, loss = self.run_group(group, x, labels, training)
            if torch.is_tensor(loss) and loss.requires_grad:
                scale(loss).backward()
            results += group_results
            total = total + _detached(loss)
        return total, results

    def _collect_gradients(self):
        # A variable its group's loss does not reach keeps `.grad = None`;
        # it gets a zero gradient, as on TensorFlow and JAX, so that all
        # backends apply the same update (Adam still decays its moments).
        return [
            torch.zeros_like(v.value) if v.value.grad is None else v.value.grad
            for v in self.trainable_variables
        ]

    def compute_gradients(self, x, labels, training=True):
        """Gradients of every trainable variable (aligned to
        `self.trainable_variables`), unscaled, without changing the model's
        state: the non-trainable variables a training-mode forward pass
        updates (BatchNorm statistics, seed generators' states) are restored
        and no `.grad` is left on the variables. (Dropout without a seed
        draws from torch's global generator, which is not the model's.)
        Returns `(grads, total, results)`.
        """
        saved = [torch.clone(v.value) for v in self.non_trainable_variables]
        try:
            total, results = self._backward(x, labels, training, scale=lambda loss: loss)
            grads = self._collect_gradients()
        finally:
            for variable in self.trainable_variables:
                variable.value.grad = None
            for variable, value in zip(self.non_trainable_variables, saved):
                variable.assign(value)
        return grads, total, results

    def train_step(self, data):
        x, labels = self.unpack(data)
        # `scale_loss` multiplies by a `LossScaleOptimizer`'s scale (which
        # `apply` divides out again); other optimizers return the loss as is.
        total, results = self._backward(
            self.augment(x), labels, training=True, scale=self.optimizer.scale_loss
        )
        with torch.no_grad():
            self.optimizer.apply(self._collect_gradients(), self.trainable_variables)
            # The metrics need no graph; `results` may still hold the tensors
            # of the last group's forward pass.
            return self.update_metrics(total, results, labels)

    def test_step(self, data):
        # Keras' torch trainer already runs `test_step` under `torch.no_grad()`.
        x, labels = self.unpack(data)
        total, results = self.local_objective(x, labels, training=False)
        return self.update_metrics(total, results, labels)


def _detached(loss):
    return loss.detach() if torch.is_tensor(loss) else loss
