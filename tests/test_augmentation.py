"""RandomJitter and Cutout: identity at inference, exact behaviour in training,
serialization, and use inside jitted steps. Every test runs the layers on the current
Keras backend, so the whole module is marked `backend` (CI re-runs it under JAX)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local.layers.cutout import Cutout
from keras_local.layers.random_jitter import RandomJitter

pytestmark = pytest.mark.backend

on_jax = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="needs the JAX backend (jax.jit)"
)


def _images(batch=16, height=12, width=10, channels=3, seed=0):
    # Strictly positive and distinct values, so no pixel equals a fill value or 0
    # and each shift is recoverable uniquely.
    rng = np.random.default_rng(seed)
    return (rng.random((batch, height, width, channels)) + 0.5).astype("float32")


def _np_pad_crop(image, oy, ox, pad, fill):
    """Independent reference: torchvision RandomCrop(padding=pad, fill=fill)."""
    h, w, c = image.shape
    fill = np.broadcast_to(np.asarray(fill, image.dtype), (c,))
    padded = np.empty((h + 2 * pad, w + 2 * pad, c), image.dtype)
    padded[...] = fill
    padded[pad : pad + h, pad : pad + w] = image
    return padded[oy : oy + h, ox : ox + w]


def _recover_offsets(x, y, pad, fill):
    """For each example, the crop offsets (oy, ox) whose NumPy pad+crop equals y."""
    offsets = []
    for i in range(x.shape[0]):
        matches = [
            (oy, ox)
            for oy in range(2 * pad + 1)
            for ox in range(2 * pad + 1)
            if np.array_equal(_np_pad_crop(x[i], oy, ox, pad, fill), y[i])
        ]
        assert len(matches) == 1, f"example {i}: no unique pad+crop match {matches}"
        offsets.append(matches[0])
    return offsets


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


# ----------------------------------------------------------------------------------
# RandomJitter


def test_jitter_inference_is_identity():
    x = _images()
    layer = RandomJitter(3, fill_value=-1.0, seed=1)
    np.testing.assert_array_equal(_np(layer(x, training=False)), x)
    # predict() runs with training=False too.
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_jitter_training_matches_numpy_pad_crop(pad):
    x = _images(batch=64)
    fill = -0.75
    y = _np(RandomJitter(pad, fill_value=fill, seed=pad)(x, training=True))
    assert y.shape == x.shape and y.dtype == x.dtype
    offsets = _recover_offsets(x, y, pad, fill)
    # Shifts |dy|, |dx| <= pad by construction; they vary across the batch.
    assert len(set(offsets)) > 1
    if pad == 1:  # 64 draws from 9 offsets: all of them should occur
        assert set(offsets) == {(a, b) for a in range(3) for b in range(3)}


def test_jitter_per_channel_fill():
    x = _images(batch=32, channels=3)
    fill = [-1.0, -2.0, -3.0]
    y = _np(RandomJitter(2, fill_value=fill, seed=7)(x, training=True))
    offsets = _recover_offsets(x, y, 2, fill)
    # Some example is shifted, and its uncovered pixels carry each channel's fill.
    shifted = [i for i, o in enumerate(offsets) if o != (2, 2)]
    assert shifted
    for i in shifted:
        uncovered = np.all(y[i] < 0, axis=-1)
        assert uncovered.any()
        np.testing.assert_array_equal(y[i][uncovered], np.tile(fill, (uncovered.sum(), 1)))


def test_jitter_is_seeded_and_advances():
    x = _images()
    a, b = RandomJitter(2, seed=5), RandomJitter(2, seed=5)
    first = _np(a(x, training=True))
    np.testing.assert_array_equal(first, _np(b(x, training=True)))
    # The seed generator advances: a second call draws new offsets.
    assert not np.array_equal(first, _np(a(x, training=True)))


def test_jitter_zero_shift_and_validation():
    x = _images(batch=2)
    np.testing.assert_array_equal(_np(RandomJitter(0)(x, training=True)), x)
    with pytest.raises(ValueError):
        RandomJitter(-1)
    with pytest.raises(ValueError, match="one value per channel"):
        RandomJitter(1, fill_value=[0.0, 1.0])(x, training=True)


def test_jitter_config_roundtrip():
    layer = RandomJitter(4, fill_value=[-1.5, -1.4, -1.3], seed=3, name="jit")
    config = layer.get_config()
    assert config["max_shift"] == 4
    assert config["fill_value"] == [-1.5, -1.4, -1.3]
    assert config["seed"] == 3
    clone = RandomJitter.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert isinstance(restored, RandomJitter) and restored.get_config() == config
    assert layer.compute_output_shape((None, 32, 32, 3)) == (None, 32, 32, 3)


# ----------------------------------------------------------------------------------
# Cutout


def test_cutout_inference_is_identity():
    x = _images()
    layer = Cutout(6, seed=1)
    np.testing.assert_array_equal(_np(layer(x, training=False)), x)


@pytest.mark.parametrize("length", [4, 5, 8])
def test_cutout_training_single_rectangle(length):
    x = _images(batch=64, height=16, width=14)
    y = _np(Cutout(length, seed=length)(x, training=True))
    assert y.shape == x.shape and y.dtype == x.dtype
    side = 2 * (length // 2)  # the reference zeroes [c - L//2, c + L//2)
    full_holes = 0
    for i in range(x.shape[0]):
        zero = y[i] == 0
        # Same mask for all channels; everything else untouched.
        assert np.all(zero == zero[..., :1])
        mask = zero[..., 0]
        np.testing.assert_array_equal(y[i][~mask], x[i][~mask])
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert rows.size and cols.size, f"example {i} has no hole"
        # One axis-aligned rectangle: the mask is the product of two contiguous ranges.
        assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
        assert np.array_equal(cols, np.arange(cols[0], cols[-1] + 1))
        assert np.array_equal(mask, np.outer(mask.any(1), mask.any(0)))
        assert rows.size <= side and cols.size <= side
        full_holes += rows.size == side and cols.size == side
    assert 0 < full_holes < x.shape[0]  # some holes are clipped at the border


def test_cutout_several_holes():
    x = _images(batch=32, height=20, width=20)
    y = _np(Cutout(4, n_holes=3, seed=2)(x, training=True))
    zero = y == 0
    assert np.all(zero == zero[..., :1])
    mask = zero[..., 0]
    np.testing.assert_array_equal(y[~zero], x[~zero])
    per_example = mask.reshape(len(x), -1).sum(1)
    assert np.all(per_example >= 1) and np.all(per_example <= 3 * 16)
    assert per_example.max() > 16  # holes do not always coincide


def test_cutout_config_roundtrip():
    layer = Cutout(16, n_holes=2, seed=9, name="cut")
    config = layer.get_config()
    assert (config["length"], config["n_holes"], config["seed"]) == (16, 2, 9)
    assert Cutout.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert isinstance(restored, Cutout) and restored.get_config() == config
    assert layer.compute_output_shape((None, 28, 28, 1)) == (None, 28, 28, 1)
    with pytest.raises(ValueError):
        Cutout(0)


# ----------------------------------------------------------------------------------
# Both layers in models


def test_saved_model_file_roundtrip(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            RandomJitter(1, fill_value=[-0.5], seed=1),
            Cutout(4, seed=2),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    path = tmp_path / "aug.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[0], RandomJitter)
    assert isinstance(loaded.layers[1], Cutout)
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    x = _images(batch=4, height=8, width=8, channels=1)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_fit_with_augmentation_in_model():
    # Runs in the backend's compiled train step (tf.function / jax.jit).
    x = _images(batch=32, height=8, width=8, channels=1)
    y = np.arange(32) % 3
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            RandomJitter(2, seed=1),
            keras.layers.RandomFlip("horizontal", seed=2),
            Cutout(4, seed=3),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@on_jax
@pytest.mark.parametrize(
    "make", [lambda: RandomJitter(2, fill_value=-1.0, seed=4), lambda: Cutout(4, seed=4)]
)
def test_jax_jit_stateless_call(make):
    import jax

    layer = make()
    x = _images(batch=8, height=10, width=10, channels=2)
    layer.build(x.shape)
    state = [v.value for v in layer.non_trainable_variables]
    assert state, "the SeedGenerator state must be a non-trainable variable"

    @jax.jit
    def step(state, x):
        return layer.stateless_call([], state, x, training=True)

    y1, state1 = step(state, x)
    y2, _ = step(state1, x)
    y1, y2 = np.asarray(y1), np.asarray(y2)
    assert y1.shape == x.shape
    assert not np.array_equal(y1, x)
    assert not np.array_equal(y1, y2)  # the threaded seed state advanced
    if isinstance(layer, RandomJitter):
        _recover_offsets(x, y1, 2, -1.0)
    else:
        zero = y1 == 0
        np.testing.assert_array_equal(y1[~zero], x[~zero])
    # Inference under jit is the identity.
    infer = jax.jit(lambda s, x: layer.stateless_call([], s, x, training=False)[0])
    np.testing.assert_array_equal(np.asarray(infer(state, x)), x)
