"""The optimizer and batch-norm settings of a run: RunSettings, the command
line, the zoo's builders, and runs saved before the settings existed."""

import argparse
import json

import numpy as np
import pytest

from keras_local import experiment
from keras_local.layers import TorchBatchNormalization
from keras_local.optimizers import TorchAdam
from keras_local.optimizers import TorchSGD
from keras_local.run_settings import RunSettings
from keras_local.run_settings import SettingsError

SGD_FLAGS = [
    "--optimizer", "pytorch-sgd", "--momentum", "0.9", "--nesterov",
    "--weight-decay", "5e-4", "--pytorch-batch-norm",
]  # fmt: skip


def _parse(argv):
    parser = argparse.ArgumentParser()
    RunSettings.add_arguments(parser)
    return RunSettings.from_args(parser.parse_args(argv))


def test_command_line_flags_set_the_optimizer_and_round_trip():
    settings = _parse(SGD_FLAGS).check()
    assert (settings.optimizer, settings.momentum, settings.nesterov) == ("pytorch-sgd", 0.9, True)
    assert (settings.weight_decay, settings.pytorch_batch_norm) == (5e-4, True)
    line = settings.command_line()
    assert "--optimizer pytorch-sgd" in line and "--nesterov" in line
    assert _parse(line.split()[2:]) == settings
    # Runs of other optimizers never share an output file.
    name = settings.default_output()
    for part in ("optimizer=pytorch-sgd", "momentum=0.9", "-nesterov", "weight_decay=0.0005"):
        assert part in name
    assert "pytorch_batch_norm" in name
    assert "optimizer" not in RunSettings().default_output()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, pytorch-adam, pytorch-sgd"),
        ({"weight_decay": 1e-4}, "use it with optimizer pytorch-adam or pytorch-sgd"),
        ({"optimizer": "pytorch-adam", "momentum": 0.9}, "settings of optimizer pytorch-sgd"),
        ({"optimizer": "pytorch-sgd", "nesterov": True}, "above 0 for nesterov"),
        ({"optimizer": "pytorch-sgd", "momentum": 1.5}, "momentum must be in [0, 1)"),
        ({"optimizer": "pytorch-sgd", "weight_decay": -1.0}, "weight_decay must be a number >= 0"),
        ({"pytorch_batch_norm": "yes"}, "pytorch_batch_norm must be true or false"),
    ],
)
def test_bad_optimizer_settings_are_named(values, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace(")", r"\)")):
        RunSettings(**values).check()


def test_the_run_builds_the_optimizer_and_batch_norm_it_names():
    settings = RunSettings(
        model="mlp", width=1 / 64, learning_rate=0.05, optimizer="pytorch-sgd",
        momentum=0.9, nesterov=True, weight_decay=1e-4, pytorch_batch_norm=True, epochs=1,
    ).check()  # fmt: skip
    network = experiment.build_network(settings)
    network(np.zeros((2, 28, 28, 1), "float32"))
    assert isinstance(network.optimizer, TorchSGD)
    config = network.optimizer.get_config()
    assert (config["momentum"], config["nesterov"], config["weight_decay"]) == (0.9, True, 1e-4)
    norms = [b.norm for b in network.hidden_blocks if b.batch_norm]
    assert norms and all(isinstance(n, TorchBatchNormalization) for n in norms)
    default = experiment.build_network(RunSettings(model="mlp", width=1 / 64).check())
    default(np.zeros((2, 28, 28, 1), "float32"))
    assert type(default.optimizer).__name__ == "Adam"
    assert not any(isinstance(b.norm, TorchBatchNormalization) for b in default.hidden_blocks)


def test_a_short_run_with_the_papers_optimizer_learns_reloads_and_is_found_again(tmp_path):
    import keras

    settings = RunSettings(
        model="mlp", rule="pred", width=1 / 16, epochs=1, batch_size=64, learning_rate=5e-3,
        train_examples=1024, test_examples=256, optimizer="pytorch-adam",
        pytorch_batch_norm=True, augment=False, seed=1,
    ).check()  # fmt: skip
    output = str(tmp_path / "m.keras")
    result = experiment.train(settings, output=output, verbose=0)
    assert result.test_error < 60  # 10 classes: chance is 90% error (measured: 35.9)
    model = keras.saving.load_model(output)
    assert isinstance(model.optimizer, TorchAdam)
    assert int(model.optimizer.iterations) == 1024 // 64
    assert all(isinstance(b.norm, TorchBatchNormalization) for b in model.hidden_blocks)

    # A summary written before these settings existed lacks them: it had
    # their defaults, so a default run finds it, and this one is refused.
    with open(output + ".json") as f:
        summary = json.load(f)
    summary["parameters"]["optimizer"] = "adam"
    summary["parameters"]["pytorch_batch_norm"] = False
    old = RunSettings.from_dict(summary["parameters"]).check()
    for name in ("optimizer", "weight_decay", "momentum", "nesterov", "pytorch_batch_norm"):
        del summary["parameters"][name]
    with open(output + ".json", "w") as f:
        json.dump(summary, f)
    assert experiment.finished_run(output, old).test_error == result.test_error
    with pytest.raises(SettingsError, match="optimizer: 'adam' then, 'pytorch-adam' now"):
        experiment.finished_run(output, settings)


def test_the_decay_factor_is_a_setting_the_schedule_applies(tmp_path):
    """Mostafa et al. divide the learning rate by 5 at each milestone,
    Nøkland & Eidnes by 4 (the default)."""
    import keras

    settings = _parse(["--milestones", "1", "2", "--decay-factor", "0.2", "--epochs", "3"]).check()
    assert settings.decay_factor == 0.2 and "decay_factor=0.2" in settings.default_output()
    assert _parse(settings.command_line().split()[2:]) == settings
    assert RunSettings().decay_factor == 0.25 and "decay" not in RunSettings().default_output()
    for bad in (0, 1.5, -0.2, True):
        with pytest.raises(SettingsError, match="decay_factor"):
            RunSettings(decay_factor=bad).check()

    settings = RunSettings(
        model="mlp", rule="pred", width=1 / 64, epochs=3, batch_size=64, learning_rate=0.1,
        train_examples=128, test_examples=64, optimizer="pytorch-sgd", milestones=[1, 2],
        decay_factor=0.2, augment=False, seed=1,
    ).check()  # fmt: skip
    output = str(tmp_path / "m.keras")
    experiment.train(settings, output=output, verbose=0)
    model = keras.saving.load_model(output)
    # Epoch 3 (0-based 2) runs after both milestones: 0.1 * 0.2 * 0.2.
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.1 * 0.2**2, rtol=1e-6)
