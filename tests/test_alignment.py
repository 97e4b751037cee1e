"""`keras_local.analysis.alignment`: the angle per block between a rule's
update and backprop's gradient of the output loss (and between feedback and
forward weights), `keras-local analyze --alignment` and `AlignmentLogger`.

The references are computed independently of `alignment`: with the shared
`gradients` helper (a plain tape, `jax.grad` or torch autograd) on the
block's own objective, or on the output loss of the whole network."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_local import analysis
from keras_local import cli
from keras_local import rules
from keras_local import zoo
from keras_local.alignment import alignment_gradients
from keras_local.alignment import angle_deg
from keras_local.callbacks import AlignmentLogger
from keras_local.cli.analyze import alignment_subset
from keras_local.ops import prediction_loss
from tests.conftest import gradients
from tests.conftest import random_batch
from tests.conftest import tiny_conv_model


def feedback_layers(model):
    return [
        layer
        for layer in model._flatten_layers()
        if getattr(layer, "feedback_kernel", None) is not None
    ]


@pytest.mark.backend
@pytest.mark.parametrize("rule", ["backprop", "feedback-alignment-with-true-feedback"])
def test_backprop_is_aligned_with_itself(rule):
    """Backprop's update is the backprop gradient: every angle is 0, with
    dropout in every block (so it is off in both gradients). So is feedback
    alignment's once every feedback matrix equals its forward weights."""
    model = tiny_conv_model(rule=rule.split("-with")[0], dropout=0.5)
    if rule != "backprop":
        for layer in feedback_layers(model):
            layer.feedback_kernel.assign(ops.convert_to_numpy(layer.kernel))
    x, y = random_batch()
    before = [ops.convert_to_numpy(v) for v in model.non_trainable_variables]
    result = analysis.alignment(model, x, y)
    assert [row.name for row in result] == ["block1", "block2", "block3", "output"]
    for row in result:
        assert row.angle_update_deg < 1e-3, row
        assert row.backprop_norm > 0, row
        if rule == "backprop":
            assert row.angle_feedback_deg is None
        else:
            assert row.angle_feedback_deg < 1e-3, row
    # The state is unchanged (BatchNorm statistics, seed generators) and
    # dropout is back on.
    for variable, value in zip(model.non_trainable_variables, before):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value, err_msg=variable.path)
    assert all(block.dropout_layer.rate == 0.5 for block in model.hidden_blocks)
    # Averaged over two batches (of the same shape, which JAX has compiled
    # its operations for already), backprop is still aligned with itself.
    x2, y2 = random_batch(n=32, seed=1)
    for row in analysis.alignment(model, x2, y2, batch_size=16):
        assert row.angle_update_deg < 1e-3, row


#: Rules whose blocks and output layer send their error back through
#: feedback matrices, over the whole network (feedback alignment and any
#: rule of its family).
FEEDBACK_RULES = [
    name
    for name in rules.names()
    if rules.get(name).output_feedback is not None and not rules.get(name).detach_blocks
]


@pytest.mark.backend
@pytest.mark.parametrize("rule", FEEDBACK_RULES)
def test_backprop_gradient_of_a_feedback_model_is_backprops(rule):
    """The backprop gradient `alignment` computes for a feedback-alignment
    network is the gradient backprop gives the same weights in a network of
    plain layers."""
    model = tiny_conv_model(rule=rule)
    reference = tiny_conv_model(rule="backprop")
    assert len(model.trainable_variables) >= len(reference.trainable_variables)
    forward = [v for v in model.trainable_variables if "feedback" not in v.path]
    for mine, theirs in zip(forward, reference.trainable_variables, strict=True):
        theirs.assign(ops.convert_to_numpy(mine))
    x, y = random_batch()
    got = alignment_gradients(model, x, y)
    want = alignment_gradients(reference, x, y)
    for row, expected in zip(got, want, strict=True):
        assert row.name == expected.name
        for variable, a, b in zip(row.variables, row.backprop, expected.backprop, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=variable.path)
    for row in analysis.alignment(model, x, y):
        assert row.angle_feedback_deg is not None, row


