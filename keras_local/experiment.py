"""One training run as in the paper: data, model, schedule, report, saved model.

`train` is the routine behind `keras-local train` and the recipes in `zoo/`:

>>> from keras_local import experiment
>>> result = experiment.train(model="mlp", rule="predsim", epochs=2,
...                           train_examples=2000)  # doctest: +SKIP
>>> result.test_error  # doctest: +SKIP
17.02
"""

import dataclasses
import datetime
import json
import math
import numbers
import os
import shutil
import time

import keras

from keras_local import data as data_lib
from keras_local import zoo
from keras_local.callbacks import BlockReport
from keras_local.callbacks import CompactProgbarLogger
from keras_local.callbacks import block_metrics
from keras_local.callbacks import format_block_table
from keras_local.schedules import StepDecay
from keras_local.schedules import paper_milestones

#: Where `train` saves models when no `output` is given.
DEFAULT_OUTPUT_DIR = "saved_models"


@dataclasses.dataclass
class ExperimentResult:
    """What `train` measured and where it saved the model.

    Attributes:
        test_error: the test error in percent after the last epoch (what the
            paper reports).
        test_accuracy: the output layer's test accuracy, in [0, 1].
        test_metrics: everything `evaluate` returned on the test set (`loss`,
            `accuracy`, `output_loss`, `block<i>_<part>_loss`, ...).
        train_metrics: the same on the training set, measured after training
            in inference mode (`None` without `layer_report`).
        block_metrics: the per-block part of `test_metrics`, as
            `{"block1": {"pred_loss": ..., "sim_loss": ...,
            "pred_accuracy": ...}, ...}`.
        history: per-epoch logs, `{name: [value per epoch]}`, including the
            validation (test set) metrics with the `val_` prefix and the
            learning rate; complete even when the run was resumed.
        epochs: the number of epochs trained.
        num_train_examples: training examples used.
        num_test_examples: test examples evaluated.
        wall_time_s: seconds for the whole run (loading, building, training,
            evaluating, saving).
        output: path of the saved `.keras` model.
        summary: path of the JSON summary (`<output>.json`).
        backend: the Keras backend that ran it.
        date: when the run finished, UTC, ISO 8601.
        parameters: the settings of the run (the arguments of `train`, with
            the milestones actually used).
    """

    test_error: float
    test_accuracy: float
    test_metrics: dict
    train_metrics: dict | None
    block_metrics: dict
    history: dict
    epochs: int
    num_train_examples: int
    num_test_examples: int
    wall_time_s: float
    output: str
    summary: str
    backend: str
    date: str
    parameters: dict

    def to_dict(self):
        """The result as JSON-serialisable Python objects."""
        return dataclasses.asdict(self)


def default_output(model, rule, dataset, rule_options=None):
    """`saved_models/<model>-<rule>[-<option>=<value>...]-<dataset>.keras`."""
    options = "".join(f"-{k}={v}" for k, v in sorted((rule_options or {}).items()))
    return os.path.join(DEFAULT_OUTPUT_DIR, f"{model}-{rule}{options}-{dataset}.keras")


