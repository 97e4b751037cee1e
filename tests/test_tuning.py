"""`keras_local.tuning` and `keras-local tune`: tiny searches on synthetic data
and a small real Fashion-MNIST subset."""

import glob
import json
import os
import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest

import keras_local  # noqa: F401 - registers the classes `load_model` needs
from keras_local import cli
from keras_local import tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()
# XLA compilation takes seconds per model on TensorFlow's CPU path, which would
# dominate these one-epoch trials; JAX always jits, and compiles fast.
JIT = None if BACKEND == "jax" else False
# One dense block of 8 units: a trial is a few steps.
TINY = {"layers": 1, "units": 8}


def synthetic(n=64, num_classes=4, seed=0):
    """Easy 8x8x1 images: the class shows as a bright pixel."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = (np.arange(n) % num_classes).astype("int32")
    x[np.arange(n), y, 0, 0] += 4.0
    return x, y


def _tune(directory, **kwargs):
    arguments = dict(
        model="mlp", rule="predsim", data=synthetic(), fixed=TINY, tuner="random",
        max_trials=2, max_epochs=1, batch_size=16, directory=str(directory),
        project_name="search", retrain=False, export=False, jit_compile=JIT, verbose=0,
    )  # fmt: skip
    arguments.update(kwargs)
    return tuning.tune(**arguments)


class Recorder(keras.callbacks.Callback):
    """Counts the trials that start training (class-level: keras-tuner
    deep-copies the callbacks of every trial)."""

    runs = 0

    def on_train_begin(self, logs=None):
        type(self).runs += 1


class Interrupt(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise KeyboardInterrupt


class Fail(keras.callbacks.Callback):
    """Fails the trials whose (class-level) count is in `which`."""

    count = 0
    which = None

    def on_train_begin(self, logs=None):
        type(self).count += 1
        if self.which is None or type(self).count in self.which:
            raise RuntimeError(f"boom in trial number {type(self).count}")


def _read(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def resumed_search(tmp_path_factory):
    """Two trials (then the best retrained); a second call that asks for a
    third trial and is interrupted as it starts; a third call that resumes."""
    directory = tmp_path_factory.mktemp("tuning")
    output = directory / "saved" / "model.keras"
    Recorder.runs = 0
    first = _tune(directory, callbacks=[Recorder()], retrain=True, output=str(output))
    first_runs = Recorder.runs
    project = directory / "search"
    files = {name: _read(project / name) for name in ("results.json", "best_hyperparameters.json")}
    markdown = (project / "results.md").read_text()
    with pytest.raises(KeyboardInterrupt):
        _tune(directory, max_trials=3, callbacks=[Interrupt()])
    Recorder.runs = 0
    resumed = _tune(directory, max_trials=3, callbacks=[Recorder()])
    return dict(
        first=first, first_runs=first_runs, files=files, markdown=markdown,
        resumed=resumed, resumed_runs=Recorder.runs, output=output, project=project,
    )  # fmt: skip


@pytest.mark.backend
def test_search_writes_results_and_resumes_without_repeating_trials(resumed_search):
    first, resumed = resumed_search["first"], resumed_search["resumed"]
    # Two trials ran, both completed, and their results were written.
    assert resumed_search["first_runs"] == 2
    assert [t["trial_id"] for t in first.trials] == ["0", "1"]
    assert all(t["status"] == "COMPLETED" for t in first.trials)
    assert first.num_completed == 2 and first.num_failed == 0
    recorded = resumed_search["files"]["results.json"]
    assert [t["trial_id"] for t in recorded["trials"]] == ["0", "1"]
    assert recorded["objective"] == "val_accuracy"
    best = resumed_search["files"]["best_hyperparameters.json"]
    assert best["score"] == max(t["score"] for t in first.trials)
    assert best["hyperparameters"] == first.best_hyperparameters

    # The best hyperparameters lie in the search space (the default one).
    space = tuning.normalize_space(tuning.default_space("predsim"))
    assert set(best["hyperparameters"]) == set(space) == {"learning_rate", "dropout", "beta"}
    for name, value in best["hyperparameters"].items():
        assert tuning.in_space(value, space[name]), (name, value)

    # The resumed search ran only the new trial; the first two are unchanged.
    assert resumed_search["resumed_runs"] == 1
    assert [t["trial_id"] for t in resumed.trials] == ["0", "1", "2"]
    for before, after in zip(first.trials, resumed.trials):
        assert after["score"] == before["score"]
        assert after["hyperparameters"] == before["hyperparameters"]
    assert resumed.trials[2]["status"] == "COMPLETED"
    assert resumed.trials[2]["hyperparameters"] not in [t["hyperparameters"] for t in first.trials]
    assert len(glob.glob(str(resumed_search["project"] / "trial_*"))) == 3

    # The retrained best model was saved and loads.
    assert first.model_path == str(resumed_search["output"])
    model = keras.saving.load_model(first.model_path)
    assert model.predict(synthetic()[0][:4], verbose=0).shape == (4, 4)


def test_results_table_and_best_hyperparameters(resumed_search):
    first = resumed_search["first"]
    markdown = resumed_search["markdown"]
    assert "| rank | trial | val accuracy | learning_rate | dropout | beta |" in markdown
    assert markdown.count("| COMPLETED |") == 2
    assert "never the test set" in markdown
    assert f"Trial {first.best_trial_id}'s configuration retrained on all 64 training" in markdown
    best = resumed_search["files"]["best_hyperparameters.json"]
    assert best["model"] == "mlp" and best["rule"] == "predsim"
    assert best["fixed"] == TINY
    assert best["retrained_model"] == first.model_path
    summary = _read(first.model_path + ".json")
    assert summary["trial_id"] == first.best_trial_id
    # Arrays, not a data set name: no `keras-local train` equivalent.
    assert first.train_command is None


def test_changed_settings_do_not_resume(resumed_search):
    directory = resumed_search["project"].parent
    with pytest.raises(ValueError, match=r"other settings \(max_epochs: 1 then, 2 now"):
        _tune(directory, max_trials=3, max_epochs=2)
    # Another project, or overwrite, starts afresh (checked without running).
    with pytest.raises(ValueError, match="other settings"):
        _tune(directory, space={"learning_rate": [1e-3, 2e-3]})


def test_overwrite_starts_afresh(tmp_path):
    """With overwrite, a project with other settings is replaced, and its
    settings record (search.json) is the new search's."""
    _tune(tmp_path, max_trials=1)
    with pytest.raises(ValueError, match="overwrite=True, --overwrite"):
        _tune(tmp_path, max_trials=1, max_epochs=2)
    result = _tune(tmp_path, max_trials=1, max_epochs=2, overwrite=True)
    assert [t["trial_id"] for t in result.trials] == ["0"]
    assert _read(tmp_path / "search" / "search.json")["max_epochs"] == 2
    assert _tune(tmp_path, max_trials=1, max_epochs=2).trials == result.trials  # resumes