@pytest.mark.backend
def test_pred_updates_the_last_block_with_its_own_heads_gradient():
    model = tiny_conv_model(rule="pred")
    x, y = random_batch()
    # Local rules start their heads' and output layer's kernels at zero,
    # which send no gradient down: a few steps make them non-zero.
    for _ in range(3):
        model.train_on_batch(x, y)
    last = len(model.hidden_blocks) - 1
    block = model.hidden_blocks[last]
    rows = {row.name: row for row in alignment_gradients(model, x, y)}
    row = rows[f"block{last + 1}"]
    assert [id(v) for v in row.variables] == [id(v) for v in block.trainable_variables]

    # The last block's input, in training mode, and its own pred objective.
    h = x
    for earlier in model.hidden_blocks[:last]:
        _, h = earlier(h, training=True)
    h = ops.convert_to_numpy(h)

    def head_loss():
        features, outputs = block(h, training=True)
        return model.objectives[last](features, outputs, y, training=True)["loss"]

    expected = gradients(head_loss, row.variables)
    for variable, got, want in zip(row.variables, row.update, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=variable.path)
    backprop = gradients(
        lambda: prediction_loss(model(x, training=True), y), row.variables
    )
    for variable, got, want in zip(row.variables, row.backprop, backprop):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=variable.path)
    result = analysis.alignment(model, x, y)
    assert result[last].angle_update_deg == pytest.approx(angle_deg(expected, backprop), abs=1e-3)
    assert 0 < result[last].angle_update_deg < 180
    assert result["output"].angle_update_deg < 1e-3


@pytest.mark.backend
@pytest.mark.parametrize("rule", rules.names())
def test_every_rule_gets_a_row_per_block_and_output(rule):
    model = tiny_conv_model(rule=rule)
    x, y = random_batch()
    result = analysis.alignment(model, x, y)
    assert len(result) == len(model.hidden_blocks) + 1
    last = result[-1]
    if model.output_layer is not None:
        # The output layer always learns from the output loss itself.
        assert last.name == "output" and last.angle_update_deg < 1e-3
    else:
        assert last.name == "exit"
    for row in result:
        assert np.isnan(row.angle_update_deg) or 0 <= row.angle_update_deg <= 180
        assert row.num_variables > 0
    text = result.format()
    assert text.splitlines()[1].split()[:3] == ["layer", "variables", "update"]
    assert "block3" in text


@pytest.mark.backend
def test_feedback_alignment_starts_orthogonal_and_aligns(fashion_subset):
    """Lillicrap et al. (2016): random feedback starts at about 90 degrees to
    the forward weights, and the forward weights come to align with it, so
    that the update angle falls well below 90 degrees."""
    (x, y), (x_test, y_test) = fashion_subset
    keras.utils.set_random_seed(0)
    model = zoo.mlp(layers=2, units=64, rule="feedback-alignment", input_shape=(28, 28, 1))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    start = analysis.alignment(model, x_test, y_test)
    for row in start:
        assert 80 < row.angle_feedback_deg < 100, row
    assert start["block2"].angle_update_deg > 80
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    end = analysis.alignment(model, x_test, y_test)
    assert end["block2"].angle_update_deg < start["block2"].angle_update_deg - 15, (start, end)
    assert end["block2"].angle_update_deg < 75, end
    assert end["output"].angle_feedback_deg < start["output"].angle_feedback_deg - 10, end