def train(
    model="mlp",
    rule="predsim",
    dataset="fashion_mnist",
    epochs=1,
    batch_size=128,
    width=1,
    dropout=0.0,
    learning_rate=5e-4,
    beta=None,
    dim_in_decoder=None,
    activation=None,
    augment=True,
    cutout=None,
    milestones=None,
    train_examples=None,
    test_examples=None,
    seed=None,
    output=None,
    verbose=1,
    print_fn=print,
    rule_options=None,
    layer_report=True,
):
    """Trains a zoo model with a rule on a data set the way the paper did.

    Builds `zoo.get(model)` for the data set, trains it with Adam, the
    paper's step decay of the learning rate (x0.25 at each milestone) and the
    paper's training augmentation of the data set, evaluates on the test set
    after every epoch (the paper reports the last epoch's test error), and
    saves the model and a JSON summary.

    Every epoch ends with a `BlockReport` table of each block's local losses
    and accuracy. A `keras.callbacks.BackupAndRestore` backup is kept in
    `<output>.backup/` while training: if the run is interrupted, running it
    again with the same settings and output resumes after the last finished
    epoch. The backup is deleted when the run completes.

    Args:
        model: a model name, `keras_local.zoo.names()`.
        rule: a rule name, `keras_local.rules.names()`.
        dataset: a data set name, `keras_local.data.DATASETS`.
        epochs: epochs to train.
        batch_size: examples per step (also used to evaluate, since the
            similarity losses depend on the batch).
        width: multiplies the width of the model (conv filters of a VGG,
            units of an MLP).
        dropout: dropout rate after every hidden activation.
        learning_rate: Adam's initial learning rate.
        beta: predsim's weight of the similarity loss; only for rules that
            take it (`keras_local.rules.parameters(rule)`). `None`: the rule's
            default.
        dim_in_decoder: largest input size of the local classifiers of conv
            blocks; only for rules that take it. `None`: the rule's default.
        rule_options: the rule's other parameters, e.g.
            `{"feedback": "scfb"}` for `random-classifier`
            (`keras_local.rules.parameters(rule)` lists them).
        layer_report: after training, also evaluate on the training set (in
            inference mode, as Mostafa et al. 2018 report it) and print every
            layer's local classifier accuracy on the training and test sets;
            stored as `train_metrics` in the summary.
        activation: hidden activation; `None`: the rule's default.
        augment: whether to use the paper's training augmentation of the data
            set (`keras_local.data.augmentation`, e.g. 2-pixel jitter and
            horizontal flips for Fashion-MNIST).
        cutout: cutout hole length in pixels, `True` for the paper's length
            for the data set, `None` for no cutout. Needs `augment`.
        milestones: epochs after which the learning rate is multiplied by
            0.25; `None` for the paper's 50%, 75%, 89% and 94% of `epochs`.
        train_examples: use only the first `train_examples` training
            examples (quick runs); `None` for all.
        test_examples: evaluate on the first `test_examples` test examples
            only; `None` for all.
        seed: seeds Python, NumPy and the backend
            (`keras.utils.set_random_seed`) and the augmentation; `None`:
            not seeded.
        output: where to save the model, a path ending in `.keras`; default
            `saved_models/<model>-<rule>-<dataset>.keras`. The summary goes
            to `<output>.json`.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch; with 1 and
            2 the block table and the final test results are printed too.
        print_fn: receives every line this function prints.

    Returns:
        An `ExperimentResult`.

    Raises:
        ValueError: for an unknown model, rule or data set, a parameter the
            rule does not take, or an invalid setting; the message names the
            problem and the valid choices.
    """
    start = time.perf_counter()
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_optional_positive_int("train_examples", train_examples)
    _check_optional_positive_int("test_examples", test_examples)
    _check_optional_positive_int("seed", seed, allow_zero=True)
    if isinstance(learning_rate, bool) or not (
        isinstance(learning_rate, numbers.Real)
        and math.isfinite(learning_rate)
        and learning_rate > 0
    ):
        raise ValueError(
            f"learning_rate must be a positive number, got {learning_rate!r}."
        )
    milestones = _resolve_milestones(milestones, epochs)
    if cutout not in (None, False) and not augment:
        raise ValueError(
            "cutout is part of the training augmentation; it cannot be used "
            "with augment=False (--no-augment)."
        )
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
    rule_options = dict(rule_options or {})
    output = (
        str(output)
        if output is not None
        else default_output(model, rule, dataset, rule_options)
    )
    if not output.endswith(".keras"):
        raise ValueError(
            f"The output path must end in '.keras' (the Keras model format), "
            f"got {output!r}."
        )
    say = print_fn if verbose else (lambda *args, **kwargs: None)

    parameters = dict(
        model=model,
        rule=rule,
        dataset=dataset,
        epochs=epochs,
        batch_size=batch_size,
        width=width,
        dropout=dropout,
        learning_rate=learning_rate,
        beta=beta,
        dim_in_decoder=dim_in_decoder,
        activation=activation,
        augment=augment,
        cutout=cutout,
        milestones=milestones,
        train_examples=train_examples,
        test_examples=test_examples,
        seed=seed,
        rule_options=rule_options,
    )

    # Build before loading the data: bad names and parameters fail in
    # seconds, not after the data set is read.
    if seed is not None:
        keras.utils.set_random_seed(seed)
    info = data_lib.info(dataset)
    builder = zoo.get(model)
    augmentation = data_lib.augmentation(dataset, cutout, seed) if augment else None
    # Validates the options (a parameter the rule does not take is a
    # ValueError naming the ones it does) the way the builder resolves them.
    rule_object = zoo.resolve_rule(model, rule, rule_options)
    network = builder(
        # Name and given options, so the builder's architecture defaults
        # (e.g. al_mlp's 1024-unit code) fill in what the user did not set
        # (`zoo.resolve_rule`, as `keras-local tune` builds it).
        rule={"name": rule_object.name, "config": dict(rule_options)},
        num_classes=info.num_classes,
        input_shape=info.input_shape,
        width=width,
        dropout=dropout,
        learning_rate=learning_rate,
        augmentation=augmentation,
        # The rules take only their own parameters; None keeps the default.
        **_given(beta=beta, dim_in_decoder=dim_in_decoder, activation=activation),
    )

    backup_dir = output + ".backup"
    _claim_backup(backup_dir, parameters)

    (x_train, y_train), (x_test, y_test) = data_lib.load(dataset)
    x_train, y_train = _first(x_train, y_train, train_examples, "train_examples", dataset)
    x_test, y_test = _first(x_test, y_test, test_examples, "test_examples", dataset)

    say(
        f"Training {model} ({network.count_inference_params():,} parameters "
        f"without local heads) with rule {rule} on {dataset}: "
        f"{len(x_train)} training and {len(x_test)} test examples, "
        f"backend {keras.backend.backend()}."
    )
    say(
        f"{epochs} epoch{'s' if epochs != 1 else ''}, batch size {batch_size}, "
        f"learning rate {learning_rate:g} x0.25 after epochs "
        f"{', '.join(map(str, milestones))}; augmentation: "
        f"{_describe_augmentation(dataset, augment, cutout)}."
    )

    epoch_log = _EpochLog(os.path.join(backup_dir, "history.json"))
    if epoch_log.records:
        say(f"Resuming the interrupted run backed up in {backup_dir}.")
    callbacks = [StepDecay(learning_rate, milestones=milestones)]
    if verbose:
        # Before BlockReport, so that each epoch's progress bar line comes
        # before its table (Keras appends its own at the end of the list).
        # It shows the overall loss and accuracy; the table, the rest.
        callbacks.append(CompactProgbarLogger())
        callbacks.append(BlockReport(print_fn=print_fn, validation_name="test"))
    callbacks += [epoch_log, keras.callbacks.BackupAndRestore(backup_dir)]
    network.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x_test, y_test),
        validation_batch_size=batch_size,
        callbacks=callbacks,
        verbose=verbose,
    )

    test_metrics = network.evaluate(
        x_test, y_test, batch_size=batch_size, return_dict=True, verbose=0
    )
    test_metrics = {name: float(value) for name, value in test_metrics.items()}
    train_metrics = None
    if layer_report:
        train_metrics = network.evaluate(
            x_train, y_train, batch_size=batch_size, return_dict=True, verbose=0
        )
        train_metrics = {name: float(value) for name, value in train_metrics.items()}
    test_accuracy = test_metrics["accuracy"]
    test_error = 100.0 * (1.0 - test_accuracy)

    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    network.save(output)
    shutil.rmtree(backup_dir, ignore_errors=True)

    result = ExperimentResult(
        test_error=test_error,
        test_accuracy=test_accuracy,
        test_metrics=test_metrics,
        train_metrics=train_metrics,
        block_metrics={
            f"block{index}": metrics
            for index, metrics in block_metrics(test_metrics).items()
        },
        history=epoch_log.history(),
        epochs=epochs,
        num_train_examples=len(x_train),
        num_test_examples=len(x_test),
        wall_time_s=0.0,
        output=output,
        summary=output + ".json",
        backend=keras.backend.backend(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        parameters=parameters,
    )
    result.wall_time_s = time.perf_counter() - start
    with open(result.summary, "w") as f:
        json.dump({**result.to_dict(), "keras_version": keras.__version__}, f, indent=2)
        f.write("\n")

    say(
        f"Test error {test_error:.2f}% (accuracy {100 * test_accuracy:.2f}%) on "
        f"{len(x_test)} test examples after {epochs} epoch{'s' if epochs != 1 else ''}, "
        f"in {format_duration(result.wall_time_s)}."
    )
    if train_metrics is None:
        report, splits = test_metrics, (("test", ""),)
    else:
        say("Every layer on the training set (inference mode) and the test set:")
        report = {**train_metrics, **{f"test_{k}": v for k, v in test_metrics.items()}}
        splits = (("train", ""), ("test", "test_"))
    for line in format_block_table(report, splits=splits):
        say(line)
    say(f"Saved the model to {output} and a summary to {result.summary}.")
    return result


# ---------------------------------------------------------------- checking
def _check_positive_int(name, value, allow_zero=False):
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}.")


