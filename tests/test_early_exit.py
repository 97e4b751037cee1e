"""Early-exit inference (`keras_local.early_exit`), probe heads
(`rules.with_probes`) and `keras-local early-exit`."""

import json
import os
import re

import keras
import numpy as np
import pytest
from keras import ops

from keras_local import early_exit
from keras_local import rules
from keras_local import zoo
from keras_local.ops import prediction_loss
from tests.conftest import gradients
from tests.conftest import random_batch
from tests.conftest import tiny_conv_model

TENSORFLOW = keras.backend.backend() == "tensorflow"
# The compiled path is TensorFlow's; the eager one runs on every backend.
PATHS = [pytest.param(True, id="compiled", marks=pytest.mark.skipif(
    not TENSORFLOW, reason="the compiled early-exit path is TensorFlow's")),
    pytest.param(False, id="eager")]  # fmt: skip


def confident_heads(model, scale=3.0, seed=0):
    """Random (instead of zero) kernels everywhere, large in the heads, so
    that exits disagree and their confidences spread over (0.2, 1)."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        if variable.path.endswith("kernel"):
            std = scale if ("head" in variable.path or "probe" in variable.path
                            or "classifier" in variable.path) else 0.5  # fmt: skip
            variable.assign(rng.normal(0, std, variable.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)  # the same network in every test process
    return confident_heads(tiny_conv_model(rule="pred"))


def mixed_threshold(model, x, criterion="max_probability"):
    """A threshold between two first-exit confidences near their median, so
    that about half the batch exits first, placed as far as possible from
    every exit's confidences (a confidence within float noise of it could
    decide differently in a batch of one)."""
    confidences = [
        np.asarray(early_exit.confidence(p, criterion))
        for p in early_exit.exit_probabilities(model, x)
    ]
    first = np.sort(confidences[0])
    middle = len(first) // 2
    candidates = (first[middle - 3 : middle + 2] + first[middle - 2 : middle + 3]) / 2
    every = np.concatenate(confidences)
    margins = [np.min(np.abs(every - t)) for t in candidates]
    return float(candidates[int(np.argmax(margins))])


def test_exits_in_block_order_then_the_output(model):
    exits = early_exit.exits(model)
    assert [(e.index, e.name, e.blocks_run) for e in exits] == [
        (0, "block1", 1), (1, "block2", 2), (2, "block3", 3), (3, "output", 3),
    ]  # fmt: skip
    assert list(early_exit.blocks_run(model, [3, 0, 1])) == [3, 1, 2]


def test_backprop_has_one_exit_and_probes_give_one_per_block():
    plain = tiny_conv_model(rule="backprop")
    assert [e.name for e in early_exit.exits(plain)] == ["output"]
    x, _ = random_batch(4)
    probabilities, exit_index = early_exit.predict_early_exit(plain, x, 0.0)
    assert np.all(exit_index == 0)  # the only exit is the full network
    np.testing.assert_allclose(
        probabilities, ops.convert_to_numpy(ops.softmax(plain(x, training=False))), atol=1e-6
    )
    probed = tiny_conv_model(rule=rules.with_probes("backprop"))
    assert [e.name for e in early_exit.exits(probed)] == ["block1", "block2", "block3", "output"]


def test_confidence_criteria():
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]], "float32")
    np.testing.assert_allclose(np.asarray(early_exit.confidence(p)), [1.0, 0.25, 0.5])
    np.testing.assert_allclose(
        np.asarray(early_exit.confidence(p, "entropy")), [1.0, 0.0, 0.5], atol=1e-6
    )
    with pytest.raises(ValueError, match="criterion must be one of"):
        early_exit.confidence(p, "margin")


@pytest.mark.backend
@pytest.mark.parametrize("compiled", PATHS)
def test_threshold_above_one_is_the_full_network(model, compiled):
    x, _ = random_batch(12, seed=1)
    probabilities, exit_index = early_exit.predict_early_exit(
        model, x, 1.01, batch_size=5, compiled=compiled
    )
    full = ops.convert_to_numpy(ops.softmax(model(x, training=False)))
    np.testing.assert_allclose(probabilities, full, atol=1e-6)
    assert np.all(exit_index == 3)


@pytest.mark.backend
@pytest.mark.parametrize("compiled", PATHS)
@pytest.mark.parametrize("criterion", early_exit.CRITERIA)
def test_threshold_zero_answers_at_the_first_head(model, compiled, criterion):
    x, _ = random_batch(12, seed=2)
    probabilities, exit_index = early_exit.predict_early_exit(
        model, x, 0.0, criterion=criterion, compiled=compiled
    )
    features, outputs = model.hidden_blocks[0](x, training=False)
    first = ops.convert_to_numpy(ops.softmax(model.objectives[0].predict(features, outputs)))
    np.testing.assert_allclose(probabilities, first, atol=1e-6)
    assert np.all(exit_index == 0)


@pytest.mark.backend
@pytest.mark.parametrize("compiled", PATHS)
@pytest.mark.parametrize("criterion", early_exit.CRITERIA)
def test_a_mixed_batch_answers_each_example_as_alone(model, compiled, criterion):
    x, _ = random_batch(24, seed=3)
    threshold = mixed_threshold(model, x, criterion)
    probabilities, exit_index = early_exit.predict_early_exit(
        model, x, threshold, criterion=criterion, batch_size=16, compiled=compiled
    )
    assert len(set(exit_index.tolist())) >= 2, exit_index  # really mixed
    for i in range(len(x)):
        alone = early_exit.predict_early_exit(
            model, x[i : i + 1], threshold, criterion=criterion, compiled=compiled
        )
        assert alone.exit_index[0] == exit_index[i]
        np.testing.assert_allclose(alone.probabilities[0], probabilities[i], atol=1e-6)
    # The same as choosing among every exit's answers after a full pass.
    decided = early_exit.decide(early_exit.exit_probabilities(model, x), threshold, criterion)
    np.testing.assert_array_equal(decided.exit_index, exit_index)
    np.testing.assert_allclose(decided.probabilities, probabilities, atol=1e-6)
    # Everything that exited was confident enough; everything later was not,
    # at every exit it passed.
    every = early_exit.exit_probabilities(model, x)
    confidences = np.asarray(early_exit.confidence(every, criterion))
    for i, k in enumerate(exit_index):
        assert np.all(confidences[:k, i] < threshold)
        assert k == len(every) - 1 or confidences[k, i] >= threshold


def count_examples_per_block(model, patch, graph):
    """Wraps each block's `call` to count the examples it receives (a
    variable updated in the graph when `graph`, so that only branches that
    really run count)."""
    counts = [keras.Variable(0, dtype="int32", trainable=False) for _ in model.hidden_blocks]
    for block, count in zip(model.hidden_blocks, counts):
        original = block.call

        def call(inputs, *args, _original=original, _count=count, **kwargs):
            if graph:
                import tensorflow as tf

                with tf.control_dependencies([_count.value.assign_add(tf.shape(inputs)[0])]):
                    inputs = tf.identity(inputs)
            else:
                _count.assign(_count.value + ops.shape(inputs)[0])
            return _original(inputs, *args, **kwargs)

        patch.setattr(block, "call", call)
    return counts


@pytest.mark.backend
@pytest.mark.parametrize("compiled", PATHS)
def test_later_blocks_run_only_on_the_examples_left(compiled, monkeypatch):
    model = confident_heads(tiny_conv_model(rule="pred"))
    x, _ = random_batch(20, seed=4)
    threshold = mixed_threshold(model, x)
    _, expected = early_exit.predict_early_exit(model, x, threshold, compiled=False)
    counts = count_examples_per_block(model, monkeypatch, graph=compiled)

    _, exit_index = early_exit.predict_early_exit(model, x, threshold, compiled=compiled)
    np.testing.assert_array_equal(exit_index, expected)
    # Block b+1 runs on the examples that did not answer at block b's exit.
    left = [int(np.sum(exit_index >= k)) for k in range(3)]
    assert [int(c.numpy() if hasattr(c, "numpy") else c) for c in counts] == left
    assert left[0] == 20 and left[1] < 20

    for c in counts:
        c.assign(0)
    early_exit.predict_early_exit(model, x, 0.0, compiled=compiled)
    assert [int(ops.convert_to_numpy(c.value)) for c in counts] == [20, 0, 0]


@pytest.mark.backend
def test_bad_arguments_are_clear(model):
    x, _ = random_batch(2)
    with pytest.raises(ValueError, match="threshold must be a number"):
        early_exit.predict_early_exit(model, x, "high")
    with pytest.raises(ValueError, match="expects inputs of shape"):
        early_exit.predict_early_exit(model, x[:, :4], 0.5)
    with pytest.raises(ValueError, match="needs a keras_local LocalModel"):
        early_exit.exits(keras.Sequential([keras.layers.Dense(2)]))


# ------------------------------------------------------------------ probes
def test_probes_wrap_any_rule_and_round_trip_through_the_registry():
    rule = rules.with_probes("sim")
    assert rule == rules.get(rules.serialize(rule))
    assert rules.serialize(rule) == {
        "name": "probes",
        "config": {"rule": {"name": "sim", "config": {}}, "dim_in_decoder": None},
    }
    # Everything but the objectives is the wrapped rule's.
    for name in ("backprop", "sim", "direct-feedback-alignment", "predsim"):
        wrapped, probed = rules.get(name), rules.with_probes(name)
        for attribute in ("detach_blocks", "default_activation", "output_kernel_initializer",
                          "output_feedback", "top_down", "trains_groups", "has_output_layer",
                          "output_loss_weight"):  # fmt: skip
            assert getattr(probed, attribute) == getattr(wrapped, attribute), (name, attribute)
    assert rules.with_probes("predsim", beta=0.5).beta == 0.5
    assert rules.get("probes", rule="pred", dim_in_decoder=512).rule.dim_in_decoder == 512
    # Objectives that have a classifier are kept as they are.
    model = tiny_conv_model(rule=rules.with_probes("predsim"))
    assert all(type(o).__name__ == "LocalLossObjective" for o in model.objectives)


def same_place(path):
    """A variable's path without the model's name and the probe wrapper's."""
    return re.sub(r"block\d+_probed/", "", path.split("/", 1)[1])


