"""What a search reports: its trials, its result files and `TuningResult`.

In `<directory>/<project>/`: `results.json` (every trial), `results.md`
(the trials ranked, as a table) and `best_hyperparameters.json` (the best
trial, and the retrained model once there is one).
"""

import dataclasses
import datetime
import math
import os

import keras
import numpy as np

from keras_local.run_files import strict_json
from keras_local.run_files import write_atomic
from keras_local.tuning.recipe import OBJECTIVE_DIRECTION
from keras_local.tuning.recipe import OBJECTIVE_NAME


class TuningError(RuntimeError):
    """The search produced no usable result (every trial failed)."""


@dataclasses.dataclass
class TuningResult:
    """What `tune` found and wrote.

    Attributes:
        best_hyperparameters: the searched values of the best trial.
        best_score: its validation accuracy (best epoch), in [0, 1].
        best_trial_id: its keras-tuner trial id.
        trials: one dict per trial (`trial_id`, `status`, `score`,
            `best_step`, `hyperparameters`, `tuner` (Hyperband's bookkeeping
            values), `error` (last line of a failed trial's error)).
        num_completed: trials that produced the objective.
        num_failed: trials that failed.
        project_dir: `<directory>/<project>`, the stored search.
        best_hyperparameters_file, results_json, results_markdown: the files
            written there.
        model_path: the retrained best model (`.keras`), or `None`.
        export_path: its SavedModel export, or `None`.
        retrain_epochs: epochs of the retraining (0 without).
        test_accuracy: the retrained model's test accuracy, when test data
            was given; measured after the choice, never used for it.
        train_command: the `keras-local train` command with the best
            values, when there is one.
    """

    best_hyperparameters: dict
    best_score: float
    best_trial_id: str
    trials: list
    num_completed: int
    num_failed: int
    project_dir: str
    best_hyperparameters_file: str
    results_json: str
    results_markdown: str
    model_path: str | None = None
    export_path: str | None = None
    retrain_epochs: int = 0
    test_accuracy: float | None = None
    train_command: str | None = None

    def to_dict(self):
        return dataclasses.asdict(self)


def trial_records(oracle):
    """One JSON-ready dict per trial of a keras-tuner oracle, in trial order."""
    records = []
    for trial_id in sorted(oracle.trials, key=lambda t: (len(t), t)):
        trial = oracle.trials[trial_id]
        values = dict(trial.hyperparameters.values)
        searched = {k: _plain(v) for k, v in values.items() if not k.startswith("tuner/")}
        bookkeeping = {k: _plain(v) for k, v in values.items() if k.startswith("tuner/")}
        score = trial.score
        if score is not None:
            score = float(score)
            if not math.isfinite(score):
                score = None
        message = trial.message or None
        records.append(
            {
                "trial_id": trial_id,
                "status": trial.status,
                "score": score if trial.status == "COMPLETED" else None,
                "best_step": trial.best_step if trial.status == "COMPLETED" else None,
                "hyperparameters": searched,
                "tuner": bookkeeping,
                "error": _last_line(message) if message else None,
                "message": message,
            }
        )
    return records


def write_results(project_dir, settings, trials, best, retrained=None):
    """Writes best_hyperparameters.json (removed when there is no `best`
    trial), results.json and results.md; returns their paths."""
    best_file = os.path.join(project_dir, "best_hyperparameters.json")
    json_file = os.path.join(project_dir, "results.json")
    markdown_file = os.path.join(project_dir, "results.md")
    _write_json(
        json_file,
        {
            "objective": OBJECTIVE_NAME,
            "direction": OBJECTIVE_DIRECTION,
            "settings": settings,
            "backend": keras.backend.backend(),
            "date": now(),
            "trials": trials,
        },
    )
    write_atomic(markdown_file, "\n".join(_markdown(settings, trials, retrained)) + "\n")
    if best is not None:
        _write_best(best_file, settings, best, retrained)
    elif os.path.exists(best_file):
        os.remove(best_file)
    return best_file, json_file, markdown_file


