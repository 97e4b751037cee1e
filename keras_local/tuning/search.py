"""`tune`: the search, from its settings to the retrained best model.

`tune` hands its arguments to `_Search`, whose methods are the steps: check
the settings, describe and load the data, build the hypermodel, claim the
project (`keras_local.run_files.claim`, the resume guard), make the tuner,
run the search, collect the trials (or raise `TuningError`), and retrain and
save the best configuration.
"""

import dataclasses
import functools
import importlib.util
import os
import warnings
import zlib

import keras
import numpy as np

from keras_local import data as data_lib
from keras_local import run_files
from keras_local.optional import require
from keras_local.run_settings import check_positive_int
from keras_local.tuning.hypermodel import LocalHyperModel
from keras_local.tuning.hypermodel import split_validation
from keras_local.tuning.recipe import DEFAULT_DIRECTORY
from keras_local.tuning.recipe import DEFAULT_OUTPUT_DIR
from keras_local.tuning.recipe import OBJECTIVE_DIRECTION
from keras_local.tuning.recipe import OBJECTIVE_NAME
from keras_local.tuning.recipe import TUNERS
from keras_local.tuning.report import TuningError
from keras_local.tuning.report import TuningResult
from keras_local.tuning.report import now
from keras_local.tuning.report import short
from keras_local.tuning.report import trial_records
from keras_local.tuning.report import write_results

keras_tuner = require("keras_tuner", feature="keras_local.tuning (keras-local tune)")

#: The objective: the output layer's accuracy on the held-out validation part.
OBJECTIVE = keras_tuner.Objective(OBJECTIVE_NAME, direction=OBJECTIVE_DIRECTION)

#: How to start afresh instead of resuming, for `run_files.claim`'s message.
_START_OVER = "choose another project name, or overwrite it (overwrite=True, --overwrite)"


def tune(
    model="mlp", rule="predsim", data="fashion_mnist", *,
    space=None, fixed=None, rule_options=None,
    tuner="hyperband", max_trials=None, max_epochs=3, factor=3, hyperband_iterations=1,
    validation_fraction=0.1, train_examples=None, test_data=None, test_examples=None,
    num_classes=None, batch_size=128, augment=True, seed=0,
    directory=DEFAULT_DIRECTORY, project_name=None, overwrite=False,
    retrain=True, retrain_epochs=None, output=None, export=True,
    callbacks=None, max_consecutive_failed_trials=3, jit_compile=None,
    verbose=1, print_fn=print,
):  # fmt: skip
    """Searches hyperparameters of a zoo model with a rule, then retrains the best.

    Args:
        model: a zoo builder name.
        rule: a rule name.
        data: a data set name (`keras_local.data.DATASETS`, loaded with
            `keras_local.data.load`), or a training set `(x, y)` of NumPy
            arrays (integer labels).
        space: the search space (`normalize_space`); `None` for
            `default_space(rule)`.
        fixed: builder arguments held fixed, e.g. `{"units": 256}`, and the
            rule parameters `beta` and `dim_in_decoder` (`{"dim_in_decoder":
            1024}`), passed to the rule as options.
        rule_options: the rule's other parameters.
        tuner: `"hyperband"` (default), `"random"` or `"bayesian"`.
        max_trials: the number of trials of random search and Bayesian
            optimisation (default 10); for Hyperband, whose schedule sets the
            trials, an optional cap. Raise it to extend a finished search.
        max_epochs: epochs per trial (random, Bayesian); Hyperband's
            largest number of epochs for one configuration.
        factor, hyperband_iterations: Hyperband's reduction factor and
            number of passes.
        validation_fraction: the share of the training set held out for the
            objective (`split_validation` with `seed`).
        train_examples: use only the first N training examples.
        test_data: `(x_test, y_test)` to evaluate the retrained model on;
            with a data set name, its test set is used (the first
            `test_examples`). Never used to choose hyperparameters.
        num_classes: with arrays, the number of classes (default: the
            largest label + 1).
        batch_size: examples per step, in the search and the retraining.
        augment: with a data set name, train with its paper augmentation.
        seed: seeds the validation split (0 when `None`), the tuner and
            every model's initial weights.
        directory, project_name: the search is stored in
            `<directory>/<project_name>/`; the default project name is
            `<dataset>-<model>-<rule>` (`<model>-<rule>` for arrays).
        overwrite: delete a stored search of the same project first;
            otherwise it is resumed.
        retrain: retrain the best configuration on the whole training set
            and save it.
        retrain_epochs: epochs of that retraining (default `max_epochs`).
        output: where to save the retrained model (`.keras`), default
            `saved_models/<project_name>/model.keras`.
        export: also export it as a SavedModel, `saved_model/` beside the
            `.keras` file (`keras_local.export`; on a backend other than
            TensorFlow, in a TensorFlow child process, or skipped with a note
            where TensorFlow is not installed).
        callbacks: Keras callbacks for every trial (deep-copyable).
        max_consecutive_failed_trials: stop the search after this many
            failed trials in a row.
        jit_compile: `None` keeps the builders' XLA compilation; `False`
            turns it off (faster for tiny trials, slower for real ones).
        verbose: 0 silent; 1 keras-tuner's trial summaries and progress
            bars; 2 summaries and one line per epoch.
        print_fn: receives every line this function prints.

    Returns:
        A `TuningResult`.

    Raises:
        ValueError: bad names, settings or search space, or a stored
            project with other settings.
        TuningError: when no trial produced the objective (all failed, or
            the search stopped after `max_consecutive_failed_trials` failures).
    """
    return _Search(**locals()).run()


