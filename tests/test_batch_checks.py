"""Every batch is checked, on every input kind, before a step runs on it.

A bad label late in a data set (batch 2 of a `tf.data` pipeline, a
`PyDataset`, a generator), or given to `train_on_batch`, stops training with
a `ValueError` naming the value, and no step has run on that batch: the
weights are those after the good batches alone. Inputs of the wrong shape
raise the same error in `fit`, `evaluate` and `predict` and leave the model
working; integer images are cast as Keras casts them; Keras' callbacks find
the model's metrics without `mode=`.
"""

import keras
import numpy as np
import pytest

from keras_local import zoo
from tests.conftest import tiny_conv_model

pytestmark = pytest.mark.backend

BATCH = 8
SHAPE = (8, 8, 3)


def batches(bad_label, bad_batch=1, n_batches=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_batches * BATCH, *SHAPE)).astype("float32")
    y = (np.arange(n_batches * BATCH) % 5).astype("float32")
    if bad_batch is not None:
        y[bad_batch * BATCH + 3] = bad_label
    return x, y


def input_kind(kind, x, y):
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(x) // BATCH

        def __getitem__(self, i):
            return x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]

    if kind == "arrays":
        return x, y
    if kind == "pydataset":
        return Batches(), None
    if kind == "generator":
        return (Batches()[i] for i in range(len(x) // BATCH)), None
    tf = pytest.importorskip("tensorflow")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), None


def sgd_model():
    keras.utils.set_random_seed(0)
    model = tiny_conv_model("predsim")
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
    return model


def weights(model):
    return [np.array(v) for v in model.trainable_variables]


KINDS = ["arrays", "tf.data", "pydataset", "generator"]
BAD_LABELS = [(7.0, "7"), (-1.0, "-1"), (2.5, "2.5")]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad, shown", BAD_LABELS)
def test_a_bad_label_in_a_late_batch_stops_fit_before_its_step(kind, bad, shown):
    x, y = batches(bad, bad_batch=1)
    model = sgd_model()
    with pytest.raises(ValueError, match=r"[Ll]abels must be .*" + shown.replace(".", r"\.")):
        model.fit(*input_kind(kind, x, y), batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    if kind == "arrays":
        # Arrays are checked whole, before any step.
        np.testing.assert_array_equal(model.optimizer.iterations, 0)
        return
    # Streamed kinds: the bad batch never trained. The good batch before it
    # did, or not yet when the loader (a PyDataset's queue, a generator
    # read ahead) reached the bad one first. (TensorFlow may still count a
    # failed step in `iterations`: an update with no data dependence that
    # its graph runs beside the failing read.)
    initial = weights(sgd_model())
    reference = sgd_model()
    reference.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert same_weights(model, initial) or same_weights(model, weights(reference))


def same_weights(model, expected):
    return all(
        np.allclose(got, want, rtol=1e-5, atol=1e-6)
        for got, want in zip(weights(model), expected)
    )


@pytest.mark.parametrize("kind", ["tf.data", "pydataset", "generator"])
def test_a_bad_label_in_a_late_batch_stops_evaluate(kind):
    x, y = batches(10.0, bad_batch=2)
    model = sgd_model()
    with pytest.raises(ValueError, match="got 10"):
        model.evaluate(*input_kind(kind, x, y), batch_size=BATCH, verbose=0)


def test_a_bad_label_in_validation_data_stops_fit():
    x, y = batches(None, bad_batch=None)
    xv, yv = batches(-3.0, bad_batch=2, seed=1)
    model = sgd_model()
    tf = pytest.importorskip("tensorflow")
    validation = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(BATCH)
    with pytest.raises(ValueError, match="got -3"):
        model.fit(x, y, batch_size=BATCH, validation_data=validation, verbose=0)


def test_train_and_test_on_batch_check_labels():
    x, y = batches(None, bad_batch=None, n_batches=1)
    model = sgd_model()
    before = weights(model)
    for bad, shown in BAD_LABELS + [(np.nan, "nan")]:
        y_bad = y.copy()
        y_bad[2] = bad
        with pytest.raises(ValueError, match=shown):
            model.train_on_batch(x, y_bad)
        with pytest.raises(ValueError, match=shown):
            model.test_on_batch(x, y_bad)
    assert int(model.optimizer.iterations) == 0
    for got, want in zip(weights(model), before):
        np.testing.assert_array_equal(got, want)
    model.train_on_batch(x, y)  # a good batch still trains
    assert int(model.optimizer.iterations) == 1


def test_one_hot_labels_are_refused_with_a_hint():
    x, y = batches(None, bad_batch=None, n_batches=1)
    with pytest.raises(ValueError, match="argmax"):
        sgd_model().fit(x, np.eye(5)[y.astype(int)], verbose=0)


@pytest.mark.parametrize("kind", ["arrays", "tf.data", "generator"])
def test_a_wrong_input_shape_is_refused_alike_and_poisons_nothing(kind):
    x, y = batches(None, bad_batch=None)
    model = sgd_model()
    model.fit(x, y, batch_size=BATCH, verbose=0)
    expected = model.predict(x, verbose=0)
    flat = x.reshape(len(x), -1)
    message = r"built for inputs of shape \(batch, 8, 8, 3\); got a batch of shape \(.*192\)"
    with pytest.raises(ValueError, match=message):
        model.predict(input_kind(kind, flat, y)[0] if kind != "arrays" else flat, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.fit(*input_kind(kind, flat, y), batch_size=BATCH, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.evaluate(*input_kind(kind, flat, y), batch_size=BATCH, verbose=0)
    with pytest.raises(ValueError, match=message):
        model(flat[:2])
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_integer_images_are_cast():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2 * BATCH, *SHAPE), dtype=np.uint8)
    y = np.arange(2 * BATCH) % 5
    model = sgd_model()
    model.fit(images, y, batch_size=BATCH, verbose=0)
    model.train_on_batch(images[:BATCH], y[:BATCH])
    got = model.predict(images, verbose=0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, model.predict(images.astype("float32"), verbose=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(images[:3])), got[:3], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "monitor, increasing",
    [
        ("val_accuracy", True),
        ("val_block1_pred_accuracy", True),
        ("accuracy", True),
        ("val_output_loss", False),
        ("block2_sim_loss", False),
        ("val_loss", False),
    ],
)
def test_callbacks_know_the_models_metrics_without_mode(monitor, increasing, tmp_path):
    x, y = batches(None, bad_batch=None)
    model = sgd_model()
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=5)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.keras"), monitor=monitor, save_best_only=True
    )
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=monitor, patience=5)
    history = model.fit(
        x, y, batch_size=BATCH, epochs=2, validation_data=(x, y), verbose=0,
        callbacks=[stopper, checkpoint, plateau],
    )
    assert monitor in history.history
    values = history.history[monitor]
    best = max(values) if increasing else min(values)
    assert stopper.best == pytest.approx(best)
    assert checkpoint.best == pytest.approx(best)
    assert (tmp_path / "best.keras").exists()