def _write_best(path, settings, best, result):
    content = {
        "objective": OBJECTIVE_NAME,
        "score": best["score"],
        "trial_id": best["trial_id"],
        "hyperparameters": best["hyperparameters"],
        "model": settings["model"],
        "rule": settings["rule"],
        "rule_options": settings["rule_options"],
        "fixed": settings["fixed"],
        "dataset": settings["dataset"],
    }
    if result is not None:
        content.update(
            train_command=result.train_command,
            retrained_model=result.model_path,
            exported_saved_model=result.export_path,
            retrain_epochs=result.retrain_epochs,
            test_accuracy=result.test_accuracy,
        )
    _write_json(path, content)


def _write_json(path, content):
    # Whole or not at all, and strict JSON (a NaN score is null).
    write_atomic(path, strict_json(content))


# ------------------------------------------------------------- results.md
def _markdown(settings, trials, retrained=None):
    """The lines of results.md: the search, its trials ranked, and the
    retrained model."""
    return (
        _markdown_header(settings)
        + _markdown_table(settings, trials)
        + _markdown_retrained(settings, retrained)
    )


def _markdown_header(settings):
    fixed = settings["fixed"]
    return [
        f"# Search: {settings['model']} with rule {settings['rule']}"
        + (f" on {settings['dataset']}" if settings["dataset"] else ""),
        "",
        f"Tuner {settings['tuner']}, objective val_accuracy (the output layer's "
        f"accuracy on {settings['validation_fraction']:.0%} of the "
        f"{settings['data']['examples']} training examples, held out; never the "
        f"test set), up to "
        f"{settings['max_epochs']} epochs per trial, batch size "
        f"{settings['batch_size']}, seed {settings['seed']}. Written "
        f"{now()} by `keras_local.tuning` on the {keras.backend.backend()} backend.",
        "",
        "Search space: "
        + "; ".join(f"{name} {_describe(entry)}" for name, entry in settings["space"].items())
        + "."
        + (" Fixed: " + ", ".join(f"{k}={v!r}" for k, v in fixed.items()) + "." if fixed else ""),
        "",
    ]


def _markdown_table(settings, trials):
    names = list(settings["space"])
    lines = [
        "| rank | trial | val accuracy | " + " | ".join(names) + " | epochs | status |",
        "|---|---|---|" + "---|" * len(names) + "---|---|",
    ]
    ranked = sorted(
        trials,
        key=lambda t: (t["score"] is None, -(t["score"] or 0.0), len(t["trial_id"]), t["trial_id"]),
    )
    rank = 0
    for trial in ranked:
        done = trial["status"] == "COMPLETED"
        rank += done
        epochs = str(trial["tuner"].get("tuner/epochs", settings["max_epochs"]))
        if "tuner/trial_id" in trial["tuner"]:
            epochs += f" (from trial {trial['tuner']['tuner/trial_id']})"
        cells = [
            str(rank) if done else "-",
            trial["trial_id"],
            f"{trial['score']:.4f}" if trial["score"] is not None else "-",
            *(short(trial["hyperparameters"].get(n, "")) for n in names),
            epochs,
            trial["status"]
            if done
            else f"{trial['status']}: {trial['error'] or ''}".replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _markdown_retrained(settings, retrained):
    if retrained is None or not retrained.model_path:
        return []
    test = (
        f", test accuracy {retrained.test_accuracy:.4f} (measured after the search, not used in it)"
        if retrained.test_accuracy is not None
        else ""
    )
    epochs = retrained.retrain_epochs
    return [
        "",
        f"Trial {retrained.best_trial_id}'s configuration retrained on all "
        f"{settings['data']['examples']} training examples for "
        f"{epochs} epoch{'s' if epochs != 1 else ''}{test}: `{retrained.model_path}`.",
    ]


def _describe(entry):
    if entry["type"] == "fixed":
        return f"= {entry['value']!r}"
    if entry["type"] == "choice":
        return "in {" + ", ".join(map(repr, entry["values"])) + "}"
    text = f"[{entry['min']:g}, {entry['max']:g}]"
    if entry.get("step"):
        text += f" step {entry['step']:g}"
    if entry["sampling"] != "linear":
        text += f" ({entry['sampling']})"
    return text


# ---------------------------------------------------------------- helpers
def short(value):
    """A value as the reports show it: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def now():
    """The time in UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _last_line(message):
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
