"""What a feedback-alignment layer sends its input gradient through.

`FeedbackAlignmentDense` and `FeedbackAlignmentConv2D` compute `x W + b` (or
the convolution) and give `W` and `b` their true gradients; only the input
gradient changes: it goes through a feedback matrix `B` of the kernel's shape
instead of through `W`. `feedback` says what `B` is:

- `"random"`: fixed random (feedback alignment, Lillicrap et al. 2016);
- `"usf"`: `sign(W) * s`, uniform sign-concordant feedback (Liao, Leibo &
  Poggio 2016), `s = 1/sqrt(3 fan_in)` the standard deviation of PyTorch's
  default initialisation (as biotorch; Xiao et al. 2018), which keeps the
  error's scale that of the random feedbacks;
- `"brsf"`: `|R| * sign(W)`, batchwise random magnitudes: `|R|` drawn anew
  every training step, `R ~ U(+-1/sqrt(fan_in))` (PyTorch's default);
- `"frsf"`: `|R| * sign(W)`, fixed random magnitudes: `R` drawn once
  (`feedback_initializer`) and saved;
- `"kolen-pollack"`: `B` is trained by the rule of Kolen & Pollack (1994)
  (Akrout et al. 2019): it gets the same gradient as `W` (`x^T g`, so the
  optimizer gives it the same update as `W` whatever the optimizer) and
  both decay by `(1 - decay)` after every optimizer step, so `B - W`
  shrinks by `(1 - decay)` each step and `B` converges to `W`.

The sign feedbacks follow `W`'s sign as `W` trains. `B` is stored with the
kernel's shape (in, out), so the input receives `g @ B^T` as it would
receive `g @ W^T`: `B = W` is backprop.
"""

import math
import numbers

import keras
from keras import ops

from keras_local.layers.initializers import kernel_initializer

#: The feedbacks of the feedback-alignment layers.
FEEDBACKS = ("random", "usf", "brsf", "frsf", "kolen-pollack")
#: The sign-concordant ones: `B` has `W`'s signs.
SIGN_FEEDBACKS = ("usf", "brsf", "frsf")


@keras.saving.register_keras_serializable(package="keras_local")
class StepDecay(keras.constraints.Constraint):
    """Multiplies a variable by `1 - rate`; as a variable's constraint the
    optimizer applies it after every step (decoupled weight decay that does
    not follow the learning rate)."""

    def __init__(self, rate):
        self.rate = float(rate)

    def __call__(self, w):
        return w * ops.cast(1.0 - self.rate, w.dtype)

    def get_config(self):
        return {"rate": self.rate}


def check_feedback(feedback, decay):
    """`(feedback, decay)` checked; `ValueError` naming what is wrong."""
    if feedback not in FEEDBACKS:
        raise ValueError(f"feedback must be one of {FEEDBACKS}, got {feedback!r}.")
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay < 1:
        raise ValueError(f"decay must be a number in [0, 1), got {decay!r}.")
    if decay and feedback != "kolen-pollack":
        raise ValueError(
            f"decay applies to feedback='kolen-pollack' only, not {feedback!r}."
        )
    return feedback, float(decay)


class FeedbackMixin:
    """The feedback matrix of a feedback-alignment layer (see the module)."""

    def _init_feedback(self, feedback, decay, seed):
        self.feedback, self.decay = check_feedback(feedback, decay)
        self.seed = seed
        if feedback == "brsf":
            self.seed_generator = keras.random.SeedGenerator(seed)

    def _kernel_constraint(self):
        return StepDecay(self.decay) if self.feedback == "kolen-pollack" and self.decay else None

    def _build_feedback(self, shape, fan_in):
        """Creates `feedback_kernel` where the feedback stores one: the fixed
        matrix (`random`), the fixed magnitudes (`frsf`, `|R|` used) or the
        trained matrix (`kolen-pollack`); `None` for `usf` and `brsf`."""
        self.fan_in = fan_in
        self.feedback_scale = 1.0 / math.sqrt(3.0 * fan_in)
        self.feedback_kernel = None
        if self.feedback in ("usf", "brsf"):
            return
        self.feedback_kernel = self.add_weight(
            shape=shape,
            initializer=kernel_initializer(self.feedback_initializer),
            trainable=self.feedback == "kolen-pollack",
            constraint=self._kernel_constraint(),
            name="feedback_kernel",
        )

    def feedback_weights(self, training=None):
        """The matrix `B` the input gradient goes through (the kernel's
        shape), as the next call computes it: for `brsf` a fresh draw
        (unless `training` is False, then its expected magnitudes)."""
        kernel = self.kernel
        if self.feedback in ("random", "kolen-pollack"):
            return self.feedback_kernel
        sign = ops.sign(ops.stop_gradient(kernel))
        if self.feedback == "usf":
            return sign * ops.cast(self.feedback_scale, sign.dtype)
        if self.feedback == "frsf":
            return ops.abs(ops.cast(self.feedback_kernel, sign.dtype)) * sign
        bound = 1.0 / math.sqrt(self.fan_in)
        if training is False:
            # No gradient is taken: the draw's mean, without random ops.
            return sign * ops.cast(bound / 2, sign.dtype)
        magnitude = keras.random.uniform(
            ops.shape(kernel), minval=0.0, maxval=bound, dtype=sign.dtype,
            seed=self.seed_generator,
        )
        return magnitude * sign

    def _feedback_config(self):
        config = {"feedback": self.feedback}
        if self.decay:
            config["decay"] = self.decay
        if self.seed is not None:
            config["seed"] = self.seed
        return config
