"""Batch order, augmentation and dropout drawn from (seed, epoch): a fit
resumed from an epoch's backup in a fresh model equals the uninterrupted fit."""

import functools

import keras
import numpy as np
import pytest

from keras_local import data
from keras_local.epoch_seeding import EpochBatches
from keras_local.epoch_seeding import OrderedBatches
from keras_local.epoch_seeding import SeedEachEpoch
from keras_local.epoch_seeding import seed_generators
from tests.conftest import tiny_conv_model

pytestmark = pytest.mark.backend


def _stream(batches, count):
    return [batches[i] for i in range(count)]


def test_each_epoch_is_the_seeded_permutation_in_batches():
    x = np.arange(10, dtype="float32")[:, None]
    y = np.arange(10)
    batches = EpochBatches(x, y, batch_size=4, seed=7)
    assert batches.batches_per_epoch == 3
    stream = _stream(batches, 6)
    for epoch in range(2):
        got_x = np.concatenate([b[0][:, 0] for b in stream[3 * epoch : 3 * epoch + 3]])
        got_y = np.concatenate([b[1] for b in stream[3 * epoch : 3 * epoch + 3]])
        want = np.random.default_rng([7, epoch]).permutation(10)
        np.testing.assert_array_equal(got_y, want)
        np.testing.assert_array_equal(got_x, want)  # inputs stay with their labels
    assert [len(b[1]) for b in stream] == [4, 4, 2, 4, 4, 2]
    assert not np.array_equal(stream[0][1], stream[3][1])  # a new order each epoch


def test_a_stream_starting_later_continues_the_same_epochs():
    x = np.arange(9, dtype="float32")[:, None]
    y = np.arange(9)
    from_start = _stream(EpochBatches(x, y, 3, seed=1), 9)
    resumed = EpochBatches(x, y, 3, seed=1)
    resumed.first_epoch = 2
    for got, want in zip(_stream(resumed, 3), from_start[6:], strict=True):
        np.testing.assert_array_equal(got[1], want[1])


def test_mismatched_arrays_are_refused():
    with pytest.raises(ValueError, match="x has 3 examples but y has 2"):
        EpochBatches(np.zeros((3, 1)), np.zeros(2), 2, seed=0)


def test_raw_pixels_are_normalized_batch_by_batch():
    """`train` keeps the data set as uint8 and normalizes each batch: the
    batches equal `(x / 255 - mean) / std` computed here in float64."""
    (raw, labels), _ = data.load("fashion_mnist", normalize=False)
    raw, labels = raw[:10], labels[:10]
    assert raw.dtype == np.uint8
    info = data.info("fashion_mnist")
    want = (raw.astype("float64") / 255 - np.asarray(info.mean)) / np.asarray(info.std)
    normalize = functools.partial(data.normalized, "fashion_mnist")

    shuffled = EpochBatches(raw, labels, 4, seed=3, transform=normalize)
    for index, (x, y) in enumerate(_stream(shuffled, 6)):
        epoch, position = divmod(index, 3)
        chosen = np.random.default_rng([3, epoch]).permutation(10)[4 * position : 4 * position + 4]
        assert x.dtype == np.float32
        np.testing.assert_allclose(x, want[chosen], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(y, labels[chosen])
    in_order = OrderedBatches(raw, labels, 4, transform=normalize)
    assert len(in_order) == 3
    x = np.concatenate([in_order[i][0] for i in range(3)])
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([in_order[i][1] for i in range(3)]), labels)
    with pytest.raises(IndexError):
        in_order[3]


def _model():
    """Dropout and a jitter layer: both draw from seed generators."""
    keras.utils.set_random_seed(5)
    return tiny_conv_model(
        dropout=0.3,
        num_classes=10,
        input_shape=(28, 28, 1),
        augmentation=data.augmentation("fashion_mnist", seed=5),
    )


def _fit(model, batches, backup_dir, epochs):
    model.fit(
        batches,
        epochs=epochs,
        steps_per_epoch=batches.batches_per_epoch,
        shuffle=False,
        callbacks=[
            keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
            SeedEachEpoch(11, batches),
        ],
        verbose=0,
    )


def test_a_resumed_fit_equals_the_uninterrupted_one(tmp_path, fashion_subset):
    (x, y), _ = fashion_subset
    x, y = x[:96], y[:96]

    uninterrupted = _model()
    assert len(seed_generators(uninterrupted)) >= 2
    _fit(uninterrupted, EpochBatches(x, y, 32, seed=11), str(tmp_path / "a"), epochs=2)

    # One epoch, then a fresh model (as in a new process) resumes from the
    # backup for the second.
    first = _model()
    _fit(first, EpochBatches(x, y, 32, seed=11), str(tmp_path / "b"), epochs=1)
    resumed = _model()
    _fit(resumed, EpochBatches(x, y, 32, seed=11), str(tmp_path / "b"), epochs=2)

    for got, want in zip(resumed.get_weights(), uninterrupted.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Not equal by accident: the second epoch changed the weights.
    assert not all(np.allclose(a, b) for a, b in zip(first.get_weights(), resumed.get_weights()))


def test_the_arrays_behind_the_batches_are_checked_before_the_first_step(fashion_subset):
    """`fit` checks them whole, as it checks arrays: a NaN in the last
    example fails before any weight changes."""
    (x, y), _ = fashion_subset
    x = x[:64].copy()
    x[-1, 0, 0, 0] = np.nan
    model = _model()
    before = model.get_weights()
    batches = EpochBatches(x, y[:64], 32, seed=1)
    with pytest.raises(ValueError, match="the first at example 63"):
        model.fit(batches, epochs=1, steps_per_epoch=batches.batches_per_epoch, verbose=0)
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)
