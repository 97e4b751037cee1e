"""The papers' learning-rate schedule."""

import keras

#: Fractions of training at which Nøkland & Eidnes (2019) multiply the
#: learning rate by 0.25 ("at 50%, 75%, 89% and 94% of the total training").
PAPER_FRACTIONS = (0.5, 0.75, 0.89, 0.94)


def paper_milestones(epochs, fractions=PAPER_FRACTIONS):
    """Epochs (0-based, counted as finished epochs) where the rate drops.

    `round(f * epochs)` for each fraction: 50, 75, 89, 94 for 100 epochs.
    Recipes give the reference scripts' own milestones explicitly
    (docs/papers.md).
    """
    return sorted({max(1, round(f * epochs)) for f in fractions})


def step_decay(epoch, base_learning_rate, milestones, factor=0.25):
    """The learning rate of (0-based) `epoch`: the base rate times `factor`
    for every milestone already reached."""
    return base_learning_rate * factor ** sum(1 for m in milestones if m <= epoch)


class StepDecay(keras.callbacks.LearningRateScheduler):
    """Multiplies the learning rate by `factor` at each milestone epoch.

    Args:
        base_learning_rate: the initial rate.
        epochs: total epochs; gives the paper's milestones when `milestones`
            is `None`.
        milestones: epochs at which the rate drops (epoch `m` and later run
            at the lower rate; epochs count from 0).
        factor: multiplier per milestone, 0.25 in the paper.
        verbose: print each change.

    Example:

    >>> schedule = StepDecay(5e-4, epochs=100)
    >>> schedule.milestones
    [50, 75, 89, 94]
    >>> model.fit(x, y, epochs=100, callbacks=[schedule])  # doctest: +SKIP
    """

    def __init__(
        self, base_learning_rate, epochs=None, milestones=None, factor=0.25, verbose=0
    ):
        if milestones is None:
            if epochs is None:
                raise ValueError("StepDecay needs `epochs` or `milestones`.")
            milestones = paper_milestones(epochs)
        self.base_learning_rate = float(base_learning_rate)
        self.milestones = sorted(int(m) for m in milestones)
        self.factor = factor
        super().__init__(self._rate, verbose=verbose)

    def _rate(self, epoch, learning_rate=None):
        return step_decay(epoch, self.base_learning_rate, self.milestones, self.factor)
