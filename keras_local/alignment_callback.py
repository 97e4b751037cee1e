"""`AlignmentLogger`: the angles of `keras_local.alignment` during training."""

import keras

from keras_local.alignment import alignment
from keras_local.optional import require


class AlignmentLogger(keras.callbacks.Callback):
    """Measures `keras_local.analysis.alignment` on a fixed batch every
    `every_n_steps` training steps.

    Each measurement is kept in `records` (a list of `(step, AlignmentResult)`,
    `step` counting the training steps of every `fit` call), its angles are
    added to the logs of the step it was made at (`block1_update_angle`,
    `output_update_angle`, `block1_feedback_angle`, ...; degrees) and the
    latest ones to every epoch's logs, so they reach `fit`'s `History`.
    With `log_dir`, each angle is also written as a TensorBoard scalar
    (`alignment/block1_update_angle`, ...) at its step, with `tensorboard`'s
    own event writer, which needs no TensorFlow (it works on JAX and torch
    too; `pip install tensorboard`, or the `tune` extra).

    A measurement costs about two training steps on the batch (the rule's
    gradients and the backprop gradients), in eager mode.

    Args:
        x, y: the batch, e.g. 256 test examples and their integer labels.
        every_n_steps: steps between measurements (the first after
            `every_n_steps` steps).
        log_dir: a directory for TensorBoard event files, or `None`.
        batch_size: as for `alignment` (`None`: `x` as one batch).

    Example:

    >>> logger = AlignmentLogger(x_test[:256], y_test[:256], every_n_steps=100)
    >>> history = model.fit(x, y, callbacks=[logger])  # doctest: +SKIP
    >>> history.history["block3_update_angle"]  # doctest: +SKIP
    """

    def __init__(self, x, y, every_n_steps=100, log_dir=None, batch_size=None):
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int):
            raise ValueError(f"every_n_steps must be a positive int, got {every_n_steps!r}.")
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive int, got {every_n_steps!r}.")
        self.x, self.y = x, y
        self.every_n_steps = every_n_steps
        self.log_dir = log_dir
        self.batch_size = batch_size
        self.records = []
        self.step = 0
        self._writer = None
        if log_dir is not None:
            summary = require("tensorboard.summary", feature="AlignmentLogger(log_dir=...)")
            self._writer_class = summary.Writer

    @property
    def latest(self):
        """The last `AlignmentResult`, or `None` before the first."""
        return self.records[-1][1] if self.records else None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every_n_steps:
            return
        result = alignment(self.model, self.x, self.y, batch_size=self.batch_size)
        self.records.append((self.step, result))
        if logs is not None:
            logs.update(result.as_logs())
        if self.log_dir is not None:
            self._write(result)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.latest is not None:
            logs.update(self.latest.as_logs())

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, result):
        if self._writer is None:
            self._writer = self._writer_class(self.log_dir)
        for key, value in result.as_logs().items():
            self._writer.add_scalar(f"alignment/{key}", value, step=self.step)
        self._writer.flush()