def _check_optional_positive_int(name, value, allow_zero=False):
    if value is not None:
        _check_positive_int(name, value, allow_zero)


def _resolve_milestones(milestones, epochs):
    """The milestones to use: the given ones (checked, sorted) or the
    paper's fractions of `epochs`."""
    if milestones is None:
        return paper_milestones(epochs)
    if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
        raise ValueError(
            f"milestones must be a list of epoch numbers, got {milestones!r}."
        )
    milestones = list(milestones)
    for milestone in milestones:
        if (
            isinstance(milestone, bool)
            or not isinstance(milestone, numbers.Integral)
            or milestone < 1
        ):
            raise ValueError(
                "milestones must be positive integers (epochs after which the "
                f"learning rate drops), got {milestones!r}."
            )
    return sorted(int(m) for m in milestones)


def _given(**kwargs):
    return {name: value for name, value in kwargs.items() if value is not None}


def _first(x, y, count, name, dataset):
    """The first `count` examples (all when `count` is None)."""
    if count is None:
        return x, y
    if count > len(x):
        raise ValueError(
            f"{name}={count} is more than the {len(x)} examples {dataset} has."
        )
    return x[:count], y[:count]


def _describe_augmentation(dataset, augment, cutout):
    if not augment:
        return "none (--no-augment)"
    info = data_lib.info(dataset)
    parts = []
    if info.train_augmentation.jitter:
        parts.append(f"{info.train_augmentation.jitter}-pixel jitter")
    if info.train_augmentation.horizontal_flip:
        parts.append("horizontal flip")
    if cutout not in (None, False):
        length = info.cutout_length if cutout is True else cutout
        parts.append(f"cutout {length}")
    return " + ".join(parts) if parts else f"none (the paper used none for {dataset})"


