"""Callbacks that report what the local rules are doing, block by block."""

import math
import re

import keras

from keras_local.alignment_callback import AlignmentLogger  # noqa: F401 - re-exported

#: A block's metric in the logs of a `LocalModel`: `block3_sim_loss`,
#: `block3_pred_accuracy`. Groups: block index, part, kind.
BLOCK_METRIC = re.compile(r"^block(\d+)_(\w+)_(loss|accuracy)$")

#: The splits `BlockReport` shows: (column title, log key prefix).
DEFAULT_SPLITS = (("train", ""), ("test", "val_"))


def block_metrics(logs, prefix=""):
    """Groups the per-block entries of Keras logs by block.

    Args:
        logs: a logs dict (`fit`'s epoch logs, `evaluate(return_dict=True)`).
        prefix: only keys with this prefix are read (`"val_"` for validation),
            and it is stripped.

    Returns:
        `{block_index: {"<part>_<kind>": value}}`, blocks in increasing order,
        e.g. `{1: {"pred_loss": 2.26, "sim_loss": 0.16, "pred_accuracy": 0.22}}`.
        Values are Python floats.
    """
    blocks = {}
    for key, value in logs.items():
        if not key.startswith(prefix):
            continue
        match = BLOCK_METRIC.match(key[len(prefix) :])
        if match is None:
            continue
        index, part, kind = match.groups()
        blocks.setdefault(int(index), {})[f"{part}_{kind}"] = float(value)
    return dict(sorted(blocks.items()))


def _parts(logs, splits):
    """The loss parts and accuracy parts that occur in any block of any split,
    in order of first appearance (`["pred", "sim"]`, `["pred"]`)."""
    losses, accuracies = [], []
    for _, prefix in splits:
        for metrics in block_metrics(logs, prefix).values():
            for name in metrics:
                part, kind = name.rsplit("_", 1)
                found = losses if kind == "loss" else accuracies
                if part not in found:
                    found.append(part)
    return losses, accuracies


def _has_split(logs, prefix):
    """Whether `logs` has metrics of the split whose keys start with `prefix`."""
    if prefix:
        keys = [key[len(prefix) :] for key in logs if key.startswith(prefix)]
    else:
        keys = [key for key in logs if not key.startswith("val_")]
    return any(
        key in ("accuracy", "output_loss") or BLOCK_METRIC.match(key) for key in keys
    )


def format_block_table(logs, splits=DEFAULT_SPLITS):
    """Formats the per-block losses and accuracies of `logs` as a table.

    One row per block and one for the output layer; for each split present in
    `logs`, one column per local loss part (`pred loss`, `sim loss`, ...),
    the output layer's loss, and the accuracy of the block's local classifier
    (the output layer's accuracy in the `output` row). Accuracies are in
    percent; `-` marks a value the row does not have (e.g. the similarity
    loss of the output layer, or the accuracy of a block without a
    classifier).

    Args:
        logs: a logs dict with `LocalModel`'s metric names.
        splits: `(title, key prefix)` pairs, e.g. `(("train", ""),
            ("test", "val_"))`; splits without any key in `logs` are left out.

    Returns:
        The table as a list of lines (no trailing newlines).
    """
    splits = [(title, prefix) for title, prefix in splits if _has_split(logs, prefix)]
    if not splits:
        return []
    loss_parts, accuracy_parts = _parts(logs, splits)
    # The output layer reports its accuracy in the (first) accuracy column.
    accuracy_parts = accuracy_parts or ["pred"]
    columns = [(f"{part} loss", part, "loss") for part in loss_parts]
    columns.append(("output loss", "output", "loss"))
    for part in accuracy_parts:
        title = "accuracy" if len(accuracy_parts) == 1 else f"{part} accuracy"
        columns.append((title, part, "accuracy"))

    rows = {}  # row label -> {(split title, column title): text}
    for split, prefix in splits:
        for index, metrics in block_metrics(logs, prefix).items():
            row = rows.setdefault(f"block{index}", {})
            for title, part, kind in columns:
                value = metrics.get(f"{part}_{kind}")
                row[split, title] = _format(value, kind)
        row = rows.setdefault("output", {})
        row[split, "output loss"] = _format(logs.get(f"{prefix}output_loss"), "loss")
        accuracy_title = columns[len(loss_parts) + 1][0]
        row[split, accuracy_title] = _format(logs.get(f"{prefix}accuracy"), "accuracy")
    # Blocks first, in order, then the output layer.
    labels = [label for label in rows if label != "output"] + ["output"]

    label_width = max(len("layer"), *(len(label) for label in labels))
    widths = [max(len(title), 7) for title, _, _ in columns]
    split_width = sum(widths) + 2 * (len(widths) - 1)
    separator = "  |  "

    def line(label, cells):
        return (label.ljust(label_width) + separator + separator.join(cells)).rstrip()

    lines = [line("", [split.center(split_width) for split, _ in splits])]
    header = "  ".join(t.rjust(w) for (t, _, _), w in zip(columns, widths))
    lines.append(line("layer", [header] * len(splits)))
    for label in labels:
        cells = [
            "  ".join(
                rows[label].get((split, title), "-").rjust(width)
                for (title, _, _), width in zip(columns, widths)
            )
            for split, _ in splits
        ]
        lines.append(line(label, cells))
    return lines