@pytest.mark.parametrize("name", ["backprop", "sim", "direct-feedback-alignment"])
def test_probes_leave_the_wrapped_rules_gradients_unchanged(name):
    """Every block, head and output variable gets exactly the gradient it gets
    without probes; the probes learn from their own cross-entropy only."""
    x, y = random_batch()
    plain = tiny_conv_model(rule=name)
    probed = tiny_conv_model(rule=rules.with_probes(name))
    plain_keys = [same_place(v.path) for v in plain.trainable_variables]
    kept = [v for v in probed.trainable_variables if "/probe/" not in v.path]
    assert [same_place(v.path) for v in kept] == plain_keys
    assert len(probed.trainable_variables) - len(kept) == 6  # kernel and bias of 3 probes
    # Every weight, the fixed random ones (direct feedback alignment's)
    # included.
    weights = [w for w in probed.weights if "/probe/" not in w.path]
    assert [same_place(w.path) for w in weights] == [same_place(w.path) for w in plain.weights]
    for weight, value in zip(weights, plain.weights):
        weight.assign(value.value)

    got, _, results = probed.compute_gradients(x, y)
    expected, _, _ = plain.compute_gradients(x, y)
    by_key = dict(zip(plain_keys, expected))
    for variable, gradient in zip(probed.trainable_variables, got):
        if "/probe/" in variable.path:
            continue
        np.testing.assert_allclose(
            np.asarray(gradient), np.asarray(by_key[same_place(variable.path)]), atol=1e-6,
            err_msg=variable.path,
        )
    # Each probe's gradient is that of its own cross-entropy on the detached
    # features, and the probe loss is reported per block.
    for stage in range(len(probed.objectives)):
        assert "probe_loss" in results[stage] and "logits" in results[stage]

    def probe_loss_from_detached_features(stage=1):
        h = x
        for block in probed.hidden_blocks[: stage + 1]:
            features, h = block(ops.stop_gradient(h), training=True)
        return prediction_loss(probed.objectives[stage].probe(ops.stop_gradient(features)), y)

    mine = [v for v in probed.objectives[1].probe.trainable_variables]
    reference = gradients(probe_loss_from_detached_features, mine)
    by_id = {id(v): g for v, g in zip(probed.trainable_variables, got)}
    for variable, expected_gradient in zip(mine, reference):
        np.testing.assert_allclose(np.asarray(by_id[id(variable)]), expected_gradient, atol=1e-6)


