"""Faults a user meets: divergence, interruptions at every point of a run,
two runs on one output, damaged files. Each run here is a narrow MLP on a
small real Fashion-MNIST subset; the reference is one uninterrupted run with
the same seed."""

import json
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_local  # noqa: F401 - registers the classes `load_model` needs
from keras_local import experiment
from tests.test_cli import _main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two epochs, so that a run can stop between them, and no layer report: the
# final evaluation alone stands for the work after the last epoch.
ARGV = [
    "--model", "mlp", "--width", "0.0625", "--epochs", "2", "--train-examples", "256",
    "--test-examples", "128", "--batch-size", "64", "--seed", "3", "--no-layer-report",
    "--quiet",
]  # fmt: skip
SETTINGS = dict(
    model="mlp", width=0.0625, epochs=2, train_examples=256, test_examples=128,
    batch_size=64, seed=3,
)  # fmt: skip


def _train(output, **settings):
    settings = {**SETTINGS, **settings}
    return experiment.train(**settings, output=str(output), verbose=0, layer_report=False)


def _weights(path):
    return [np.asarray(w) for w in keras.saving.load_model(path).get_weights()]


def _assert_same_model(path, reference):
    for got, want in zip(_weights(path), _weights(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _leftovers(output):
    return sorted(
        name
        for name in os.listdir(os.path.dirname(output))
        if name.startswith(os.path.basename(output)) or ".partial" in name
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The model of an uninterrupted run."""
    output = tmp_path_factory.mktemp("reference") / "model.keras"
    _train(output)
    return output


def _run_script(script, *args):
    """Runs `script` (Python source) in a child process; returns it done."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _rerun(output):
    """The same command again, in a child process, as a user would."""
    command = [sys.executable, "-m", "keras_local.cli", "train", *ARGV, "--output", str(output)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------- divergence
def test_a_diverged_run_fails_and_saves_nothing(tmp_path, capsys):
    output = tmp_path / "nan.keras"
    status, _, err = _main(capsys, "train", *ARGV, "--learning-rate", "1e12", "--output", str(output))
    assert status == 1
    assert "Training diverged: the loss became nan at epoch 1, step" in err
    assert "Nothing was saved" in err
    assert _leftovers(output) == []  # no model, summary, backup or lock


def test_summaries_are_strict_json(reference):
    def refuse(name):
        raise AssertionError(f"{name} in the summary")

    with open(f"{reference}.json") as f:
        summary = json.load(f, parse_constant=refuse)
    assert summary["parameters"]["width"] == 0.0625


# ------------------------------------------------------------- interruptions
def test_interrupted_after_the_last_epoch_resumes_to_the_same_model(
    tmp_path, reference, monkeypatch
):
    """Ctrl-C after the last epoch, before the model is saved: the backup is
    kept, and the rerun goes straight to the evaluation of the test set (no
    epoch is trained again; this process logged no validation pass to take
    the test metrics from). The run's wall time counts the interrupted run's
    epochs, not only the rerun."""
    output = tmp_path / "model.keras"
    epoch_pause_s = 3.0  # each epoch of the interrupted run lasts at least this

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    class SlowEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(epoch_pause_s)

    callbacks = experiment._callbacks
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "_result", interrupted)
        # First, so that the epoch log records each epoch after its pause.
        patch.setattr(experiment, "_callbacks", lambda *a: [SlowEpochs(), *callbacks(*a)])
        first_start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            _train(output)
        first_s = time.perf_counter() - first_start
    assert os.path.exists(f"{output}.backup/latest.weights.h5")
    assert not os.path.exists(output)
    rerun_start = time.perf_counter()
    rerun = _rerun(output)
    rerun_s = time.perf_counter() - rerun_start
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming the interrupted run" in rerun.stdout
    assert "Epoch 1/2" not in rerun.stdout and "Epoch 2/2" not in rerun.stdout
    _assert_same_model(output, reference)
    assert _leftovers(output) == ["model.keras", "model.keras.json"]
    with open(f"{output}.json") as f:
        wall_time_s = json.load(f)["wall_time_s"]
    assert 2 * epoch_pause_s <= wall_time_s <= first_s + rerun_s


KILL_DURING_SAVE = """
import os, signal, sys
from keras_local import cli, run_files

replace = os.replace

def killed_when_the_model_is_renamed(source, target):
    if str(target).endswith(".keras"):
        os.kill(os.getpid(), signal.SIGKILL)  # the model file is written, not renamed
    replace(source, target)

run_files.os.replace = killed_when_the_model_is_renamed
sys.exit(cli.main(["train", *sys.argv[1:]]))
"""


def test_killed_during_the_save_resumes_to_the_same_model(tmp_path, reference):
    output = tmp_path / "model.keras"
    killed = _run_script(KILL_DURING_SAVE, *ARGV, "--output", str(output))
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(output)  # never a truncated model at the output path
    assert os.path.isdir(f"{output}.backup")
    rerun = _rerun(output)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_same_model(output, reference)
    assert _leftovers(output) == ["model.keras", "model.keras.json"]


KILL_MID_EPOCH = """
import os, signal, sys
# A child inherits an ignored or blocked SIGINT across exec, and a pytest
# worker may have been left so by an earlier test (in two fresh-clone CI
# runs this child ignored its own SIGINT and trained to the end); a user's
# shell leaves neither, so start as a user's process starts.
print("inherited SIGINT:", signal.getsignal(signal.SIGINT),
      "blocked:", signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []), file=sys.stderr)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
import keras
from keras_local import cli, experiment

class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

callbacks = experiment._callbacks
experiment._callbacks = lambda *args: callbacks(*args) + [Kill()]
sys.exit(cli.main(["train", *sys.argv[2:]]))
"""


@pytest.mark.parametrize("signal_name, status", [("SIGINT", 130), ("SIGKILL", -9)])
def test_interrupted_mid_epoch_resumes_to_the_same_model(
    tmp_path, reference, signal_name, status
):
    """Stopped in the second epoch: the rerun trains the second epoch again
    from the first one's backup, on the same batches with the same
    augmentation as the uninterrupted run (`keras_local.epoch_seeding`)."""
    output = tmp_path / "model.keras"
    stopped = _run_script(KILL_MID_EPOCH, signal_name, *ARGV, "--output", str(output))
    assert stopped.returncode == status, (stopped.stdout[-3000:], stopped.stderr[-3000:])
    if signal_name == "SIGINT":
        assert "Run the same command again to resume" in stopped.stderr
    rerun = _rerun(output)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming the interrupted run" in rerun.stdout
    assert "Epoch 2/2" in rerun.stdout and "Epoch 1/2" not in rerun.stdout
    with open(f"{output}.json") as f:
        assert len(json.load(f)["history"]["loss"]) == 2
    _assert_same_model(output, reference)
    assert _leftovers(output) == ["model.keras", "model.keras.json"]


# ---------------------------------------------------------- finished outputs
def test_a_finished_model_is_kept(tmp_path, reference, capsys):
    """The same command again reports the run complete; other settings on
    the same output are refused instead of replacing it."""
    mtime = os.path.getmtime(reference)
    status, out, _ = _main(capsys, "train", *ARGV, "--output", str(reference))
    assert status == 0 and "already trained with these settings" in out
    assert os.path.getmtime(reference) == mtime
    argv = [*ARGV, "--output", str(reference), "--epochs", "1"]
    status, _, err = _main(capsys, "train", *argv)
    assert status == 2
    assert "holds a finished model trained with other settings (epochs: 2 then, 1 now" in err
    assert os.path.getmtime(reference) == mtime


def test_default_outputs_differ_when_the_model_does():
    from keras_local.run_settings import RunSettings

    relu = RunSettings(model="lra_mlp", rule="rec-lra", activation="relu", epochs=100)
    elu = RunSettings(model="lra_mlp", rule="rec-lra", activation="elu", epochs=100)
    smoke = RunSettings(model="lra_mlp", rule="rec-lra", activation="elu", epochs=1)
    paths = {s.default_output() for s in (relu, elu, smoke)}
    assert len(paths) == 3
    assert RunSettings().default_output() == os.path.join(
        "saved_models", "mlp-predsim-fashion_mnist.keras"
    )


def test_a_second_run_on_the_same_output_stops(tmp_path, capsys):
    output = tmp_path / "model.keras"
    with open(f"{output}.lock", "w") as f:
        f.write(f"{os.uname().nodename} {os.getpid()}\n")  # this live process
    status, _, err = _main(capsys, "train", *ARGV, "--output", str(output))
    assert status == 2 and "Another run" in err and "is writing" in err
    assert not os.path.exists(f"{output}.backup")


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    output = tmp_path / "model.keras"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    with open(f"{output}.lock", "w") as f:
        f.write(f"{os.uname().nodename} {dead}\n")
    result = _train(output, epochs=1)
    assert result.epochs == 1 and not os.path.exists(f"{output}.lock")


# ---------------------------------------------------------------- bad files
def test_a_damaged_backup_is_named(tmp_path, capsys):
    output = tmp_path / "model.keras"
    backup = tmp_path / "model.keras.backup"
    from keras_local.run_settings import RunSettings

    settings = RunSettings(**SETTINGS).check()
    settings.milestones = settings.resolved_milestones()
    backup.mkdir()
    (backup / "parameters.json").write_text(json.dumps(settings.to_dict()))
    (backup / "history.json").write_text('[{"epoch": 0, "loss": 0.')  # cut off
    status, _, err = _main(capsys, "train", *ARGV, "--output", str(output))
    assert status == 2
    assert f"The backup in {backup} is damaged (history.json cannot be read)" in err
    assert "Delete that directory to start over" in err
    (backup / "history.json").unlink()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n cut off")
    status, _, err = _main(capsys, "train", *ARGV, "--output", str(output))
    assert status == 2 and "latest.weights.h5 cannot be read" in err


def test_an_unwritable_output_fails_before_the_data_loads(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(experiment.data_lib, "load", no_data)
    status, _, err = _main(capsys, "train", *ARGV, "--output", str(blocker / "m.keras"))
    assert status == 2 and "Cannot create the directory for" in err


@pytest.mark.parametrize("content", [b"", b"random bytes, not a zip", "cut"])
def test_a_damaged_model_file_is_named_as_damaged(tmp_path, reference, capsys, content):
    path = tmp_path / "damaged.keras"
    if content == "cut":
        content = reference.read_bytes()[:2000]  # a save cut off
    path.write_bytes(content)
    status, _, err = _main(capsys, "analyze", str(path), "--dataset", "fashion_mnist")
    assert status == 2
    assert f"{path} is not a readable .keras file" in err
    assert "File not found" not in err


KILLED_SEARCH = """
import json, os, signal, sys
import keras
import numpy as np
from keras_local import data, tuning

class Kill(keras.callbacks.Callback):
    trials = 0
    def on_train_begin(self, logs=None):
        Kill.trials += 1
    def on_train_batch_end(self, batch, logs=None):
        if Kill.trials == 2 and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

(x, y), _ = data.load("fashion_mnist")
directory, output, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "kill"
result = tuning.tune(
    "mlp", "predsim", (x[:256], y[:256]), tuner="random", max_trials=2, max_epochs=1,
    fixed={"layers": 1, "units": 16}, batch_size=64, seed=3, directory=directory,
    project_name="search", output=output, export=False, jit_compile=False, verbose=0,
    callbacks=[Kill()] if kill else None,
)
print(json.dumps([t["hyperparameters"] for t in result.trials]))
"""


def test_a_killed_search_resumes_to_the_same_trials(tmp_path):
    """Killed in its second trial: the rerun keeps the first trial, runs the
    second with the same sampled values, and retrains the best."""
    reference = _run_script(KILLED_SEARCH, str(tmp_path / "a"), str(tmp_path / "a.keras"), "no")
    assert reference.returncode == 0, reference.stderr[-3000:]
    directory, output = str(tmp_path / "b"), str(tmp_path / "b.keras")
    killed = _run_script(KILLED_SEARCH, directory, output, "kill")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(output)
    resumed = _run_script(KILLED_SEARCH, directory, output, "no")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert trials == json.loads(reference.stdout.strip().splitlines()[-1])
    assert os.path.exists(output) and os.path.exists(f"{output}.json")


# ------------------------------------------------------------------- export
def test_export_never_destroys_its_input(tmp_path, reference, capsys):
    source = tmp_path / "model.keras"
    source.write_bytes(reference.read_bytes())
    before = source.read_bytes()
    for argv in (
        ["--format", "onnx", "--output", str(source)],
        ["--output", str(tmp_path)],  # a directory holding the source
        ["--output", str(tmp_path), "--overwrite"],
    ):
        status, _, err = _main(capsys, "export", str(source), *argv)
        assert status == 2 and "would destroy the model it exports" in err, err
    assert source.read_bytes() == before


def test_export_into_a_non_empty_directory_needs_overwrite(tmp_path, reference, capsys):
    destination = tmp_path / "exported"
    destination.mkdir()
    (destination / "notes.txt").write_text("someone else's file")
    status, _, err = _main(capsys, "export", str(reference), "--output", str(destination))
    assert status == 2 and "exists; the export would replace it" in err
    assert sorted(os.listdir(destination)) == ["notes.txt"]
    status, _, err = _main(
        capsys, "export", str(reference), "--output", str(destination), "--overwrite"
    )
    assert status == 0, err
    names = sorted(os.listdir(destination))
    assert "notes.txt" not in names and "saved_model.pb" in names  # replaced, not mixed
    assert not [n for n in os.listdir(tmp_path) if ".partial" in n]


def test_diverged_trials_fail_and_a_search_of_only_such_trials_is_an_error(tmp_path):
    from keras_local import data
    from keras_local import tuning

    (x, y), _ = data.load("fashion_mnist")
    with pytest.raises(tuning.TuningError, match="all 2 trial"):
        tuning.tune(
            "mlp", "predsim", (x[:256], y[:256]), tuner="random", max_trials=2,
            max_epochs=1, space={"learning_rate": [1e12, 1e13]},
            fixed={"units": 64}, batch_size=64, seed=3,
            directory=str(tmp_path), project_name="nan", retrain=False,
            jit_compile=False, verbose=0, max_consecutive_failed_trials=5,
        )  # fmt: skip
    with open(tmp_path / "nan" / "results.json") as f:
        trials = json.load(f)["trials"]
    assert [t["status"] for t in trials] == ["FAILED", "FAILED"]
    assert all("Training diverged" in t["error"] for t in trials)


def test_a_diverged_recipe_run_appends_no_row(tmp_path, monkeypatch):
    from keras_local import recipes
    from keras_local.callbacks import DivergenceError

    def diverging(settings, **kwargs):
        raise DivergenceError(1, 3, float("nan"))

    monkeypatch.setattr(recipes.experiment, "train", diverging)
    results = tmp_path / "results.md"
    with pytest.raises(DivergenceError, match="epoch 1, step 3"):
        recipes.run_recipe("fashion_mnist-mlp-predsim.toml", epochs=1, results=results)
    assert not results.exists()


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 28, 28), r"too small for vgg8b.*It looks channels-first.*\(28, 28, 1\)"),
        ((2, 2, 1), r"Inputs of shape \(2, 2, 1\) are too small for vgg8b"),
    ],
)
def test_inputs_too_small_for_a_conv_net_are_named(shape, message):
    from keras_local import zoo

    with pytest.raises(ValueError, match=message):
        zoo.vgg8b(rule="predsim", width=0.0625, input_shape=shape)


def test_numpy_integers_are_accepted_as_counts():
    from keras_local import zoo

    model = zoo.mlp(units=8, input_shape=(4, 4, 1), num_classes=np.int64(3))
    assert model.num_classes == 3 and type(model.num_classes) is int