def test_class_weight_and_sample_weight_are_refused_by_name():
    x, y = batches(None, bad_batch=None)
    model = sgd_model()
    with pytest.raises(ValueError, match="class_weight"):
        model.fit(x, y, class_weight={0: 2.0}, verbose=0)
    with pytest.raises(ValueError, match="sample weights"):
        model.fit(x, y, sample_weight=np.ones(len(y)), verbose=0)
    assert int(model.optimizer.iterations) == 0


@pytest.mark.parametrize("kind", ["arrays", "pydataset", "generator"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_infinite_inputs_are_refused(kind, value):
    """Training on them would silently turn every weight to NaN."""
    x, y = batches(bad_label=None, bad_batch=None)
    x[BATCH + 2, 1, 1, 0] = value
    model = sgd_model()
    before = weights(model)
    # The example is counted within the batch that holds it.
    at = 10 if kind == "arrays" else 2
    with pytest.raises(ValueError, match=rf"NaN or infinite value \(the first at example {at},"):
        model.fit(*input_kind(kind, x, y), batch_size=BATCH, epochs=1, verbose=0)
    if kind == "arrays":  # checked before any step
        for got, want in zip(weights(model), before, strict=True):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.predict(x, verbose=0)


def test_batches_of_one_example_under_batch_norm_are_warned_about():
    x, y = batches(bad_label=None, bad_batch=None)
    model = sgd_model()
    with pytest.warns(UserWarning, match="every batch has one example"):
        model.fit(x[:4], y[:4], batch_size=1, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="the last batch of each epoch has one example"):
        model.fit(x[:9], y[:9], batch_size=8, epochs=1, verbose=0)


def test_a_model_built_from_the_data_warns_about_batches_of_one_too(fashion_subset):
    """A zoo model without `input_shape` has no batch norm layer until its
    first `fit` builds it from the data."""
    (x, y), _ = fashion_subset
    model = zoo.mlp(width=0.0625)
    assert not model.built
    with pytest.warns(UserWarning, match="every batch has one example"):
        model.fit(x[:4], y[:4], batch_size=1, epochs=1, verbose=0)
