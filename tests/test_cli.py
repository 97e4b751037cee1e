"""The `keras-local` command and `keras_local.experiment.train` behind it."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_local  # noqa: F401 - registers the classes `load_model` needs
from keras_local import cli
from keras_local import experiment
from keras_local import rules
from keras_local import zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_EXAMPLES, TEST_EXAMPLES = 256, 128


def _main(capsys, *argv):
    """Runs `main` in-process; returns (exit status, stdout, stderr)."""
    try:
        status = cli.main(list(argv))
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


# The settings of the one run this file trains, as `experiment.train`
# arguments and as `keras-local train` options: a narrow MLP, two epochs on a
# small Fashion-MNIST subset.
SETTINGS = dict(
    model="mlp", rule="predsim", dataset="fashion_mnist", epochs=2, width=0.25,
    dropout=0.025, train_examples=TRAIN_EXAMPLES, test_examples=TEST_EXAMPLES, seed=1,
)  # fmt: skip


class _InterruptedEpochLog(experiment._EpochLog):
    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A run interrupted after its first epoch (in-process), then finished by
    `keras-local train` in a subprocess with the same settings, which resumes
    it from the backup."""
    output = tmp_path_factory.mktemp("cli") / "mlp.keras"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "_EpochLog", _InterruptedEpochLog)
        with pytest.raises(KeyboardInterrupt):
            experiment.train(**SETTINGS, output=str(output), verbose=0)
    assert os.path.exists(os.path.join(f"{output}.backup", "history.json"))

    command = [sys.executable, "-m", "keras_local.cli", "train"]
    for name, value in SETTINGS.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    command += ["--output", str(output), "--quiet"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    return process, output


def test_train_runs_end_to_end(cli_run):
    process, output = cli_run
    assert process.returncode == 0, process.stderr[-3000:]
    out = process.stdout
    assert "Training mlp" in out and "with rule predsim on fashion_mnist" in out
    assert f"{TRAIN_EXAMPLES} training and {TEST_EXAMPLES} test examples" in out
    # Resumed: only the second epoch ran, at the decayed learning rate.
    assert "Epoch 2/2 - learning rate 1.25e-04" in out
    assert "Epoch 1/2 -" not in out
    assert "Resuming the interrupted run" in out
    # The BlockReport table: one line per block and the output layer.
    for label in ("block1", "block2", "block3", "output"):
        assert any(line.startswith(f"{label} ") and "|" in line for line in out.splitlines())
    assert "Test error" in out
    assert output.exists()
    assert not os.path.exists(f"{output}.backup")  # deleted after success


def test_changed_settings_do_not_resume_a_backup(tmp_path):
    output = tmp_path / "model.keras"
    backup = tmp_path / "model.keras.backup"
    backup.mkdir()
    (backup / "parameters.json").write_text(json.dumps({**SETTINGS, "dropout": 0.5}))
    (backup / "latest.weights.h5").write_text("weights of the interrupted run")
    with pytest.raises(ValueError, match=r"other settings \(.*dropout: 0.5 then, 0.025 now"):
        experiment.train(**SETTINGS, output=str(output), verbose=0)


def test_saved_model_loads_and_matches_the_summary(cli_run, fashion_mnist):
    process, output = cli_run
    assert process.returncode == 0, process.stderr[-3000:]
    with open(f"{output}.json") as f:
        summary = json.load(f)
    assert summary["parameters"]["model"] == "mlp"
    assert summary["parameters"]["width"] == 0.25
    assert summary["num_train_examples"] == TRAIN_EXAMPLES
    assert summary["epochs"] == 2
    # The history includes the epoch run before the interruption.
    assert len(summary["history"]["loss"]) == 2
    assert summary["history"]["learning_rate"] == pytest.approx([5e-4, 1.25e-4])
    assert summary["test_error"] == pytest.approx(100 * (1 - summary["test_accuracy"]))
    assert set(summary["block_metrics"]) == {"block1", "block2", "block3"}
    # The printed test error is the summary's.
    assert f"Test error {summary['test_error']:.2f}%" in process.stdout

    _, (x_test, y_test) = fashion_mnist
    x_test, y_test = x_test[:TEST_EXAMPLES], y_test[:TEST_EXAMPLES]
    first = keras.saving.load_model(output)
    second = keras.saving.load_model(output)
    assert first.rule == rules.get("predsim")
    np.testing.assert_array_equal(
        first.predict(x_test, verbose=0), second.predict(x_test, verbose=0)
    )
    metrics = first.evaluate(
        x_test, y_test, batch_size=summary["parameters"]["batch_size"],
        return_dict=True, verbose=0,
    )  # fmt: skip
    assert metrics["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    "option, name, valid",
    [
        ("--model", "resnet9000", ["mlp", "vgg8b"]),
        ("--rule", "hebbian", rules.names()),
        ("--dataset", "imagenet", ["fashion_mnist", "cifar10"]),
    ],
)
def test_unknown_names_exit_2_with_the_choices(capsys, option, name, valid):
    status, _, err = _main(capsys, "train", option, name)
    assert status == 2
    assert name in err and "invalid choice" in err
    for choice in valid:
        assert choice in err


def test_library_errors_exit_2_without_traceback(capsys):
    status, _, err = _main(capsys, "train", "--rule", "sim", "--beta", "0.5")
    assert status == 2
    assert err.startswith("keras-local: error: Rule 'sim' does not take beta")
    assert "Traceback" not in err
    status, _, err = _main(capsys, "train", "--output", "model.h5")
    assert status == 2 and "must end in '.keras'" in err
    status, _, err = _main(capsys, "train", "--epochs", "0")
    assert status == 2 and "epochs must be a positive integer" in err
    status, _, err = _main(capsys, "run", "zoo/no-such-recipe.toml")
    assert status == 2 and "No recipe file" in err


def test_list_shows_every_rule_with_its_parameters(capsys):
    status, out, _ = _main(capsys, "list")
    assert status == 0
    lines = out.splitlines()
    for name in rules.names():
        line = next(line for line in lines if line.split()[:1] == [name])
        for parameter, default in rules.parameters(name).items():
            assert f"{parameter}={default!r}" in line
    assert re.search(r"predsim +beta=0.99, dim_in_decoder=4096", out)
    for name in ("mlp", "vgg8b", "vgg11b", "fashion_mnist", "cifar10"):
        assert name in out


def test_help_lists_the_choices(capsys):
    status, out, _ = _main(capsys, "train", "--help")
    assert status == 0
    squashed = "".join(out.split())
    assert "{" + ",".join(rules.names()) + "}" in squashed
    assert "--rule-option" in out
    assert "--train-examples" in out and "--no-augment" in out


def test_train_checks_its_own_arguments():
    for arguments, message in [
        (dict(train_examples=0), "train_examples must be a positive integer"),
        (dict(test_examples=2.5), "test_examples must be a positive integer"),
        (dict(batch_size=-1), "batch_size must be a positive integer"),
        (dict(learning_rate=0.0), "learning_rate must be a positive number"),
        (dict(milestones=[0, 3]), "milestones must be positive integers"),
        (dict(augment=False, cutout=14), "cutout is part of the training augmentation"),
        (dict(model="nope"), "Valid models: " + ", ".join(zoo.names())),
    ]:
        with pytest.raises(ValueError, match=message):
            experiment.train(**arguments, verbose=0)


def test_rule_options_reach_the_rule_and_the_layer_report(tmp_path, capsys):
    output = tmp_path / "rc.keras"
    status, out, _ = _main(
        capsys, "train", "--model", "mlp", "--rule", "random-classifier",
        "--rule-option", "feedback=scfb", "--rule-option", "trainable=false",
        "--epochs", "1", "--train-examples", "256", "--test-examples", "128",
        "--batch-size", "64", "--output", str(output), "--quiet",
    )  # fmt: skip
    assert status == 0
    model = keras.saving.load_model(output)
    assert model.rule == rules.get("random-classifier", feedback="scfb")
    # The final table has train and test columns for every layer.
    assert "training set (inference mode) and the test set" in out
    summary = json.loads((tmp_path / "rc.keras.json").read_text())
    assert summary["parameters"]["rule_options"] == {"feedback": "scfb", "trainable": False}
    assert 0.0 <= summary["train_metrics"]["block1_pred_accuracy"] <= 1.0


def test_bad_rule_option_is_a_usage_error(capsys):
    status, _, err = _main(capsys, "train", "--rule", "random-classifier", "--rule-option", "feedback=transpose")
    assert status == 2 and "feedback must be one of" in err
    status, _, err = _main(capsys, "train", "--rule", "pred", "--rule-option", "beta=0.5")
    assert status == 2 and "does not take beta" in err


def test_tune_searches_any_rule_parameter_from_the_command_line():
    from keras_local.cli import tune as tune_command

    args = cli.build_parser().parse_args(
        ["tune", "--model", "lra_mlp", "--rule", "rec-lra", "--range", "rule.gamma", "0.001", "0.1"]
    )
    arguments = tune_command.tune_arguments(args)
    assert arguments["space"]["rule.gamma"] == [0.001, 0.1]
    assert {"learning_rate", "dropout"} <= set(arguments["space"])  # the defaults stay
    args = cli.build_parser().parse_args(
        ["tune", "--rule", "pred", "--rule-option", "gamma=2"]
    )
    with pytest.raises(ValueError, match="does not take gamma"):
        tune_command.tune_arguments(args)


def test_internal_errors_keep_their_traceback(monkeypatch, capsys):
    """Only the user's mistakes are usage errors; a bug is not hidden."""

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(experiment, "train", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        cli.main(["train", "--epochs", "1"])


def test_non_numeric_rule_parameters_are_named(capsys):
    status, _, err = _main(capsys, "train", "--rule", "predsim", "--rule-option", "beta=high")
    assert status == 2 and "beta must be a number in [0, 1], got 'high'" in err
    status, _, err = _main(capsys, "train", "--rule", "pred", "--rule-option", "dim_in_decoder=0")
    assert status == 2 and "dim_in_decoder must be a positive integer, got 0" in err
    with pytest.raises(ValueError, match="beta must be a number in"):
        rules.get("predsim-bpf", beta="0.5")