@pytest.mark.backend
def test_alignment_logger_adds_the_angles_to_logs_and_tensorboard(tmp_path, fashion_subset):
    (x, y), (x_test, y_test) = fashion_subset
    model = zoo.mlp(layers=2, units=16, rule="feedback-alignment", input_shape=(28, 28, 1))
    logger = AlignmentLogger(x_test[:64], y_test[:64], every_n_steps=3, log_dir=str(tmp_path))
    history = model.fit(x[:128], y[:128], batch_size=32, epochs=2, callbacks=[logger], verbose=0)
    assert [step for step, _ in logger.records] == [3, 6]
    keys = ["block1_update_angle", "block2_update_angle", "output_update_angle",
            "block1_feedback_angle", "block2_feedback_angle", "output_feedback_angle"]  # fmt: skip
    for key in keys:
        assert len(history.history[key]) == 2, key
    # Epoch 1 ends after step 4, epoch 2 after step 8: the latest measurements.
    assert history.history["block1_update_angle"] == [
        logger.records[0][1]["block1"].angle_update_deg,
        logger.records[1][1]["block1"].angle_update_deg,
    ]
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    [events] = list(tmp_path.iterdir())
    scalars = {}
    for event in EventFileLoader(str(events)).Load():
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append(event.step)
    assert scalars["alignment/block2_update_angle"] == [3, 6]
    assert set(scalars) == {f"alignment/{key}" for key in keys}
    with pytest.raises(ValueError, match="every_n_steps"):
        AlignmentLogger(x, y, every_n_steps=0)


def test_cli_analyze_alignment(tmp_path, capsys, fashion_mnist):
    model_path = tmp_path / "tiny.keras"
    zoo.mlp(layers=2, units=8, rule="feedback-alignment", input_shape=(28, 28, 1)).save(model_path)
    (tmp_path / "tiny.keras.json").write_text(
        json.dumps({"parameters": {"dataset": "fashion_mnist"}})
    )
    try:
        status = cli.main(
            ["analyze", str(model_path), "--examples", "60", "--alignment",
             "--alignment-examples", "64"]
        )  # fmt: skip
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    assert status in (0, None), err
    lines = out.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("Alignment of"))
    assert "on 64 test examples of fashion_mnist" in lines[title]
    rows = {line.split()[0]: line.split()[1:] for line in lines[title + 2 : title + 5]}
    assert list(rows) == ["block1", "block2", "output"]
    # The printed angles are those of `analysis.alignment` on the same batch.
    model = keras.saving.load_model(model_path)
    _, (x_test, y_test) = fashion_mnist
    subset = alignment_subset(len(y_test), 64, 0)
    assert len(subset) == 64
    result = analysis.alignment(model, x_test[subset], y_test[subset])
    for row in result:
        assert rows[row.name][1:3] == [f"{row.angle_update_deg:.2f}", f"{row.angle_feedback_deg:.2f}"]


@pytest.mark.backend
def test_noise_layers_are_off_in_both_gradients():
    """Gaussian noise (and every dropout) is switched off for both gradients
    and back on afterwards: backprop is at 0 degrees with itself, which two
    independent noise draws would not give; the update equals the gradient
    of the noiseless network, computed on its own."""
    import keras_local

    original = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.GaussianNoise(0.5),
         keras.layers.Dense(16, activation="relu"), keras.layers.GaussianDropout(0.3),
         keras.layers.AlphaDropout(0.2), keras.layers.Dense(16, activation="relu"),
         keras.layers.GaussianNoise(0.5, name="noise2"), keras.layers.Dense(5)]  # fmt: skip
    )
    model, _ = keras_local.from_keras(original, rule="backprop")
    x, y = random_batch()
    for row in analysis.alignment(model, x, y):
        assert row.angle_update_deg < 1e-3, row
    assert model.get_layer("block2").wrapped_layers[-1].stddev == 0.5  # restored
    # Against the gradient of the plain network (no noise layers at all).
    kept = [layer for layer in original.layers if layer.weights]
    plain = keras.Sequential([keras.layers.Flatten(), *kept])
    block1 = alignment_gradients(model, x, y)[0]
    expected = gradients(
        lambda: prediction_loss(plain(x, training=True), ops.convert_to_tensor(y)),
        kept[0].trainable_variables,
    )
    for got, want in zip(block1.update, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_one_hot_labels_are_their_class_ids():
    model = tiny_conv_model(rule="predsim")
    x, y = random_batch()
    by_id = analysis.alignment(model, x, y)
    by_one_hot = analysis.alignment(model, x, np.eye(5, dtype="float32")[y])
    assert [r.angle_update_deg for r in by_one_hot] == [r.angle_update_deg for r in by_id]
    with pytest.raises(ValueError, match="rows are not one-hot"):
        analysis.alignment(model, x, np.full((len(x), 5), 0.2))
