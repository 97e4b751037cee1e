"""keras_local.data: loaders (offline), metadata and augmentation builders."""

import dataclasses
import gzip
import os
import struct

import keras
import numpy as np
import pytest

from keras_local import data
from keras_local.layers.cutout import Cutout
from keras_local.layers.random_jitter import RandomJitter

SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


# ----------------------------------------------------------------------------------
# Helpers: synthetic IDX files


def _write_idx(directory, n_train, n_test, value):
    """Writes the four gzipped Fashion-MNIST IDX files, every pixel = `value`."""
    os.makedirs(directory, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.full((n, 28, 28), value, np.uint8)
        with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
        with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty Keras cache and system dirs; downloads fail loudly."""
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    system = tmp_path / "system"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", {"fashion_mnist": (str(system),)})

    def no_download(name):
        raise AssertionError(f"unexpected download of {name}")

    monkeypatch.setattr(data, "_keras_download", no_download)
    return keras_home / "datasets" / "fashion-mnist", system


# ----------------------------------------------------------------------------------
# Real Fashion-MNIST from the Debian package


@pytest.fixture(scope="module")
def real_fashion_mnist():
    if not os.path.isdir(SYSTEM_FASHION_MNIST):
        pytest.skip(
            f"{SYSTEM_FASHION_MNIST} is absent (Debian package dataset-fashion-mnist "
            "not installed)"
        )
    mp = pytest.MonkeyPatch()
    # Make sure the system copy is what gets read, not some Keras cache.
    mp.setattr(data, "SYSTEM_DATA_DIRS", {"fashion_mnist": (SYSTEM_FASHION_MNIST,)})
    mp.setenv("KERAS_HOME", "/nonexistent-keras-home-for-tests")
    try:
        yield data.load("fashion_mnist", download=False)
    finally:
        mp.undo()


def test_real_fashion_mnist_shapes_and_normalisation(real_fashion_mnist):
    (x_train, y_train), (x_test, y_test) = real_fashion_mnist
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert y_train.min() == 0 and y_train.max() == 9
    assert set(np.unique(y_test)) == set(range(10))
    assert abs(float(x_train.mean())) < 0.01
    assert abs(float(x_train.std()) - 1.0) < 0.01
    # Black pixels map to -mean/std.
    np.testing.assert_allclose(x_train.min(), -0.286 / 0.353, rtol=1e-5)


def test_real_fashion_mnist_raw(real_fashion_mnist, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", {"fashion_mnist": (SYSTEM_FASHION_MNIST,)})
    monkeypatch.setenv("KERAS_HOME", "/nonexistent-keras-home-for-tests")
    (x_train, y_train), (x_test, _) = data.load("fashion_mnist", normalize=False, download=False)
    assert x_train.dtype == np.uint8 and x_train.shape == (60000, 28, 28, 1)
    assert x_train.max() == 255 and x_test.dtype == np.uint8
    # Consistent with the normalised copy.
    normalised = real_fashion_mnist[0][0][:100]
    np.testing.assert_allclose(
        normalised, (x_train[:100] / 255.0 - 0.286) / 0.353, rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------------
# Fashion-MNIST search order (synthetic files)


def test_keras_cache_dir_follows_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert data.keras_cache_dir() == str(tmp_path)
    monkeypatch.delenv("KERAS_HOME")
    assert data.keras_cache_dir().endswith(".keras")


def test_keras_cache_wins_over_system_copy(isolated):
    cache, system = isolated
    _write_idx(cache, 30, 10, value=7)
    _write_idx(system, 20, 5, value=9)
    (x_train, y_train), (x_test, y_test) = data.load("fashion_mnist", normalize=False)
    assert x_train.shape == (30, 28, 28, 1) and x_test.shape == (10, 28, 28, 1)
    assert np.all(x_train == 7)
    np.testing.assert_array_equal(y_train, np.arange(30) % 10)
    assert y_test.dtype == np.int32


def test_system_copy_used_without_cache(isolated):
    _, system = isolated
    _write_idx(system, 20, 5, value=9)
    (x_train, _), (x_test, _) = data.load("fashion_mnist", normalize=False)
    assert x_train.shape == (20, 28, 28, 1) and x_test.shape == (5, 28, 28, 1)
    assert np.all(x_train == 9)


def test_incomplete_cache_is_skipped(isolated):
    cache, system = isolated
    _write_idx(cache, 30, 10, value=7)
    os.remove(cache / "t10k-images-idx3-ubyte.gz")
    _write_idx(system, 20, 5, value=9)
    (x_train, _), _ = data.load("fashion_mnist", normalize=False)
    assert np.all(x_train == 9)


def test_explicit_data_dir_searched_first(isolated, tmp_path):
    cache, _ = isolated
    _write_idx(cache, 30, 10, value=7)
    _write_idx(tmp_path / "mine", 12, 4, value=3)
    (x_train, _), _ = data.load("fashion_mnist", normalize=False, data_dir=tmp_path / "mine")
    assert x_train.shape == (12, 28, 28, 1) and np.all(x_train == 3)


def test_synthetic_normalisation(isolated):
    cache, _ = isolated
    _write_idx(cache, 10, 10, value=255)
    (x_train, _), _ = data.load("fashion_mnist")
    assert x_train.dtype == np.float32
    np.testing.assert_allclose(x_train, (1.0 - 0.286) / 0.353, rtol=1e-6)


def test_download_used_when_nothing_local(isolated, monkeypatch):
    calls = []

    def fake_download(name):
        calls.append(name)
        x = np.zeros((6, 28, 28), np.uint8)
        y = np.arange(6, dtype=np.uint8)
        return (x, y), (x[:2], y[:2])

    monkeypatch.setattr(data, "_keras_download", fake_download)
    (x_train, y_train), (x_test, _) = data.load("fashion_mnist")
    assert calls == ["fashion_mnist"]
    assert x_train.shape == (6, 28, 28, 1) and x_test.shape == (2, 28, 28, 1)
    assert y_train.dtype == np.int32


def test_unavailable_when_download_fails(isolated, monkeypatch):
    def failing_download(name):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(data, "_keras_download", failing_download)
    with pytest.raises(data.DatasetUnavailableError) as excinfo:
        data.load("fashion_mnist")
    message = str(excinfo.value)
    assert "dataset-fashion-mnist" in message
    assert os.path.join("datasets", "fashion-mnist") in message  # the cache path
    assert "internet" in message
    assert isinstance(excinfo.value.__cause__, OSError)
    assert isinstance(excinfo.value, RuntimeError)


def test_unavailable_without_download(isolated):
    # The `isolated` download stub would raise AssertionError if it were called.
    with pytest.raises(data.DatasetUnavailableError, match="dataset-fashion-mnist"):
        data.load("fashion_mnist", download=False)


# ----------------------------------------------------------------------------------
# Names and metadata


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError) as excinfo:
        data.load("imagenet")
    message = str(excinfo.value)
    assert "imagenet" in message
    for name in data.DATASETS:
        assert name in message
    with pytest.raises(ValueError, match="cifar10"):
        data.info("cifar-10")
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.augmentation("fmnist")


def test_dataset_names():
    assert data.DATASETS == (
        "fashion_mnist", "mnist", "kmnist", "cifar10", "cifar100", "svhn_cropped", "stl10"
    )
    assert issubclass(data.DatasetUnavailableError, RuntimeError)


def test_info_values():
    fm = data.info("fashion_mnist")
    assert (fm.num_classes, fm.input_shape, fm.mean, fm.std) == (10, (28, 28, 1), (0.286,), (0.353,))
    assert fm.train_augmentation.jitter == 2 and fm.train_augmentation.horizontal_flip
    assert fm.cutout_length == 14

    mnist = data.info("mnist")
    assert mnist.mean == (0.1307,) and mnist.std == (0.3081,)
    assert mnist.train_augmentation.jitter == 2 and not mnist.train_augmentation.horizontal_flip

    c10 = data.info("cifar10")
    assert c10.mean == (0.424, 0.415, 0.384) and c10.std == (0.283, 0.278, 0.284)
    assert c10.train_augmentation.jitter == 4 and c10.cutout_length == 16

    c100 = data.info("cifar100")
    assert c100.num_classes == 100 and c100.cutout_length is None

    assert not data.info("kmnist").train_augmentation
    assert not data.info("svhn_cropped").train_augmentation
    stl = data.info("stl10")
    assert stl.input_shape == (96, 96, 3) and stl.cutout_length == 48
    assert data.info("svhn_cropped").cutout_length == 16

    with pytest.raises(dataclasses.FrozenInstanceError):
        fm.num_classes = 3
    for name in data.DATASETS:
        i = data.info(name)
        assert len(i.mean) == len(i.std) == i.input_shape[-1]


# ----------------------------------------------------------------------------------
# Augmentation builders


def _types(seq):
    return [type(layer) for layer in seq.layers]


def test_augmentation_layers_per_dataset():
    assert data.augmentation("kmnist") is None
    assert data.augmentation("svhn_cropped") is None
    assert data.augmentation("stl10") is None

    fm = data.augmentation("fashion_mnist", seed=1)
    assert isinstance(fm, keras.Sequential)
    assert _types(fm) == [RandomJitter, keras.layers.RandomFlip]
    assert fm.layers[0].max_shift == 2
    np.testing.assert_allclose(fm.layers[0].fill_value, [-0.286 / 0.353])
    assert fm.layers[1].mode == "horizontal"

    mnist = data.augmentation("mnist")
    assert _types(mnist) == [RandomJitter]

    c10 = data.augmentation("cifar10", cutout=16)
    assert _types(c10) == [RandomJitter, keras.layers.RandomFlip, Cutout]
    assert c10.layers[0].max_shift == 4 and c10.layers[2].length == 16
    np.testing.assert_allclose(
        c10.layers[0].fill_value,
        [-m / s for m, s in zip((0.424, 0.415, 0.384), (0.283, 0.278, 0.284))],
    )

    kmnist = data.augmentation("kmnist", cutout=True)
    assert _types(kmnist) == [Cutout] and kmnist.layers[0].length == 14
    assert data.augmentation("stl10", cutout=True).layers[0].length == 48
    with pytest.raises(ValueError):
        data.augmentation("cifar100", cutout=True)
    with pytest.raises(ValueError):
        data.augmentation("cifar10", cutout=0)


@pytest.mark.backend
def test_augmentation_runs_on_normalised_batch(isolated):
    cache, _ = isolated
    _write_idx(cache, 16, 4, value=200)
    (x_train, _), _ = data.load("fashion_mnist")
    aug = data.augmentation("fashion_mnist", cutout=14, seed=0)
    y = keras.ops.convert_to_numpy(aug(x_train, training=True))
    assert y.shape == x_train.shape
    black = -0.286 / 0.353
    assert np.any(np.isclose(y, black))  # jitter border
    assert np.any(y == 0)  # cutout hole
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(aug(x_train, training=False)), x_train
    )


# ----------------------------------------------------------------------------------
# Keras-cache sets and tensorflow-datasets sets


def test_mnist_uses_keras_cache_else_tfds(isolated, monkeypatch):
    cache, _ = isolated
    calls = []

    def fake_keras(name):
        calls.append(("keras", name))
        x = np.zeros((4, 28, 28), np.uint8)
        return (x, np.ones(4, np.uint8)), (x, np.ones(4, np.uint8))

    def fake_tfds(name, data_dir, download):
        calls.append(("tfds", name))
        x = np.zeros((3, 28, 28, 1), np.uint8)
        return (x, np.zeros(3, np.int64)), (x, np.zeros(3, np.int64))

    monkeypatch.setattr(data, "_keras_download", fake_keras)
    monkeypatch.setattr(data, "_load_tfds", fake_tfds)
    (x, y), _ = data.load("mnist")
    assert calls == [("tfds", "mnist")] and x.shape == (3, 28, 28, 1)

    cache.parent.mkdir(parents=True, exist_ok=True)
    (cache.parent / "mnist.npz").write_bytes(b"placeholder")
    (x, y), _ = data.load("mnist")
    assert calls[-1] == ("keras", "mnist")
    assert x.shape == (4, 28, 28, 1) and y.dtype == np.int32 and x.dtype == np.float32

    # A cached file Keras cannot use (e.g. corrupt, re-download fails) -> tfds.
    def broken_keras(name):
        raise ValueError("Incomplete or corrupted file detected.")

    monkeypatch.setattr(data, "_keras_download", broken_keras)
    (x, y), _ = data.load("mnist")
    assert calls[-1] == ("tfds", "mnist") and x.shape == (3, 28, 28, 1)


def test_cifar_labels_flattened(isolated, monkeypatch):
    cache, _ = isolated
    cache.parent.mkdir(parents=True, exist_ok=True)
    (cache.parent / "cifar-10-batches-py-target_archive").write_bytes(b"x")

    def fake_keras(name):
        x = np.full((5, 32, 32, 3), 255, np.uint8)
        y = np.arange(5, dtype=np.uint8).reshape(5, 1)
        return (x, y), (x, y)

    monkeypatch.setattr(data, "_keras_download", fake_keras)
    (x, y), _ = data.load("cifar10")
    assert y.shape == (5,) and y.dtype == np.int32
    np.testing.assert_allclose(
        x[0, 0, 0], [(1 - m) / s for m, s in zip((0.424, 0.415, 0.384), (0.283, 0.278, 0.284))],
        rtol=1e-6,
    )


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_tfds_kmnist_with_mock_data(tfds):
    with tfds.testing.mock_data(num_examples=12):
        (x_train, y_train), (x_test, y_test) = data.load("kmnist", download=False)
        (r_train, _), _ = data.load("kmnist", normalize=False, download=False)
    assert x_train.shape == (12, 28, 28, 1) and x_test.shape == (12, 28, 28, 1)
    assert x_train.dtype == np.float32
    assert y_train.shape == (12,) and y_train.dtype == np.int32
    assert y_test.min() >= 0 and y_test.max() <= 9
    assert r_train.dtype == np.uint8 and r_train.shape == (12, 28, 28, 1)
    np.testing.assert_allclose(
        x_train, (r_train / 255.0 - 0.1904) / 0.3475, rtol=1e-5, atol=1e-5
    )


def test_tfds_svhn_uses_train_plus_extra(tfds, monkeypatch):
    requested = []
    real_load = tfds.load

    def spy(name, **kwargs):
        requested.append((name, kwargs["split"]))
        return real_load(name, **kwargs)

    monkeypatch.setattr(tfds, "load", spy)
    with tfds.testing.mock_data(num_examples=5):
        (x_train, y_train), _ = data.load("svhn_cropped", download=False)
        (s_train, _), (s_test, _) = data.load("stl10", download=False)
    assert requested == [
        ("svhn_cropped", "train+extra"), ("svhn_cropped", "test"),
        ("stl10", "train"), ("stl10", "test"),
    ]
    assert x_train.shape == (5, 32, 32, 3) and x_train.dtype == np.float32
    assert s_train.shape == (5, 96, 96, 3) and s_test.shape == (5, 96, 96, 3)


def test_tfds_unavailable_message(tfds, tmp_path):
    with pytest.raises(data.DatasetUnavailableError) as excinfo:
        data.load("kmnist", data_dir=str(tmp_path), download=False)
    message = str(excinfo.value)
    assert "tensorflow-datasets" in message and "data_dir" in message
    assert "TFDS_DATA_DIR" in message and str(tmp_path) in message
    assert excinfo.value.__cause__ is not None