def test_a_probed_model_trains_saves_and_loads(tmp_path):
    x, y = random_batch(16)
    model = zoo.mlp(layers=2, units=16, num_classes=5, input_shape=(8, 8, 3),
                    rule=rules.with_probes("backprop"))  # fmt: skip
    logs = model.train_on_batch(x, y, return_dict=True)
    assert {"block1_probe_loss", "block2_probe_loss", "block1_pred_accuracy"} <= set(logs)
    path = str(tmp_path / "probed.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.rule == model.rule
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    for a, b in zip(loaded.objectives, model.objectives):
        np.testing.assert_allclose(np.asarray(a.probe.dense.kernel), np.asarray(b.probe.dense.kernel))
    probabilities, exit_index = early_exit.predict_early_exit(loaded, x, 0.0)
    assert np.all(exit_index == 0) and probabilities.shape == (16, 5)


# --------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def saved_probed_mlp(tmp_path_factory, fashion_subset):
    """A small probed MLP trained for a few steps on real Fashion-MNIST."""
    (x, y), _ = fashion_subset
    model = zoo.mlp(layers=3, units=32, input_shape=(28, 28, 1),
                    rule=rules.with_probes("backprop"), learning_rate=2e-3)  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(2e-3), jit_compile=False)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    path = str(tmp_path_factory.mktemp("early_exit") / "mlp.keras")
    model.save(path)
    return path