@pytest.mark.parametrize("limit, trials", [(3, 2), (1, 3)])
def test_a_search_where_every_trial_fails_raises(tmp_path, limit, trials):
    """keras-tuner marks failed trials and still returns "best" values; with
    fewer failures than its limit it does not even raise."""
    Fail.count, Fail.which = 0, None
    with pytest.raises(tuning.TuningError, match=r"boom in trial number \d"):
        _tune(
            tmp_path, max_trials=trials, callbacks=[Fail()], max_consecutive_failed_trials=limit
        )
    recorded = _read(tmp_path / "search" / "results.json")
    assert {t["status"] for t in recorded["trials"]} == {"FAILED"}
    assert len(recorded["trials"]) == min(limit, trials)
    assert "boom in trial number" in recorded["trials"][0]["error"]
    assert not (tmp_path / "search" / "best_hyperparameters.json").exists()
    assert "FAILED: RuntimeError: boom" in (tmp_path / "search" / "results.md").read_text()


def test_a_failed_trial_is_reported(tmp_path):
    Fail.count, Fail.which = 0, {2}
    lines = []
    with pytest.warns(RuntimeWarning, match="Trial 1 failed: RuntimeError: boom"):
        result = _tune(tmp_path, callbacks=[Fail()], print_fn=lines.append)
    assert result.num_completed == 1 and result.num_failed == 1
    assert [t["status"] for t in result.trials] == ["COMPLETED", "FAILED"]
    assert result.best_trial_id == "0"
    assert any(line.startswith("WARNING: Trial 1 failed") for line in lines)


def test_hyperband_continues_the_best_trials(tmp_path):
    """Hyperband (the default) with max_epochs 2 and factor 2: two 1-epoch
    trials, then the better one goes on from its weights to epoch 2 (capped
    there by max_trials, before the next bracket)."""
    result = _tune(tmp_path, tuner="hyperband", max_epochs=2, factor=2, max_trials=3)
    assert [t["status"] for t in result.trials] == ["COMPLETED"] * 3
    assert [t["tuner"]["tuner/epochs"] for t in result.trials] == [1, 1, 2]
    assert result.trials[2]["tuner"]["tuner/initial_epoch"] == 1
    continued = result.trials[2]
    first_round = {t["trial_id"]: t for t in result.trials[:2]}
    parent = first_round[continued["tuner"]["tuner/trial_id"]]
    assert parent["score"] == max(t["score"] for t in first_round.values())
    assert continued["hyperparameters"] == parent["hyperparameters"]


