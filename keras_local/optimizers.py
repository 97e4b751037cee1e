"""PyTorch's Adam and SGD as Keras optimizers.

The reference code (anokland/local-loss) trains with `torch.optim.Adam` and
`torch.optim.SGD`. Keras' own optimizers are not the same functions:

- Keras' `Adam` folds both bias corrections into the learning rate and adds
  `epsilon` to `sqrt(v)`, so its effective epsilon is
  `epsilon / sqrt(1 - beta_2**t)` (3.2e-7 instead of 1e-8 at the first step
  with PyTorch's defaults); PyTorch adds `eps` to the bias-corrected
  `sqrt(v_hat)`. The two differ wherever `sqrt(v_hat)` is not far above eps.
- Keras' `SGD` keeps `-learning_rate * gradient` in its momentum buffer;
  PyTorch keeps the gradient alone and multiplies by the learning rate when
  it steps, so the two differ after every change of the learning rate (and
  PyTorch has `dampening` and starts the buffer at the first gradient).
- Keras' `weight_decay` is decoupled (AdamW-style: `w -= lr * wd * w`);
  PyTorch's `weight_decay` of `Adam` and `SGD` is an L2 term added to the
  gradient before the moments.

`TorchAdam` and `TorchSGD` compute PyTorch's updates (torch/optim/adam.py
and sgd.py, the single-tensor code path) with `keras.ops` on every backend.
`make` builds an optimizer by its name in `OPTIMIZERS` (a run's setting).
"""

import math
import numbers

import keras
from keras import ops

__all__ = ["OPTIMIZERS", "TorchAdam", "TorchSGD", "make"]

#: The optimizers `make` builds: Keras' Adam with the reference code's
#: epsilon, and PyTorch's Adam and SGD.
OPTIMIZERS = ("adam", "pytorch-adam", "pytorch-sgd")


def _check_non_negative(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"`{name}` must be a number >= 0. Received: {name}={value!r}")
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")


def _check_learning_rate(learning_rate):
    """A number must be >= 0; a schedule or callable is checked by Keras."""
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
        _check_non_negative("learning_rate", learning_rate)


def _check_beta(name, value):
    if not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")


def _one_minus_power(beta, step):
    """`1 - beta**step` accurate to float32 rounding (PyTorch computes it in
    Python's double precision): `-expm1(step * log(beta))` with `log(beta)`
    taken in double precision. Computing `1 - 0.999**1` in float32 would be
    1.3e-5 off in relative terms."""
    if beta == 0.0:
        return ops.ones_like(step)
    return ops.negative(ops.expm1(ops.multiply(step, math.log(beta))))


def _coupled_gradient(optimizer, gradient, variable):
    """The gradient in the variable's dtype (float32 variables under the
    mixed policies), plus PyTorch's L2 term `weight_decay * variable`
    unless `optimizer.exclude_from_weight_decay` excludes the variable."""
    gradient = ops.cast(gradient, variable.dtype)
    weight_decay = optimizer.coupled_weight_decay
    if weight_decay and optimizer._use_weight_decay(variable):
        gradient = ops.add(gradient, ops.multiply(variable, weight_decay))
    return gradient