def format_duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s"


# ---------------------------------------------------------------- resuming
def _claim_backup(backup_dir, parameters):
    """Creates the backup directory, or checks that the interrupted run it
    holds had the same settings (else its weights would not fit)."""
    path = os.path.join(backup_dir, "parameters.json")
    backed_up = os.path.isdir(backup_dir) and set(os.listdir(backup_dir)) - {
        "parameters.json"
    }
    if backed_up and os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        current = json.loads(json.dumps(parameters))  # lists, as JSON has them
        if previous != current:
            changed = sorted(
                name
                for name in set(previous) | set(current)
                if previous.get(name) != current.get(name)
            )
            details = ", ".join(
                f"{name}: {previous.get(name)!r} then, {current.get(name)!r} now"
                for name in changed
            )
            raise ValueError(
                f"{backup_dir} holds the backup of an interrupted run with other "
                f"settings ({details}). Run again with the same settings to resume "
                "it, choose another output path, or delete that directory to start "
                "over."
            )
        return
    os.makedirs(backup_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(parameters, f, indent=2)


class _EpochLog(keras.callbacks.Callback):
    """Keeps every epoch's logs in a JSON file in the backup directory, so the
    history of a resumed run includes the epochs before the interruption
    (Keras' `History` only sees the epochs of the current `fit`)."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.records = []
        if os.path.exists(path):
            with open(path) as f:
                self.records = json.load(f)
        self._trimmed = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._trimmed:
            # Epochs at or after the resumed one were not backed up.
            self.records = [r for r in self.records if r["epoch"] < epoch]
            self._trimmed = True

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch}
        record.update({name: float(value) for name, value in (logs or {}).items()})
        self.records.append(record)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        partial = self.path + ".partial"
        with open(partial, "w") as f:
            json.dump(self.records, f)
        os.replace(partial, self.path)

    def history(self):
        """`{name: [value per epoch]}`, like `keras.callbacks.History`."""
        history = {}
        for record in self.records:
            for name, value in record.items():
                if name != "epoch":
                    history.setdefault(name, []).append(value)
        return history