def test_rule_without_beta_gets_no_beta_hyperparameter():
    def searched(rule, **kwargs):
        hypermodel = tuning.LocalHyperModel(
            "mlp", rule, input_shape=(8, 8, 1), num_classes=4, **kwargs
        )
        hp = keras_tuner.HyperParameters()
        values = hypermodel.declare(hp)
        assert set(values) == {h.name for h in hp.space}
        return values

    assert set(searched("backprop")) == {"learning_rate", "dropout"}
    assert set(searched("random-classifier")) == {"learning_rate", "dropout"}
    assert set(searched("predsim")) == {"learning_rate", "dropout", "beta"}
    # predsim-bpf's beta (0.01 by default) is searched on its own scale.
    bpf_beta = tuning.normalize_space(tuning.default_space("predsim-bpf"))["beta"]
    assert tuning.in_space(0.01, bpf_beta) and bpf_beta["sampling"] == "log"
    with pytest.raises(ValueError, match="does not take beta"):
        searched("backprop", space={"beta": [0.5, 0.9]})
    with pytest.raises(ValueError, match="does not take beta"):
        searched("pred", fixed={"beta": 0.5})
    with pytest.raises(ValueError, match="zoo.mlp does not take depth; it takes "):
        searched("pred", space={"depth": [1, 3]})


class _Built(Exception):
    """Stops `experiment.train` once it has built its network."""


def _built_by_train(monkeypatch, tmp_path, **kwargs):
    """The network `experiment.train` (`keras-local train`) builds."""
    from keras_local import data as data_lib
    from keras_local import experiment
    from keras_local import zoo

    built, get = [], zoo.get

    def recording(name):
        builder = get(name)
        return lambda **arguments: built.append(builder(**arguments)) or built[-1]

    def stop(*args, **kwargs):
        raise _Built

    monkeypatch.setattr(zoo, "get", recording)
    monkeypatch.setattr(data_lib, "load", stop)
    with pytest.raises(_Built):
        experiment.train(
            dataset="mnist", epochs=1, output=str(tmp_path / "m.keras"), verbose=0, **kwargs
        )
    return built[-1]


@pytest.mark.parametrize("options, code_units", [(None, 1024), ({"code_units": 64}, 64)])
def test_train_and_tune_build_the_same_rule(monkeypatch, tmp_path, options, code_units):
    """`tune` builds al_mlp under associated as `train` and the builder do:
    the network's 1024-unit code unless the user sets it, and then theirs."""
    from keras_local import zoo

    hypermodel = tuning.LocalHyperModel(
        "al_mlp", "associated", input_shape=(28, 28, 1), num_classes=10, rule_options=options
    )
    tuned = hypermodel.build(keras_tuner.HyperParameters()).rule
    trained = _built_by_train(
        monkeypatch, tmp_path, model="al_mlp", rule="associated", rule_options=options
    ).rule
    monkeypatch.undo()
    built = zoo.get("al_mlp")(rule={"name": "associated", "config": dict(options or {})}).rule
    resolved = zoo.resolve_rule("al_mlp", "associated", options)
    assert tuned.code_units == trained.code_units == built.code_units == code_units
    assert tuned == trained == built == resolved
    if options is None:
        assert zoo.get("al_mlp")(rule="associated").rule == tuned