@keras.saving.register_keras_serializable(package="keras_local")
class TorchAdam(keras.optimizers.Optimizer):
    """Adam exactly as `torch.optim.Adam` computes it.

    For each variable `p` with gradient `g` at step `t` (1 at the first
    update):

    ```python
    g = g + weight_decay * p                       # PyTorch's coupled L2
    m = beta_1 * m + (1 - beta_1) * g
    v = beta_2 * v + (1 - beta_2) * g**2
    v_max = maximum(v_max, v)                      # amsgrad only, then v = v_max
    denom = sqrt(v) / sqrt(1 - beta_2**t) + epsilon
    p = p - learning_rate / (1 - beta_1**t) * m / denom
    ```

    Unlike `keras.optimizers.Adam`, `epsilon` is added to the bias-corrected
    `sqrt(v_hat)` (Keras adds it before the bias correction, which makes its
    epsilon `1 / sqrt(1 - beta_2**t)` times larger), and `weight_decay` is
    the L2 term added to the gradient, not Keras' decoupled decay. The
    defaults are PyTorch's (`epsilon=1e-8`).

    The step `t` is the optimizer's `iterations + 1`; under a
    `keras.optimizers.LossScaleOptimizer` (the `mixed_float16` policy) a step
    with non-finite gradients is skipped and not counted, as PyTorch's
    `GradScaler` skips it.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the rate. Defaults
            to `0.001`.
        beta_1: The decay rate of the first moment, in [0, 1). Defaults to
            `0.9`.
        beta_2: The decay rate of the second moment, in [0, 1). Defaults to
            `0.999`.
        epsilon: Added to the bias-corrected root of the second moment.
            Defaults to `1e-8`, PyTorch's `eps`.
        weight_decay: PyTorch's (coupled) L2 coefficient: `weight_decay * p`
            is added to the gradient before the moments. Defaults to `0.0`.
        amsgrad: Use the maximum of all second moments so far (PyTorch's
            `amsgrad`). Defaults to `False`.
        **kwargs: The base optimizer's arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`, `name`). Keras' decoupled weight
            decay is not available here; `exclude_from_weight_decay()`
            exempts variables from the coupled one.

    Example:

    >>> from keras_local import zoo
    >>> from keras_local.optimizers import TorchAdam
    >>> model = zoo.mlp(rule="predsim", input_shape=(28, 28, 1))
    >>> model.compile(optimizer=TorchAdam(5e-4))
    >>> model.fit(x_train, y_train, epochs=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        **kwargs,
    ):
        _check_learning_rate(learning_rate)
        _check_beta("beta_1", beta_1)
        _check_beta("beta_2", beta_2)
        _check_non_negative("epsilon", epsilon)
        _check_non_negative("weight_decay", weight_decay)
        # Keras' `weight_decay` (decoupled) stays None: the base class must
        # not decay the variables itself.
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.coupled_weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)

    def build(self, var_list):
        """Creates PyTorch's state for each variable: `exp_avg` and
        `exp_avg_sq`, and `max_exp_avg_sq` with `amsgrad`."""
        if self.built:
            return
        super().build(var_list)
        self._exp_avgs, self._exp_avg_sqs = self.add_optimizer_variables(
            var_list, ["exp_avg", "exp_avg_sq"]
        )
        if self.amsgrad:
            self._max_exp_avg_sqs = self.add_optimizer_variables(var_list, "max_exp_avg_sq")

    def update_step(self, gradient, variable, learning_rate):
        """One PyTorch Adam update of `variable`."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = _coupled_gradient(self, gradient, variable)
        step = ops.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        exp_avg = self._exp_avgs[index]
        exp_avg_sq = self._exp_avg_sqs[index]

        self.assign_add(exp_avg, ops.multiply(ops.subtract(gradient, exp_avg), 1.0 - self.beta_1))
        self.assign(
            exp_avg_sq,
            ops.add(
                ops.multiply(exp_avg_sq, self.beta_2),
                ops.multiply(ops.square(gradient), 1.0 - self.beta_2),
            ),
        )
        second = exp_avg_sq
        if self.amsgrad:
            second = self._max_exp_avg_sqs[index]
            self.assign(second, ops.maximum(second, exp_avg_sq))

        step_size = ops.divide(lr, _one_minus_power(self.beta_1, step))
        bias_correction2_sqrt = ops.sqrt(_one_minus_power(self.beta_2, step))
        denom = ops.add(ops.divide(ops.sqrt(second), bias_correction2_sqrt), self.epsilon)
        self.assign_sub(variable, ops.multiply(step_size, ops.divide(exp_avg, denom)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "weight_decay": self.coupled_weight_decay,
                "amsgrad": self.amsgrad,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_local")
class TorchSGD(keras.optimizers.Optimizer):
    """Stochastic gradient descent exactly as `torch.optim.SGD` computes it.

    For each variable `p` with gradient `g`:

    ```python
    g = g + weight_decay * p                       # PyTorch's coupled L2
    if momentum:
        buf = g if first step else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    p = p - learning_rate * g
    ```

    Unlike `keras.optimizers.SGD`, the momentum buffer holds gradients, not
    `-learning_rate * gradient`: a change of the learning rate applies at
    once to the whole step, as in PyTorch, instead of only to the newest
    gradient. The first update (`iterations == 0`) starts the buffer at the
    gradient. A variable that gets its first gradient only after the first
    step starts from a zero buffer (PyTorch starts it at that gradient), which
    differs only when `dampening` is not 0.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the rate. Defaults
            to `0.01`.
        momentum: Momentum factor, >= 0. Defaults to `0.0`.
        dampening: Dampening of the momentum: new gradients enter the buffer
            times `1 - dampening`. Defaults to `0.0`.
        nesterov: Nesterov momentum; needs `momentum > 0` and
            `dampening == 0`, as in PyTorch. Defaults to `False`.
        weight_decay: PyTorch's (coupled) L2 coefficient: `weight_decay * p`
            is added to the gradient. Defaults to `0.0`.
        **kwargs: The base optimizer's arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`, `name`). Keras' decoupled weight
            decay is not available here; `exclude_from_weight_decay()`
            exempts variables from the coupled one.

    Example:

    >>> from keras_local import zoo
    >>> from keras_local.optimizers import TorchSGD
    >>> from keras_local.schedules import StepDecay
    >>> model = zoo.mlp(rule="predsim", input_shape=(28, 28, 1))
    >>> model.compile(optimizer=TorchSGD(0.1, momentum=0.9))
    >>> model.fit(x_train, y_train, epochs=100,
    ...           callbacks=[StepDecay(0.1, epochs=100)])  # doctest: +SKIP
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        dampening=0.0,
        nesterov=False,
        weight_decay=0.0,
        **kwargs,
    ):
        _check_learning_rate(learning_rate)
        _check_non_negative("momentum", momentum)
        if not isinstance(dampening, numbers.Real) or isinstance(dampening, bool):
            raise ValueError(f"`dampening` must be a number. Received: dampening={dampening!r}")
        _check_non_negative("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening "
                f"(as in torch.optim.SGD). Received: momentum={momentum}, "
                f"dampening={dampening}"
            )
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.coupled_weight_decay = float(weight_decay)

    def build(self, var_list):
        """Creates PyTorch's `momentum_buffer` for each variable (none
        without momentum)."""
        if self.built:
            return
        super().build(var_list)
        self._momentum_buffers = []
        if self.momentum != 0:
            self._momentum_buffers = self.add_optimizer_variables(var_list, "momentum_buffer")

    def update_step(self, gradient, variable, learning_rate):
        """One PyTorch SGD update of `variable`."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = _coupled_gradient(self, gradient, variable)
        if self.momentum != 0:
            buf = self._momentum_buffers[self._get_variable_index(variable)]
            accumulated = ops.add(
                ops.multiply(buf, self.momentum), ops.multiply(gradient, 1.0 - self.dampening)
            )
            new_buf = ops.where(ops.equal(self.iterations, 0), gradient, accumulated)
            self.assign(buf, new_buf)
            if self.nesterov:
                gradient = ops.add(gradient, ops.multiply(new_buf, self.momentum))
            else:
                gradient = new_buf
        self.assign_sub(variable, ops.multiply(gradient, lr))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "dampening": self.dampening,
                "nesterov": self.nesterov,
                "weight_decay": self.coupled_weight_decay,
            }
        )
        return config


def make(name, learning_rate, weight_decay=0.0, momentum=0.0, nesterov=False):
    """The optimizer named `name` (one of `OPTIMIZERS`).

    `"adam"` is `keras.optimizers.Adam(learning_rate, epsilon=1e-8)` (Keras'
    formula, the package's default); `"pytorch-adam"` is `TorchAdam` and
    `"pytorch-sgd"` `TorchSGD`. `weight_decay` (PyTorch's coupled L2) is for
    the `pytorch-*` optimizers only, `momentum` and `nesterov` for
    `pytorch-sgd` only: elsewhere a value other than the default raises.

    Example:

    >>> make("pytorch-sgd", 0.1, momentum=0.9, nesterov=True).get_config()["nesterov"]
    True
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}.")
    if weight_decay and name == "adam":
        raise ValueError("weight_decay is for optimizer pytorch-adam or pytorch-sgd.")
    if (momentum or nesterov) and name != "pytorch-sgd":
        raise ValueError("momentum and nesterov are settings of optimizer pytorch-sgd.")
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, epsilon=1e-8)
    if name == "pytorch-adam":
        return TorchAdam(learning_rate, weight_decay=weight_decay)
    return TorchSGD(learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
