"""LocalModel end to end: logs, evaluation numbers, save/load, the used-by
line, bad input, and learning on real data."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_local
from keras_local import data
from keras_local import zoo
from keras_local.ops import prediction_loss
from tests.conftest import random_batch
from tests.conftest import tiny_conv_model

BLOCK_KEYS = ["block{i}_pred_accuracy", "block{i}_pred_loss", "block{i}_sim_loss"]


@pytest.mark.backend
@pytest.mark.parametrize(
    "rule, parts",
    [("predsim", ["pred_accuracy", "pred_loss", "sim_loss"]), ("pred", ["pred_accuracy", "pred_loss"]),
     ("sim", ["sim_loss"]), ("backprop", [])],
)
def test_logs_name_every_blocks_losses_and_accuracy(rule, parts):
    model = tiny_conv_model(rule=rule)
    x, y = random_batch(n=32)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=(x, y))
    expected = {"loss", "accuracy", "output_loss"} | {
        f"block{i}_{part}" for i in (1, 2, 3) for part in parts
    }
    assert set(history.history) == expected | {f"val_{k}" for k in expected}
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == expected


@pytest.mark.backend
def test_evaluation_numbers_match_an_independent_computation():
    model = tiny_conv_model(rule="predsim")
    x, y = random_batch(n=40, seed=3)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    logs = model.evaluate(x, y, batch_size=40, verbose=0, return_dict=True)
    # The output layer, from the inference network.
    logits = ops.convert_to_numpy(model.predict(x, verbose=0))
    assert logs["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    assert logs["output_loss"] == pytest.approx(float(prediction_loss(logits, y)), rel=1e-5)
    # Each block's local classifier, from the block's features in inference mode.
    h = x
    beta = model.rule.beta
    total = (1 - beta) * logs["output_loss"]
    for i, (block, objective) in enumerate(zip(model.hidden_blocks, model.objectives), start=1):
        features, h = block(h, training=False)
        head_logits = ops.convert_to_numpy(objective.prediction_head(features))
        assert logs[f"block{i}_pred_accuracy"] == pytest.approx(np.mean(head_logits.argmax(1) == y))
        total += (1 - beta) * logs[f"block{i}_pred_loss"] + beta * logs[f"block{i}_sim_loss"]
    assert logs["loss"] == pytest.approx(total, rel=1e-5)


@pytest.mark.backend
def test_keras_file_round_trip_predicts_identically(tmp_path, fashion_subset):
    (x, y), (xt, _) = fashion_subset
    model = zoo.vgg8b(
        rule="predsim", rule_options={"dim_in_decoder": 256}, input_shape=(28, 28, 1),
        width=0.125, dropout=0.1,
        augmentation=data.augmentation("fashion_mnist", cutout=14, seed=1),
    )
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is keras_local.LocalModel
    assert loaded.rule == model.rule
    assert [type(layer).__name__ for layer in loaded.augmentation.layers] == ["RandomJitter", "RandomFlip", "Cutout"]
    np.testing.assert_array_equal(loaded.predict(xt, verbose=0), model.predict(xt, verbose=0))
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    loaded.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # and it trains on


@pytest.mark.backend
def test_vgg11b_fit_runs_as_written_on_a_tf_data_set():
    tf = pytest.importorskip("tensorflow")
    x, y = random_batch(n=16, shape=(32, 32, 3), num_classes=10)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    history = keras_local.zoo.vgg11b(rule="predsim").fit(ds)
    assert len(history.history["loss"]) == 1
    assert np.isfinite(history.history["block10_pred_loss"][0])


@pytest.mark.backend
def test_augmentation_runs_in_training_only():
    model = tiny_conv_model(rule="pred", augmentation=keras.Sequential([keras.layers.Lambda(lambda t: t * 0.0)]))
    x, y = random_batch()
    before = model.predict(x, verbose=0)
    model.augmentation = None
    np.testing.assert_array_equal(before, model.predict(x, verbose=0))


def test_labels_out_of_range_are_rejected():
    model = tiny_conv_model(num_classes=5)
    x, y = random_batch(num_classes=5)
    with pytest.raises(ValueError, match=r"class ids in \[0, 5\).*from 1 to 7"):
        model.fit(x, np.where(y == 0, 7, y), verbose=0)
    with pytest.raises(ValueError, match=r"from -1 to 4"):
        model.evaluate(x, np.where(y == 0, -1, y), verbose=0)
    with pytest.raises(ValueError, match="not one-hot"):
        model.fit(x, np.eye(5)[y], verbose=0)


def test_labels_out_of_range_in_a_tf_data_set_are_rejected():
    tf = pytest.importorskip("tensorflow")
    model = tiny_conv_model(num_classes=5)
    x, y = random_batch(num_classes=5)
    ds = tf.data.Dataset.from_tensor_slices((x, y + 3)).batch(8)
    with pytest.raises(ValueError, match=r"class ids in \[0, 5\)"):
        model.fit(ds, verbose=0)


def test_wrong_input_rank_is_rejected():
    model = tiny_conv_model()
    x, y = random_batch()
    with pytest.raises(ValueError, match=r"shape \(batch, 8, 8, 3\); got a batch of shape \(16, 8, 8\)"):
        model.fit(x[..., 0], y, verbose=0)
    unbuilt = zoo.vgg8b()
    with pytest.raises(ValueError, match=r"rank 4 \(batch, height, width, channels\)"):
        unbuilt.fit(np.zeros((4, 28, 28), "float32"), np.zeros(4, "int32"), verbose=0)


def test_compiling_with_a_loss_is_rejected():
    model = tiny_conv_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = random_batch()
    with pytest.raises(ValueError, match="optimizer only"):
        model.fit(x, y, verbose=0)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="Valid rules"):
        zoo.mlp(rule="nope")
    with pytest.raises(ValueError, match="Valid models"):
        zoo.get("nope")
    with pytest.raises(ValueError, match="Valid choices"):
        data.load("nope")


@pytest.mark.slow
def test_mlp_predsim_learns_fashion_mnist_in_one_epoch(fashion_mnist):
    """One epoch over the full training set reaches at least 84% test
    accuracy (the issue's bar; a prototype reached 84.6%)."""
    (x, y), (xt, yt) = fashion_mnist
    keras.utils.set_random_seed(1)
    model = zoo.mlp(rule="predsim", input_shape=(28, 28, 1))
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    logs = model.evaluate(xt, yt, batch_size=1000, verbose=0, return_dict=True)
    assert logs["accuracy"] >= 0.84, logs
    # The local classifiers learn too: every block's head is far above chance.
    for i in (1, 2, 3):
        assert logs[f"block{i}_pred_accuracy"] >= 0.80, logs