@dataclasses.dataclass
class _Data:
    """The data of a search: what the hypermodel needs to know first, then
    the arrays (`_Search.load_data`)."""

    dataset: str | None
    input_shape: tuple
    num_classes: int
    augmentation: object = None
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    test: tuple | None = None
    fit: tuple | None = None
    val: tuple | None = None


@dataclasses.dataclass(kw_only=True)
class _Search:
    """One call of `tune`: its arguments, and its steps as methods."""

    model: str
    rule: str
    data: object
    space: dict | None
    fixed: dict | None
    rule_options: dict | None
    tuner: str
    max_trials: int | None
    max_epochs: int
    factor: int
    hyperband_iterations: int
    validation_fraction: float
    train_examples: int | None
    test_data: tuple | None
    test_examples: int | None
    num_classes: int | None
    batch_size: int
    augment: bool
    seed: int | None
    directory: str
    project_name: str | None
    overwrite: bool
    retrain: bool
    retrain_epochs: int | None
    output: str | None
    export: bool
    callbacks: list | None
    max_consecutive_failed_trials: int
    jit_compile: bool | None
    verbose: int
    print_fn: object

    def run(self):
        """The steps of the search; see `tune`."""
        self.check_settings()
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        data = self.describe_data()
        hypermodel = self.build_hypermodel(data)
        self.load_data(data)
        settings = self.settings_record(hypermodel, data)
        searcher = self.open_project(hypermodel, settings)
        stopped = self.search(searcher, data)
        trials, best, paths = self.collect_trials(searcher, settings, stopped)
        result = self.found(hypermodel, data, trials, best, paths)
        if self.retrain:
            self.retrain_best(result, hypermodel, searcher, data, settings, best)
        return result

    def say(self, *args, **kwargs):
        """`print_fn`, unless `verbose` is 0."""
        if self.verbose:
            self.print_fn(*args, **kwargs)

    # ------------------------------------------------------------ settings
    def check_settings(self):
        """Raises `ValueError` for a bad tuner, count or output path; sets
        the default `max_trials` of random search and Bayesian optimisation."""
        if self.tuner not in TUNERS:
            raise ValueError(f"Unknown tuner {self.tuner!r}. Valid tuners: {', '.join(TUNERS)}.")
        for name in ("max_epochs", "batch_size", "factor"):
            check_positive_int(name, getattr(self, name))
        for name in (
            "max_trials", "train_examples", "test_examples", "retrain_epochs",
            "hyperband_iterations",
        ):  # fmt: skip
            check_positive_int(name, getattr(self, name), optional=True)
        if self.tuner == "hyperband" and self.factor < 2:
            raise ValueError(f"Hyperband's factor must be at least 2, got {self.factor}.")
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}.")
        if self.retrain and self.output:
            self.output = run_files.check_model_path(self.output)
        if self.max_trials is None and self.tuner != "hyperband":
            self.max_trials = 10

    # ---------------------------------------------------------------- data
    def describe_data(self):
        """The shape, classes and augmentation of the data; a named data set
        is loaded later (`load_data`), once the hypermodel has checked the
        settings."""
        if isinstance(self.data, str):
            info = data_lib.info(self.data)
            augmentation = None
            if self.augment:
                augmentation = functools.partial(data_lib.augmentation, self.data, None, self.seed)
            return _Data(self.data, info.input_shape, info.num_classes, augmentation)
        x, y = _as_training_set(self.data)
        classes = int(self.num_classes) if self.num_classes is not None else int(y.max()) + 1
        return _Data(None, tuple(x.shape[1:]), classes, x=x, y=y)

    def load_data(self, data):
        """Loads a named data set, keeps the first `train_examples` and
        `test_examples`, and holds out the validation part."""
        test = self.test_data
        if data.dataset is not None:
            (data.x, data.y), test_set = data_lib.load(data.dataset)
            if test is None:
                test = test_set
        if self.train_examples is not None:
            count = self.train_examples
            _check_enough(count, len(data.x), "train_examples", "the training set")
            data.x, data.y = data.x[:count], data.y[:count]
        if test is not None and self.test_examples is not None:
            count = self.test_examples
            _check_enough(count, len(test[0]), "test_examples", "the test set")
            test = (test[0][:count], test[1][:count])
        data.test = test
        # The held-out part must be the same when the search is resumed, so it
        # is fixed even without a seed.
        data.fit, data.val = split_validation(
            data.x, data.y, self.validation_fraction, 0 if self.seed is None else self.seed
        )

    # ---------------------------------------------------------- the project
    def build_hypermodel(self, data):
        """The `LocalHyperModel`, which checks the model, rule, space and
        fixed arguments; and the default project name."""
        if not self.project_name:
            parts = [data.dataset] if data.dataset else []
            self.project_name = "-".join(parts + [self.model, self.rule])
        return LocalHyperModel(
            self.model,
            self.rule,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            space=self.space,
            fixed=self.fixed,
            rule_options=self.rule_options,
            augmentation=data.augmentation,
            seed=self.seed,
            jit_compile=self.jit_compile,
        )

    def settings_record(self, hypermodel, data):
        """The settings a resumed search must share (`search.json`)."""
        hyperband = self.tuner == "hyperband"
        return {
            "model": self.model,
            "rule": self.rule,
            "rule_options": hypermodel.rule_options,
            "space": hypermodel.space,
            "fixed": hypermodel.fixed,
            "dataset": data.dataset,
            "data": {
                "examples": len(data.x),
                "input_shape": list(data.input_shape),
                "num_classes": data.num_classes,
                "fingerprint": _fingerprint(data.x, data.y),
            },
            "augment": bool(self.augment and data.dataset is not None),
            "tuner": self.tuner,
            "objective": OBJECTIVE.name,
            "max_epochs": self.max_epochs,
            "factor": self.factor if hyperband else None,
            "hyperband_iterations": self.hyperband_iterations if hyperband else None,
            "validation_fraction": self.validation_fraction,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    @property
    def project_dir(self):
        return os.path.join(str(self.directory), self.project_name)

    def open_project(self, hypermodel, settings):
        """Claims the project for these settings and makes the tuner, which
        reloads a stored search (or, with `overwrite`, deletes it)."""
        claim = functools.partial(
            run_files.claim,
            self.project_dir,
            settings,
            record="search.json",
            holds="a search",
            start_over=_START_OVER,
        )
        if not self.overwrite:
            claim()  # before keras-tuner reloads a search with other settings
        searcher = self.make_tuner(hypermodel)
        if self.overwrite:
            claim()  # keras-tuner deleted the old search and its settings
        return searcher

    def make_tuner(self, hypermodel):
        common = dict(
            hypermodel=hypermodel,
            objective=OBJECTIVE,
            seed=self.seed,
            max_consecutive_failed_trials=self.max_consecutive_failed_trials,
            directory=str(self.directory),
            project_name=self.project_name,
            overwrite=self.overwrite,
        )
        if self.tuner == "random":
            return keras_tuner.RandomSearch(max_trials=self.max_trials, **common)
        if self.tuner == "bayesian":
            return keras_tuner.BayesianOptimization(max_trials=self.max_trials, **common)
        searcher = keras_tuner.Hyperband(
            max_epochs=self.max_epochs,
            factor=self.factor,
            hyperband_iterations=self.hyperband_iterations,
            **common,
        )
        # Hyperband's schedule sets the trials; max_trials caps it.
        searcher.oracle.max_trials = self.max_trials
        return searcher

    # ---------------------------------------------------------- the search
    def search(self, searcher, data):
        """Runs (or resumes) the search; returns keras-tuner's message when
        it stopped after `max_consecutive_failed_trials` failures, else `None`."""
        finished_before = sum(
            t.status in ("COMPLETED", "FAILED") for t in searcher.oracle.trials.values()
        )
        self.say(
            f"Searching {self.model} with rule {self.rule} ({self.tuner}, objective "
            f"val_accuracy on {len(data.val[0])} held-out training examples, "
            f"{len(data.fit[0])} to train on) in {self.project_dir}; backend "
            f"{keras.backend.backend()}."
        )
        if finished_before:
            self.say(f"Resuming: {finished_before} trial(s) already finished there are kept.")
        try:
            with warnings.catch_warnings():
                # Hyperband rebuilds a continued trial with `build_from_config`
                # before loading its weights; the builders return built models,
                # so that rebuild has nothing to do and only warns.
                warnings.filterwarnings("ignore", message=r"Model '.*' had a build config")
                searcher.search(
                    *data.fit,
                    validation_data=data.val,
                    batch_size=self.batch_size,
                    validation_batch_size=self.batch_size,
                    epochs=self.max_epochs,
                    callbacks=list(self.callbacks or []),
                    verbose=self.verbose,
                )
        except RuntimeError as e:
            # keras-tuner's oracle stops the search this way after
            # `max_consecutive_failed_trials` failures in a row.
            if "consecutive failures" not in str(e):
                raise
            return str(e)
        return None

    def collect_trials(self, searcher, settings, stopped):
        """Records the trials (`report.write_results`), reports the failed
        ones, and raises `TuningError` when none produced the objective.
        Returns the trials, the best and the paths of the result files."""
        trials = trial_records(searcher.oracle)
        completed = [t for t in trials if t["status"] == "COMPLETED"]
        failed = [t for t in trials if t["status"] in ("FAILED", "INVALID")]
        best = max(completed, key=lambda t: t["score"]) if completed else None
        paths = write_results(self.project_dir, settings, trials, best)
        for trial in failed:
            message = f"Trial {trial['trial_id']} failed: {trial['error']}"
            # stacklevel: the caller of `tune` (tune, run, collect_trials).
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            self.print_fn(f"WARNING: {message}")
        if stopped is None and best is not None:
            return trials, best, paths
        # The error itself (its traceback is in the results table): a
        # diverged trial's message says all there is to say.
        detail = (failed[-1]["error"] or failed[-1]["message"]) if failed else (stopped or "")
        detail = "\n".join(detail.strip().splitlines()[-15:])
        if stopped is not None:
            reason = (
                f"the search stopped after {self.max_consecutive_failed_trials} failed "
                "trials in a row"
            )
        else:
            reason = f"all {len(trials)} trial(s) failed" if trials else "no trial ran"
        raise TuningError(
            f"No usable result in {self.project_dir}: {reason}; see {paths[2]}. "
            f"Last error: {detail.strip()}"
        )

    def found(self, hypermodel, data, trials, best, paths):
        """The `TuningResult` of the search, and its report."""
        completed = sum(t["status"] == "COMPLETED" for t in trials)
        run = None
        if data.dataset is not None:
            run = hypermodel.train_settings(
                best["hyperparameters"], dataset=data.dataset, batch_size=self.batch_size,
                augment=self.augment, train_examples=self.train_examples,
            )  # fmt: skip
        result = TuningResult(
            best_hyperparameters=dict(best["hyperparameters"]),
            best_score=best["score"],
            best_trial_id=best["trial_id"],
            trials=trials,
            num_completed=completed,
            num_failed=sum(t["status"] in ("FAILED", "INVALID") for t in trials),
            project_dir=self.project_dir,
            best_hyperparameters_file=paths[0],
            results_json=paths[1],
            results_markdown=paths[2],
            train_command=run.command_line() if run is not None else None,
        )
        self.say(
            f"Best: trial {best['trial_id']}, val_accuracy {best['score']:.4f}, "
            + ", ".join(f"{k}={short(v)}" for k, v in best["hyperparameters"].items())
            + f" ({completed} trial(s) completed, {result.num_failed} failed)."
        )
        self.say(f"Results in {paths[2]}; best hyperparameters in {paths[0]}.")
        if result.train_command:
            self.say(f"To train with them: {result.train_command}")
        return result

    # ---------------------------------------------------------- retraining
    def retrain_best(self, result, hypermodel, searcher, data, settings, best):
        """Retrains the best configuration on the whole training set, tests,
        saves and exports it, and adds it to the result files."""
        epochs = self.retrain_epochs or self.max_epochs
        output = self.output or os.path.join(DEFAULT_OUTPUT_DIR, self.project_name, "model.keras")
        self.say(
            f"Retraining the best configuration on all {len(data.x)} training examples "
            f"for {epochs} epoch{'s' if epochs != 1 else ''}."
        )
        keras.backend.clear_session()
        best_trial = searcher.oracle.get_trial(result.best_trial_id)
        network = hypermodel.build(best_trial.hyperparameters.copy())
        network.fit(data.x, data.y, batch_size=self.batch_size, epochs=epochs, verbose=self.verbose)
        if data.test is not None:
            metrics = network.evaluate(
                *data.test, batch_size=self.batch_size, return_dict=True, verbose=0
            )
            result.test_accuracy = float(metrics["accuracy"])
            self.say(
                f"Test accuracy of the retrained model: {result.test_accuracy:.4f} "
                f"on {len(data.test[0])} test examples (not used in the search)."
            )
        summary = {
            "project": self.project_name,
            "trial_id": result.best_trial_id,
            "val_accuracy": result.best_score,
            "hyperparameters": result.best_hyperparameters,
            "settings": settings,
            "epochs": epochs,
            "train_examples": len(data.x),
            "test_accuracy": result.test_accuracy,
            "backend": keras.backend.backend(),
            "date": now(),
        }
        run_files.save_model(network, output, summary)
        result.model_path, result.retrain_epochs = output, epochs
        self.say(f"Saved the retrained model to {output}.")
        if self.export:
            saved_model = os.path.join(os.path.dirname(output), "saved_model")
            result.export_path = _export_saved_model(network, output, saved_model, self.say)
        write_results(self.project_dir, settings, result.trials, best, retrained=result)


def _export_saved_model(model, keras_path, path, print_fn):
    """Exports the retrained model as a SavedModel (`keras_local.export`):
    in this process on TensorFlow; from its `.keras` file in a TensorFlow
    child process on another backend; with a note instead when TensorFlow
    is not installed. Returns the path, or `None`."""
    from keras_local import export as export_lib

    if keras.backend.backend() == "tensorflow":
        export_lib.export_saved_model(model, path)
    elif importlib.util.find_spec("tensorflow") is None:
        print_fn(
            "Note: no SavedModel export (it needs TensorFlow, which is not "
            f"installed here); export the saved file elsewhere with "
            f"`keras-local export {keras_path}`."
        )
        return None
    else:
        export_lib.export_file(keras_path, path)
    print_fn(f"Exported a SavedModel to {path}.")
    return path


# ---------------------------------------------------------------- helpers
def _fingerprint(*arrays):
    """A cheap checksum of arrays (to tell another data set on resume)."""
    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).tobytes(), crc)
    return f"{crc:08x}"


def _check_enough(count, available, name, what):
    if count > available:
        raise ValueError(f"{name}={count} is more than the {available} examples {what} has.")


def _as_training_set(data):
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError(
            "data must be a data set name or a training set (x, y) of arrays, got "
            f"{type(data).__name__}."
        ) from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}.")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"y must hold integer class ids of shape (N,), got {y.dtype} of shape {y.shape}."
        )
    return x, y