def test_rule_parameters_are_searched_as_rule_options():
    hypermodel = tuning.LocalHyperModel(
        "al_mlp",
        "associated",
        input_shape=(28, 28, 1),
        num_classes=10,
        space={"rule": {"code_units": {"values": [32]}}, "learning_rate": 1e-3},
    )
    assert set(hypermodel.space) == {"rule.code_units", "learning_rate"}
    hp = keras_tuner.HyperParameters()
    assert hypermodel.build(hp).rule.code_units == 32
    assert hp.values == {"rule.code_units": 32, "learning_rate": 1e-3}
    command = hypermodel.train_settings(hp.values, dataset="mnist").command_line()
    assert command.endswith("--learning-rate 0.001 --rule-option code_units=32")
    # Searched beta as a builder argument keeps working, and a rule
    # parameter is checked like beta.
    predsim = tuning.LocalHyperModel("mlp", "predsim", input_shape=(8, 8, 1), num_classes=4)
    assert "beta" in predsim.space
    for kwargs, message in [
        (dict(rule="backprop", space={"rule.gamma": [0.1, 0.5]}), "does not take gamma"),
        (dict(rule="predsim", space={"rule.beta": [0.1, 2.0]}), r"beta lies in \[0, 1\]"),
        (
            dict(rule="predsim", space={"rule.beta": [0.1, 0.5]}, rule_options={"beta": 0.2}),
            "given as a rule option",
        ),
        (dict(rule="predsim", space={"rule.beta": [0.1, 0.5], "beta": [0.1, 0.5]}), "given"),
        (dict(rule="predsim", fixed={"rule_options": {"beta": 0.5}}), "cannot be searched"),
    ]:
        with pytest.raises(ValueError, match=message):
            tuning.LocalHyperModel("mlp", input_shape=(8, 8, 1), num_classes=4, **kwargs)


def test_beta_and_dim_in_decoder_are_rule_options():
    """A bare `beta` or `dim_in_decoder`, searched or fixed, reaches the
    builder inside its rule, never as a builder argument, and is a rule
    option of the `keras-local train` command."""
    hypermodel = tuning.LocalHyperModel(
        "mlp",
        "predsim",
        input_shape=(8, 8, 1),
        num_classes=4,
        space={"beta": {"value": 0.9}, "learning_rate": 1e-3},
        fixed={"dim_in_decoder": 64, **TINY},
    )
    calls, builder = [], hypermodel.builder
    hypermodel.builder = lambda **arguments: calls.append(arguments) or builder(**arguments)
    hp = keras_tuner.HyperParameters()
    rule = hypermodel.build(hp).rule
    assert rule.beta == 0.9 and rule.dim_in_decoder == 64
    assert not {"beta", "dim_in_decoder"} & set(calls[0])
    assert calls[0]["rule"] == {"name": "predsim", "config": {"dim_in_decoder": 64, "beta": 0.9}}
    # `layers` and `units` are not `keras-local train` settings: no command.
    assert hypermodel.train_settings(hp.values, dataset="mnist") is None
    hypermodel.fixed = {"dim_in_decoder": 64}
    settings = hypermodel.train_settings(hp.values, dataset="mnist", batch_size=64)
    assert settings.rule_options == {"beta": 0.9, "dim_in_decoder": 64}
    assert settings.command_line() == (
        "keras-local train --dataset mnist --batch-size 64 --learning-rate 0.001 "
        "--rule-option beta=0.9 --rule-option dim_in_decoder=64"
    )