def _format(value, kind):
    if value is None:
        return "-"
    if kind == "accuracy":
        return f"{100.0 * float(value):.2f}%"
    return f"{float(value):.4f}"


class BlockReport(keras.callbacks.Callback):
    """Prints a table of every block's local losses and accuracy each epoch.

    After every epoch it prints the epoch, the learning rate the epoch ran
    at, the summed objective (`loss`), and a table with a row per block and
    one for the output layer: each local loss part (e.g. `pred loss` and
    `sim loss` for predsim), the output layer's cross-entropy, and the
    accuracy of the block's local classifier (the network's accuracy in the
    `output` row), for the training data and, when `fit` has validation
    data, side by side for it:

    ```
    Epoch 2/20 - learning rate 1.25e-04 - loss 0.3068 (test 0.2963)
            |                    train                     |  test ...
    layer   |  pred loss  sim loss  output loss  accuracy  |  ...
    block1  |     1.4072    0.0920            -    62.35%  |  ...
    block2  |     1.3346    0.0840            -    66.45%  |  ...
    block3  |     1.2940    0.0800            -    68.55%  |  ...
    output  |          -         -       1.2947    68.20%  |  ...
    ```

    The block and part names come from the log keys
    (`block<i>_<part>_loss`, `block<i>_<part>_accuracy`), so the report works
    for any rule. Training accuracies are averages over the epoch, measured
    with dropout on and the weights changing, as Keras reports them.

    It reads the epoch's `logs` only. The learning rate comes from
    `logs["learning_rate"]` (set by `LearningRateScheduler`, e.g.
    `keras_local.schedules.StepDecay`, when it comes earlier in the callback
    list), else from the optimizer, once per epoch.

    Args:
        print_fn: called with each line of the report.
        validation_name: title of the validation columns; `"test"` when, as
            in the paper, the test set is the validation data.
    """

    def __init__(self, print_fn=print, validation_name="test"):
        super().__init__()
        self.print_fn = print_fn
        self.validation_name = validation_name

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for line in self.report(epoch, logs):
            self.print_fn(line)

    def report(self, epoch, logs):
        """The lines printed at the end of (0-based) `epoch`."""
        splits = (("train", ""), (self.validation_name, "val_"))
        return [self._headline(epoch, logs), *format_block_table(logs, splits)]

    def _headline(self, epoch, logs):
        epochs = (self.params or {}).get("epochs")
        parts = [f"Epoch {epoch + 1}" + (f"/{epochs}" if epochs else "")]
        learning_rate = logs.get("learning_rate")
        if learning_rate is None:
            learning_rate = self._optimizer_learning_rate()
        if learning_rate is not None:
            parts.append(f"learning rate {float(learning_rate):.2e}")
        if "loss" in logs:
            loss = f"loss {float(logs['loss']):.4f}"
            if "val_loss" in logs:
                loss += f" ({self.validation_name} {float(logs['val_loss']):.4f})"
            parts.append(loss)
        return " - ".join(parts)

    def _optimizer_learning_rate(self):
        # `self.model` syncs the whole model state on JAX: only once an epoch,
        # and only when the logs have no learning rate.
        if self._model is None:
            return None
        optimizer = getattr(self.model, "optimizer", None)
        try:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except (AttributeError, TypeError, ValueError):
            return None


class CompactProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, showing only the overall metrics.

    A `LocalModel` logs several metrics per block; Keras' own progress bar
    would show them all, in lines too long to redraw in place. This one shows
    `metrics` (and their `val_` counterparts) only; `BlockReport` shows the
    per-block ones after each epoch. Pass it in `fit`'s callbacks, before
    `BlockReport` so that an epoch's bar is finished before its table.

    Args:
        metrics: the log keys to show.
    """

    def __init__(self, metrics=("loss", "accuracy")):
        super().__init__()
        self.metrics = tuple(metrics)

    def _shown(self, logs):
        if logs is None:
            return None
        keys = [*self.metrics, *(f"val_{name}" for name in self.metrics)]
        return {key: logs[key] for key in keys if key in logs}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._shown(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._shown(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(self._shown(logs))


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss.

    Attributes:
        epoch: the epoch it happened in, from 1.
        step: the step within that epoch, from 1.
        loss: the loss value (`nan`, `inf` or `-inf`).
    """

    def __init__(self, epoch, step, loss):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(
            f"Training diverged: the loss became {loss} at epoch {epoch}, step {step}. "
            "Try a lower learning rate."
        )


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite by
    raising `DivergenceError`, which names the epoch and step.

    `LocalModel.fit` adds one unless the model's `stop_on_divergence` is
    `False` or the callbacks already hold one; Keras' own
    `TerminateOnNaN` only stops quietly, and the run then looks finished.

    Example:

    >>> model.fit(x, y, callbacks=[StopOnDivergence()])  # doctest: +SKIP
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise DivergenceError(self._epoch + 1, batch + 1, float(loss))
