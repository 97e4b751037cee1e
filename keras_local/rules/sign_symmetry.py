"""The feedback rules that local-learning papers compare against, beside
feedback alignment: the output error travels down layer by layer, as in
backprop, but every weighted layer sends it to its input through a feedback
matrix `B` other than its transposed kernel.

- `sign-symmetry` (Liao, Leibo & Poggio 2016, "How important is weight
  symmetry in backpropagation?"; as `jsalbert/biotorch` implements them):
  `B` has the signs of `W`, and follows them as `W` trains. `variant`:
  `"usf"` (uniform: `sign(W)`, scaled by the standard deviation of the
  kernel's initialisation), `"brsf"` (batchwise random magnitudes:
  `|R| * sign(W)`, `R` drawn anew every step) or `"frsf"` (fixed random
  magnitudes: `R` drawn once).
- `kolen-pollack` (Kolen & Pollack 1994; Akrout et al. 2019, "Deep learning
  without weight transport"): `B` starts random and receives the same update
  as `W` (the same gradient `x^T delta` from the layer's input and its
  backward error) plus the same weight decay, so `B` converges to `W` (to
  `W^T` in the papers' `(out, in)` convention).

See `keras_local.layers.feedback` for what each layer computes.
"""

import numbers

from keras_local.rules.base import Rule
from keras_local.rules.feedback_alignment import require_feedback_request
from keras_local.rules.registry import register


class FeedbackRule(Rule):
    """A rule that asks every block, and the output layer, for one feedback
    of the feedback-alignment layers (`feedback` and `feedback_options`);
    otherwise backprop (no objectives, blocks not detached)."""

    detach_blocks = False
    default_activation = "relu"
    output_kernel_initializer = "torch"
    feedback = None

    @property
    def feedback_options(self):
        return {}

    @property
    def output_feedback(self):
        return self.feedback

    @property
    def output_feedback_options(self):
        return self.feedback_options

    def prepare_block(self, block):
        require_feedback_request(self, block)
        block.request_feedback(self.feedback, by=self.name, **self.feedback_options)


@register
class SignSymmetry(FeedbackRule):
    """Sign-concordant feedback (Liao, Leibo & Poggio 2016): every weighted
    layer sends the error to its input through a matrix with its kernel's
    signs.

    Args:
        variant: `"usf"` (uniform: `sign(W) / sqrt(3 fan_in)`), `"brsf"`
            (`|R| * sign(W)`, `R ~ U(+-1/sqrt(fan_in))` drawn every step) or
            `"frsf"` (the same with `R` drawn once).
    """

    name = "sign-symmetry"
    VARIANTS = ("usf", "brsf", "frsf")

    def __init__(self, variant="usf"):
        if variant not in self.VARIANTS:
            raise ValueError(
                f"variant must be one of {', '.join(map(repr, self.VARIANTS))}, got {variant!r}."
            )
        self.variant = variant

    @property
    def feedback(self):
        return self.variant

    def get_config(self):
        return {"variant": self.variant}


@register
class KolenPollack(FeedbackRule):
    """Kolen-Pollack learning (Kolen & Pollack 1994; Akrout et al. 2019):
    every weighted layer's feedback matrix `B` gets the kernel's gradient,
    so the optimizer moves both alike, and both decay by `(1 - decay)`
    after every optimizer step, so `B - W` shrinks by that factor each step.

    Args:
        decay: the weight decay of kernels and feedback matrices, per
            optimizer step (not scaled by the learning rate); in [0, 1).
            With `decay=0` the difference `B - W` keeps its initial value.
    """

    name = "kolen-pollack"
    feedback = "kolen-pollack"

    def __init__(self, decay=1e-4):
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay < 1:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}.")
        self.decay = float(decay)

    @property
    def feedback_options(self):
        return {"decay": self.decay}

    def get_config(self):
        return {"decay": self.decay}