def test_keras_tuner_is_imported_only_when_searching():
    """`import keras_local` and the search spaces and recipes do not import
    keras-tuner; without it, `tune` names the extra to install."""
    code = (
        "import sys, keras_local\n"
        "from keras_local import tuning\n"
        "tuning.normalize_space(tuning.default_space('predsim'))\n"
        "tuning.load_recipe(sys.argv[1])\n"
        "assert 'keras_tuner' not in sys.modules, 'imported'\n"
        "sys.modules['keras_tuner'] = None\n"
        "try:\n"
        "    tuning.tune\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    recipe = glob.glob(os.path.join(ROOT, "tuning", "*.toml"))[0]
    done = subprocess.run(
        [sys.executable, "-c", code, recipe], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'pip install "keras-local[tune]"' in done.stdout


def test_search_space_forms_and_errors():
    space = tuning.normalize_space(
        {
            "learning_rate": [1e-4, 1e-2],
            "units": {"min": 8, "max": 64, "step": 8},
            "activation": {"values": ["relu", "tanh"]},
            "width": 2,
            "dropout": None,
        }
    )
    assert space == {
        "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
        "units": {"type": "int", "min": 8, "max": 64, "sampling": "linear", "step": 8},
        "activation": {"type": "choice", "values": ["relu", "tanh"]},
        "width": {"type": "fixed", "value": 2},
    }
    hp = keras_tuner.HyperParameters()
    for name, entry in space.items():
        tuning.space.declare(hp, name, entry)
    assert hp.values["units"] in range(8, 65, 8) and hp.values["width"] == 2
    for bad, message in [
        ({"learning_rate": [0.0, 1e-2]}, "must be positive"),
        ({"dropout": [0.0, 1.0]}, r"Dropout rates lie in \[0, 1\)"),
        ({"dropout": [0.3, 0.1]}, "not below max"),
        ({"beta": {"min": 0.5, "max": 0.9, "sampling": "cubic"}}, "sampling 'cubic'"),
        ({"beta": {"lo": 0.5}}, "Unknown key lo"),
        ({"beta": [0.1, 0.2, 0.3]}, r"must be \[min, max\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            tuning.normalize_space(bad)


def test_validation_split_is_disjoint_and_deterministic():
    x = np.arange(100, dtype="float32").reshape(100, 1)
    y = np.arange(100, dtype="int32") % 10
    (x_train, y_train), (x_val, y_val) = tuning.split_validation(x, y, 0.2, seed=3)
    assert len(x_val) == 20 and len(x_train) == 80
    assert set(x_train[:, 0]).isdisjoint(x_val[:, 0])
    assert set(x_train[:, 0]) | set(x_val[:, 0]) == set(x[:, 0])
    np.testing.assert_array_equal(y_val, x_val[:, 0].astype("int32") % 10)  # pairs kept
    again = tuning.split_validation(x, y, 0.2, seed=3)
    np.testing.assert_array_equal(again[1][0], x_val)
    other = tuning.split_validation(x, y, 0.2, seed=4)
    assert not np.array_equal(other[1][0], x_val)
    for fraction in (0.0, 1.0, 0.001, -0.1):
        with pytest.raises(ValueError, match="validation"):
            tuning.split_validation(x, y, fraction)


def test_search_recipes_are_valid():
    recipes = sorted(glob.glob(os.path.join(ROOT, "tuning", "*.toml")))
    assert recipes
    for path in recipes:
        arguments = tuning.load_recipe(path)
        assert arguments["project_name"] == os.path.basename(path)[: -len(".toml")]
        tuning.normalize_space(arguments["space"], arguments["rule"])
        assert arguments["tuner"] in tuning.TUNERS
        assert set(arguments) - {"data", "project_name"} <= set(tuning.RECIPE_KEYS)


def test_cli_tune_on_a_fashion_mnist_subset(tmp_path, capsys):
    directory, output = tmp_path / "tuning", tmp_path / "best" / "model.keras"
    argv = [
        "tune", "--model", "mlp", "--rule", "predsim", "--dataset", "fashion_mnist",
        "--tuner", "random", "--max-trials", "1", "--max-epochs", "1",
        "--validation-fraction", "0.25", "--train-examples", "256", "--test-examples", "128",
        "--learning-rate", "1e-3", "3e-3", "--fixed", "layers=1", "--fixed", "units=16",
        "--batch-size", "64", "--directory", str(directory), "--output", str(output),
        "--quiet",
    ]  # fmt: skip
    if JIT is False:
        argv.insert(1, "--no-xla")
    status = cli.main(argv)
    out = capsys.readouterr().out
    assert status == 0
    project = directory / "fashion_mnist-mlp-predsim"
    best = _read(project / "best_hyperparameters.json")
    assert 1e-3 <= best["hyperparameters"]["learning_rate"] <= 3e-3
    assert best["dataset"] == "fashion_mnist"
    settings = _read(project / "search.json")
    assert settings["data"]["examples"] == 256 and settings["validation_fraction"] == 0.25
    assert len(_read(project / "results.json")["trials"]) == 1
    assert "64 held-out training examples, 192 to train on" in out
    assert "Best: trial" in out and "Test accuracy of the retrained model" in out
    # `fixed` holds layers and units, which `keras-local train` does not take.
    assert best["train_command"] is None
    assert 0.0 <= best["test_accuracy"] <= 1.0
    assert keras.saving.load_model(output).count_inference_params() > 0
    if BACKEND == "tensorflow":  # elsewhere the export runs in a TensorFlow child process
        assert (output.parent / "saved_model" / "saved_model.pb").exists()
        assert best["exported_saved_model"] == str(output.parent / "saved_model")

    # A rule option that does not exist is a usage error, before any training.
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--rule-option", "gamma=2"])
    assert exit_info.value.code == 2
    assert "does not take gamma" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, status, message",
    [
        (tuning.TuningError("all 3 trial(s) failed"), 1, "error: all 3 trial(s) failed"),
        (KeyboardInterrupt(), 130, "Run the same command again to resume the search"),
    ],
)
def test_cli_tune_exit_status(monkeypatch, capsys, error, status, message):
    def tune(**kwargs):
        assert kwargs["space"]["beta"] == [0.9, 0.99]  # the range given
        assert set(kwargs["space"]) == {"learning_rate", "dropout", "beta"}
        raise error

    monkeypatch.setattr(tuning, "tune", tune)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["tune", "--beta", "0.9", "0.99"])
    assert exit_info.value.code == status
    assert message in capsys.readouterr().err