def test_cli_early_exit_report(saved_probed_mlp, capsys):
    from keras_local import cli

    png = saved_probed_mlp.replace(".keras", "-report.png")
    status = cli.main(["early-exit", saved_probed_mlp, "--dataset", "fashion_mnist",
                       "--examples", "200", "--timing-examples", "64", "--repeats", "1",
                       "--thresholds", "0", "0.5", "0.9", "1.01", "--plot", png])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert "threshold" in out and "full net" in out and "exited at" in out
    assert os.path.getsize(png) > 1000
    with open(png[: -len(".png")] + ".json") as f:
        result = json.load(f)
    rows = {row["threshold"]: row for row in result["rows"]}
    assert rows[0.0]["mean_blocks"] == 1.0 and rows[0.0]["exit_fractions"][0] == 1.0
    assert rows[1.01]["mean_blocks"] == 3.0
    assert rows[1.01]["accuracy"] == result["full_network"]["accuracy"]
    assert rows[1.01]["exit_fractions"][-1] == 1.0
    assert result["num_examples"] == 200 and [e["name"] for e in result["exits"]] == [
        "block1", "block2", "block3", "output"]  # fmt: skip
    assert result["full_network"]["accuracy"] > 0.5  # it learned something
    for row in result["rows"]:
        assert row["seconds_per_example"] > 0 and abs(sum(row["exit_fractions"]) - 1) < 1e-9
