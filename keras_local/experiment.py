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
import functools
import json
import os
import shutil
import time

import keras

from keras_local import data as data_lib
from keras_local import zoo
from keras_local.callbacks import BlockReport
from keras_local.callbacks import CompactProgbarLogger
from keras_local.callbacks import DivergenceError
from keras_local.callbacks import StopOnDivergence
from keras_local.callbacks import block_metrics
from keras_local.callbacks import format_block_table
from keras_local.epoch_seeding import EpochBatches
from keras_local.epoch_seeding import OrderedBatches
from keras_local.epoch_seeding import SeedEachEpoch
from keras_local.epoch_seeding import fresh_seed
from keras_local.epoch_seeding import set_random_seed
from keras_local.run_files import DamagedFileError
from keras_local.run_files import check_model_path
from keras_local.run_files import claim
from keras_local.run_files import describe_changes
from keras_local.run_files import lock
from keras_local.run_files import read_summary
from keras_local.run_files import save_model
from keras_local.run_files import strict_json
from keras_local.run_settings import SAVED_MODELS_DIR
from keras_local.run_settings import RunSettings
from keras_local.run_settings import SettingsError
from keras_local.schedules import StepDecay

#: Where `train` saves models when no `output` is given.
DEFAULT_OUTPUT_DIR = SAVED_MODELS_DIR

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
            evaluating, saving); for a resumed run, with the time the
            interrupted runs took up to their last backed-up epoch.
        output: path of the saved `.keras` model.
        summary: path of the JSON summary (`<output>.json`).
        backend: the Keras backend that ran it.
        date: when the run finished, UTC, ISO 8601.
        parameters: the settings of the run (`RunSettings.to_dict()`, with
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
    return RunSettings(
        model=model, rule=rule, dataset=dataset, rule_options=dict(rule_options or {})
    ).default_output()


def train(
    settings=None,
    /,
    *,
    output=None,
    verbose=1,
    print_fn=print,
    layer_report=True,
    **values,
):
    """Trains a zoo model with a rule on a data set the way the paper did.

    Builds `zoo.get(model)` for the data set, trains it with the settings'
    optimizer (Keras' Adam unless `optimizer` says otherwise), the step
    decay of the learning rate (x`decay_factor`, 0.25 by default, at each
    milestone) and the paper's training augmentation of the data set,
    evaluates on the test set after every epoch (the paper reports the last
    epoch's test error), and saves the model and a JSON summary.

    Every epoch ends with a `BlockReport` table of each block's local losses
    and accuracy. A `keras.callbacks.BackupAndRestore` backup is kept in
    `<output>.backup/` while training: if the run is interrupted, running it
    again with the same settings and output resumes after the last finished
    epoch. The backup is deleted when the run completes.

    Args:
        settings: a `RunSettings`; or give its fields as keywords
            (`train(model="vgg8b", rule="pred", epochs=2)`).
        output: where to save the model, a path ending in `.keras`; default
            `RunSettings.default_output()`. The summary goes to
            `<output>.json`.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch; with 1 and
            2 the block table and the final test results are printed too.
        print_fn: receives every line this function prints.
        layer_report: after training, also evaluate on the training set (in
            inference mode, as Mostafa et al. 2018 report it) and print every
            layer's local classifier accuracy on the training and test sets;
            stored as `train_metrics` in the summary.
        **values: `RunSettings` fields, when `settings` is not given.

    Returns:
        An `ExperimentResult`.

    Raises:
        ValueError: for an unknown model, rule or data set, a parameter the
            rule does not take, or an invalid setting; the message names the
            problem and the valid choices.
    """
    start = time.perf_counter()
    settings = _checked_settings(settings, values)
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
    output = check_model_path(output if output is not None else settings.default_output())
    say = print_fn if verbose else (lambda *args, **kwargs: None)

    with lock(output):  # also checks that the output can be written
        finished = finished_run(output, settings)
        if finished is not None:
            shutil.rmtree(output + ".backup", ignore_errors=True)  # left by a kill
            say(
                f"{output} is already trained with these settings (test error "
                f"{finished.test_error:.2f}%); nothing to do. Delete it to train again."
            )
            return finished
        # Build before loading the data: bad names and parameters fail in
        # seconds, not after the data set is read.
        network = build_network(settings)
        backup_dir = output + ".backup"
        _claim_backup(backup_dir, settings)
        train_set, test_set = load_data(settings)
        _say_plan(say, settings, network, train_set, test_set)
        epoch_log = _fit(
            network, settings, train_set, test_set, backup_dir, start, verbose, print_fn
        )

        # The last epoch's validation pass evaluated these weights on the
        # test set already; only a run resumed after its last epoch lacks it.
        test_metrics = epoch_log.validation_metrics(settings.epochs - 1) or _evaluate(
            network, settings, test_set
        )
        train_metrics = _evaluate(network, settings, train_set) if layer_report else None
        result = _result(
            settings, output, epoch_log, test_metrics, train_metrics, train_set, test_set
        )
        result.wall_time_s = epoch_log.elapsed_s()
        # The backup goes only once the model and summary are on disk: an
        # interruption before then resumes (after the last epoch: straight
        # to the evaluation).
        save_model(network, output, result.to_dict())
        shutil.rmtree(backup_dir, ignore_errors=True)
    _say_result(say, result)
    return result


def finished_run(output, settings):
    """The `ExperimentResult` of the finished run saved at `output` when it
    was trained with `settings`; `None` when there is no model there.

    Raises:
        SettingsError: `output` holds a model trained with other settings
            (or one without its summary), which a run must not replace.
    """
    if not os.path.exists(output):
        return None
    summary = read_summary(output)
    if summary is None:
        raise SettingsError(
            f"{output} exists without its summary {output}.json, so what it holds is "
            "unknown. Choose another output path (--output), or delete it to train."
        )
    current = json.loads(strict_json(settings.to_dict()))
    # A summary written before a setting existed had that setting's default.
    previous = {**RunSettings().to_dict(), **(summary.get("parameters") or {})}
    if previous != current:
        raise SettingsError(
            f"{output} holds a finished model trained with other settings "
            f"({describe_changes(previous, current)}). Choose "
            "another output path (--output), or delete it to train again."
        )
    fields = {field.name for field in dataclasses.fields(ExperimentResult)}
    return ExperimentResult(**{k: v for k, v in summary.items() if k in fields})


# ------------------------------------------------------------------- steps
def _checked_settings(settings, values):
    """The run's `RunSettings`, checked, with the milestones it will use."""
    if settings is None:
        settings = RunSettings.from_dict(values, where=" for experiment.train")
    elif values:
        raise TypeError("Give train() a RunSettings or its fields as keywords, not both.")
    else:
        settings = dataclasses.replace(settings, rule_options=dict(settings.rule_options))
    settings.check()
    settings.milestones = settings.resolved_milestones()
    return settings


def build_network(settings):
    """The compiled zoo model a run of `settings` trains (seeded first)."""
    if settings.seed is not None:
        set_random_seed(settings.seed)
    info = data_lib.info(settings.dataset)
    augmentation = (
        data_lib.augmentation(settings.dataset, settings.cutout, settings.seed)
        if settings.augment
        else None
    )
    # Validates the options (a parameter the rule does not take is a
    # ValueError naming the ones it does) the way the builder resolves them.
    rule = zoo.resolve_rule(settings.model, settings.rule, settings.rule_options)
    return zoo.get(settings.model)(
        # Name and given options, so the builder's architecture defaults
        # (e.g. al_mlp's 1024-unit code) fill in what the user did not set
        # (`zoo.resolve_rule`, as `keras-local tune` builds it).
        rule={"name": rule.name, "config": dict(settings.rule_options)},
        num_classes=info.num_classes,
        input_shape=info.input_shape,
        width=settings.width,
        dropout=settings.dropout,
        learning_rate=settings.learning_rate,
        optimizer=settings.optimizer,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        pytorch_batch_norm=settings.pytorch_batch_norm,
        augmentation=augmentation,
        **({} if settings.activation is None else {"activation": settings.activation}),
    )


def load_data(settings):
    """`((x_train, y_train), (x_test, y_test))` of the run, cut to its
    `train_examples` and `test_examples`, as raw uint8 pixels: a quarter of
    float32's memory (for Fashion-MNIST 55 MB instead of 220). The batches
    are normalized as they are fed (`_normalizer`)."""
    (x_train, y_train), (x_test, y_test) = data_lib.load(settings.dataset, normalize=False)
    dataset = settings.dataset
    train_set = _first(x_train, y_train, settings.train_examples, "train_examples", dataset)
    test_set = _first(x_test, y_test, settings.test_examples, "test_examples", dataset)
    return train_set, test_set


def _fit(network, settings, train_set, test_set, backup_dir, start, verbose, print_fn):
    """Trains, resuming from the backup; returns the epoch log (`start`: when
    the run began, for its wall time). A diverged run deletes its backup
    (resuming it would diverge again) and raises `DivergenceError`."""
    _check_backup(backup_dir)
    epoch_log = _EpochLog(os.path.join(backup_dir, "history.json"), start)
    if epoch_log.records and verbose:
        print_fn(f"Resuming the interrupted run backed up in {backup_dir}.")
    # Batch order, augmentation and dropout drawn from (seed, epoch), so
    # that a run resumed mid-epoch retrains that epoch as it would have gone.
    seed = settings.seed if settings.seed is not None else fresh_seed()
    normalize = _normalizer(settings)
    batches = EpochBatches(*train_set, settings.batch_size, seed, transform=normalize)
    try:
        network.fit(
            batches,
            epochs=settings.epochs,
            steps_per_epoch=batches.batches_per_epoch,
            shuffle=False,  # the batches come in their epoch's order
            validation_data=OrderedBatches(*test_set, settings.batch_size, normalize),
            callbacks=_callbacks(settings, backup_dir, epoch_log, verbose, print_fn)
            + [SeedEachEpoch(seed, batches)],
            verbose=verbose,
        )
    except DivergenceError:
        shutil.rmtree(backup_dir, ignore_errors=True)
        raise
    return epoch_log


def _callbacks(settings, backup_dir, epoch_log, verbose, print_fn):
    schedule = StepDecay(
        settings.learning_rate, milestones=settings.milestones, factor=settings.decay_factor
    )
    callbacks = [schedule]
    if verbose:
        # Before BlockReport, so that each epoch's progress bar line comes
        # before its table (Keras appends its own at the end of the list).
        # It shows the overall loss and accuracy; the table, the rest.
        callbacks.append(CompactProgbarLogger())
        callbacks.append(BlockReport(print_fn=print_fn, validation_name="test"))
    # The backup outlives `fit` (train deletes it once the model is saved),
    # and keeps the previous epoch's weights in case the latest are cut off.
    backup = keras.callbacks.BackupAndRestore(
        backup_dir, double_checkpoint=True, delete_checkpoint=False
    )
    # StopOnDivergence: the model adds its own one unless switched off.
    return callbacks + [StopOnDivergence(), epoch_log, backup]


def _normalizer(settings):
    """Makes a batch of the raw pixels `load_data` returns what the network
    takes (a function that can be pickled, for `PyDataset` workers)."""
    return functools.partial(data_lib.normalized, settings.dataset)


def _evaluate(network, settings, data):
    batches = OrderedBatches(*data, settings.batch_size, _normalizer(settings))
    metrics = network.evaluate(batches, return_dict=True, verbose=0)
    return {name: float(value) for name, value in metrics.items()}


def _result(settings, output, epoch_log, test_metrics, train_metrics, train_set, test_set):
    test_accuracy = test_metrics["accuracy"]
    return ExperimentResult(
        test_error=100.0 * (1.0 - test_accuracy),
        test_accuracy=test_accuracy,
        test_metrics=test_metrics,
        train_metrics=train_metrics,
        block_metrics={
            f"block{index}": metrics for index, metrics in block_metrics(test_metrics).items()
        },
        history=epoch_log.history(),
        epochs=settings.epochs,
        num_train_examples=len(train_set[0]),
        num_test_examples=len(test_set[0]),
        wall_time_s=0.0,
        output=output,
        summary=output + ".json",
        backend=keras.backend.backend(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        parameters=settings.to_dict(),
    )


def _say_plan(say, settings, network, train_set, test_set):
    epochs = settings.epochs
    say(
        f"Training {settings.model} ({network.count_inference_params():,} parameters "
        f"without local heads) with rule {settings.rule} on {settings.dataset}: "
        f"{len(train_set[0])} training and {len(test_set[0])} test examples, "
        f"backend {keras.backend.backend()}."
    )
    say(
        f"{epochs} epoch{'s' if epochs != 1 else ''}, batch size {settings.batch_size}, "
        f"{_describe_optimizer(settings)}, "
        f"learning rate {settings.learning_rate:g} x{settings.decay_factor:g} after epochs "
        f"{', '.join(map(str, settings.milestones))}; augmentation: "
        f"{_describe_augmentation(settings.dataset, settings.augment, settings.cutout)}."
    )


def _describe_optimizer(settings):
    """`optimizer pytorch-sgd (momentum 0.9, Nesterov, weight decay 0.0005)`."""
    details = [f"momentum {settings.momentum:g}"] if settings.momentum else []
    details += ["Nesterov"] if settings.nesterov else []
    details += [f"weight decay {settings.weight_decay:g}"] if settings.weight_decay else []
    details += ["PyTorch's batch-norm variance"] if settings.pytorch_batch_norm else []
    return f"optimizer {settings.optimizer}" + (f" ({', '.join(details)})" if details else "")


def _say_result(say, result):
    epochs = result.epochs
    say(
        f"Test error {result.test_error:.2f}% (accuracy {100 * result.test_accuracy:.2f}%) "
        f"on {result.num_test_examples} test examples after {epochs} "
        f"epoch{'s' if epochs != 1 else ''}, in {format_duration(result.wall_time_s)}."
    )
    if result.train_metrics is None:
        report, splits = result.test_metrics, (("test", ""),)
    else:
        say("Every layer on the training set (inference mode) and the test set:")
        report = {
            **result.train_metrics,
            **{f"test_{k}": v for k, v in result.test_metrics.items()},
        }
        splits = (("train", ""), ("test", "test_"))
    for line in format_block_table(report, splits=splits):
        say(line)
    say(f"Saved the model to {result.output} and a summary to {result.summary}.")


def _first(x, y, count, name, dataset):
    """The first `count` examples (all when `count` is None)."""
    if count is None:
        return x, y
    if count > len(x):
        raise SettingsError(
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
def _claim_backup(backup_dir, settings):
    """Claims the backup directory, or checks that the interrupted run it
    holds had the same settings (else its weights would not fit)."""
    record = "parameters.json"
    if os.path.isdir(backup_dir) and set(os.listdir(backup_dir)) <= {record}:
        # Interrupted before its first backup: nothing to resume.
        shutil.rmtree(backup_dir)
    claim(
        backup_dir,
        settings.to_dict(),
        record=record,
        holds="the backup of an interrupted run",
        start_over="choose another output path, or delete that directory to start over",
        defaults=RunSettings().to_dict(),
    )


def _check_backup(backup_dir):
    """`DamagedFileError` naming the backup when its files cannot be read
    (Keras falls back to the previous weights when only the latest are)."""
    damaged = []
    for name in ("history.json", "training_metadata.json"):
        path = os.path.join(backup_dir, name)
        if os.path.exists(path):
            try:
                with open(path) as f:
                    json.load(f)
            except ValueError:
                damaged.append(name)
    weights = [os.path.join(backup_dir, "latest.weights.h5")]
    weights.append(weights[0] + ".bkp")
    present = [path for path in weights if os.path.exists(path)]
    if present and not any(_readable_h5(path) for path in present):
        damaged.append("latest.weights.h5")
    if damaged:
        raise DamagedFileError(
            f"The backup in {backup_dir} is damaged ({', '.join(damaged)} cannot be read), "
            "so the interrupted run cannot resume. Delete that directory to start over."
        )


def _readable_h5(path):
    import h5py

    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


class _EpochLog(keras.callbacks.Callback):
    """Keeps every epoch's logs in a JSON file in the backup directory, so the
    history of a resumed run includes the epochs before the interruption
    (Keras' `History` only sees the epochs of the current `fit`).

    Each record also holds the run's wall time so far (`elapsed_s`), so that
    a resumed run's time counts the interrupted ones up to their last
    backed-up epoch, not only its own.

    Args:
        path: the JSON file (read if it exists: the run resumes).
        start: `time.perf_counter()` when this process's run began.
    """

    def __init__(self, path, start):
        super().__init__()
        self.path = path
        self.start = start
        self.records = []
        if os.path.exists(path):
            with open(path) as f:
                self.records = json.load(f)
        self._earlier_s = self._elapsed_at_last_record()
        self._trimmed = False
        self._logged_here = set()

    def _elapsed_at_last_record(self):
        # A backup written before `elapsed_s` existed counts as no time.
        return self.records[-1].get("elapsed_s", 0.0) if self.records else 0.0

    def elapsed_s(self):
        """Seconds of the run so far, the interrupted runs' included."""
        return self._earlier_s + time.perf_counter() - self.start

    def on_epoch_begin(self, epoch, logs=None):
        if not self._trimmed:
            # Epochs at or after the resumed one were not backed up.
            self.records = [r for r in self.records if r["epoch"] < epoch]
            self._earlier_s = self._elapsed_at_last_record()
            self._trimmed = True

    def validation_metrics(self, epoch):
        """The validation metrics logged at the end of `epoch` (0-based) by
        this process, named as `evaluate` names them; `None` if it logged
        none."""
        if epoch not in self._logged_here:
            return None
        record = next(r for r in self.records if r["epoch"] == epoch)
        metrics = {k[len("val_") :]: v for k, v in record.items() if k.startswith("val_")}
        return metrics or None

    def on_epoch_end(self, epoch, logs=None):
        self._logged_here.add(epoch)
        record = {"epoch": epoch}
        record.update({name: float(value) for name, value in (logs or {}).items()})
        record["elapsed_s"] = self.elapsed_s()
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
                if name not in ("epoch", "elapsed_s"):
                    history.setdefault(name, []).append(value)
        return history
