"""Data sets of the local-loss paper as NumPy arrays, plus their training augmentation.

`load(name)` returns `((x_train, y_train), (x_test, y_test))` with images in NHWC
(grayscale images get a trailing channel axis of 1), normalised per channel as
`(x / 255 - mean) / std` with the statistics used by the reference code
(`anokland/local-loss`), and labels as int32 class ids of shape `(N,)`.
`augmentation(name)` builds the matching training augmentation from Keras
preprocessing layers, for use on normalised images.

Where the data comes from:

* `fashion_mnist`: the four IDX `.gz` files, read with `gzip` + NumPy (no
  TensorFlow), from (0) `data_dir` when given, (1) the Keras cache
  `<KERAS_HOME or ~/.keras>/datasets/fashion-mnist/`, (2) the system copy of the
  Debian package `dataset-fashion-mnist` (`SYSTEM_DATA_DIRS`), and (3) the
  normal Keras download `keras.datasets.fashion_mnist.load_data()`.
* `mnist`, `cifar10`, `cifar100`: `keras.datasets.<name>.load_data()` when
  Keras has already cached the file, otherwise tensorflow-datasets, or, when
  tensorflow-datasets is not installed (a JAX- or torch-only install), the
  Keras download.
* `kmnist`, `svhn_cropped` (train = `train` + `extra`), `stl10` (the labelled
  5k `train` split and the `test` split): tensorflow-datasets, which needs
  TensorFlow: `pip install "keras-local[tf]"`.

If a data set cannot be found or downloaded, `DatasetUnavailableError` says what
to install or where to put the files.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import tempfile

import numpy as np

from keras_local import optional

__all__ = [
    "DATASETS",
    "SYSTEM_DATA_DIRS",
    "DatasetInfo",
    "DatasetUnavailableError",
    "TrainAugmentation",
    "augmentation",
    "info",
    "keras_cache_dir",
    "load",
]

DATASETS = (
    "fashion_mnist",
    "mnist",
    "kmnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "stl10",
)

# Directories searched for the raw files of a data set after the Keras cache
# (e.g. the Debian package `dataset-fashion-mnist`). Tests monkeypatch this.
SYSTEM_DATA_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}

FASHION_MNIST_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)

# The file `keras.utils.get_file` looks for in `<keras cache>/datasets/` (Keras
# 3.15 layout). When it exists, `keras.datasets.<name>.load_data()` does not
# download anything.
_KERAS_CACHE_FILES = {
    "mnist": "mnist.npz",
    "cifar10": "cifar-10-batches-py-target_archive",
    "cifar100": "cifar-100-python-target_archive",
}

# tensorflow-datasets splits used for (train, test).
_TFDS_SPLITS = {
    "mnist": ("train", "test"),
    "kmnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "svhn_cropped": ("train+extra", "test"),
    "stl10": ("train", "test"),
}


class DatasetUnavailableError(RuntimeError):
    """A data set is neither available locally nor downloadable."""


@dataclasses.dataclass(frozen=True)
class TrainAugmentation:
    """The paper's training augmentation of a data set.

    Attributes:
        jitter: maximum random translation in pixels, i.e. torchvision
            `RandomCrop(size, padding=jitter)`; 0 for none.
        horizontal_flip: whether images are flipped left-right at random.
    """

    jitter: int = 0
    horizontal_flip: bool = False

    def __bool__(self):
        return bool(self.jitter) or self.horizontal_flip


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a supported data set.

    Attributes:
        name: the tensorflow-datasets name.
        num_classes: number of classes.
        input_shape: `(height, width, channels)` of one image.
        mean: per-channel mean of the raw images scaled to [0, 1].
        std: per-channel standard deviation of the raw images scaled to [0, 1].
        train_augmentation: the paper's training augmentation
            (`TrainAugmentation`).
        cutout_length: hole length of the paper's cutout recipe, in pixels:
            14 for the MNIST family, 16 for CIFAR-10 and SVHN, 48 for STL-10.
            `None` for CIFAR-100, which had no cutout recipe.
    """

    name: str
    num_classes: int
    input_shape: tuple
    mean: tuple
    std: tuple
    train_augmentation: TrainAugmentation
    cutout_length: int | None

    @property
    def fill_value(self):
        """Normalised value of a raw black pixel, `-mean / std` per channel."""
        return tuple(-m / s for m, s in zip(self.mean, self.std))


_INFOS = {
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 10, (28, 28, 1), (0.286,), (0.353,),
        TrainAugmentation(jitter=2, horizontal_flip=True), 14,
    ),
    "mnist": DatasetInfo(
        "mnist", 10, (28, 28, 1), (0.1307,), (0.3081,),
        TrainAugmentation(jitter=2), 14,
    ),
    "kmnist": DatasetInfo(
        "kmnist", 10, (28, 28, 1), (0.1904,), (0.3475,),
        TrainAugmentation(), 14,
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, (32, 32, 3),
        (0.424, 0.415, 0.384), (0.283, 0.278, 0.284),
        TrainAugmentation(jitter=4, horizontal_flip=True), 16,
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, (32, 32, 3),
        (0.438, 0.418, 0.377), (0.300, 0.287, 0.294),
        TrainAugmentation(jitter=4, horizontal_flip=True), None,
    ),
    "svhn_cropped": DatasetInfo(
        "svhn_cropped", 10, (32, 32, 3),
        (0.431, 0.430, 0.446), (0.197, 0.198, 0.199),
        TrainAugmentation(), 16,
    ),
    "stl10": DatasetInfo(
        "stl10", 10, (96, 96, 3),
        (0.447, 0.440, 0.407), (0.260, 0.257, 0.271),
        TrainAugmentation(), 48,
    ),
}


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(
            f"Unknown data set {name!r}. Valid choices: {', '.join(DATASETS)}."
        )


def info(name):
    """Returns the `DatasetInfo` of a supported data set.

    Args:
        name: one of `DATASETS`.

    Raises:
        ValueError: if `name` is not supported.
    """
    _check_name(name)
    return _INFOS[name]


# --------------------------------------------------------------------------------------
# Keras cache


def keras_cache_dir():
    """The Keras cache directory, resolved the way Keras resolves it.

    `$KERAS_HOME` if set, else `~/.keras` (`/tmp/.keras` when the home directory
    is not writable), as in `keras/src/backend/config.py`. If that directory
    exists but is not writable, `keras.utils.get_file` uses `/tmp/.keras`
    instead, and so does this function. Unlike Keras, `$KERAS_HOME` is read at
    call time, not at import time.
    """
    if "KERAS_HOME" in os.environ:
        base = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        if not os.access(home, os.W_OK):
            home = "/tmp"
        base = os.path.join(home, ".keras")
    base = os.path.expanduser(base)
    if os.path.isdir(base) and not os.access(base, os.W_OK):
        tmp = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        base = os.path.join(tmp, ".keras")
    return base


def _keras_datasets_dir():
    return os.path.join(keras_cache_dir(), "datasets")


# --------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files, no TensorFlow)


def _read_idx_labels(path):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=8)


def _read_idx_images(path, num):
    with gzip.open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8, offset=16)
    return data.reshape(num, 28, 28)


def _read_fashion_mnist_dir(directory):
    paths = [os.path.join(directory, f) for f in FASHION_MNIST_FILES]
    y_train = _read_idx_labels(paths[0])
    x_train = _read_idx_images(paths[1], len(y_train))
    y_test = _read_idx_labels(paths[2])
    x_test = _read_idx_images(paths[3], len(y_test))
    return (x_train, y_train), (x_test, y_test)


def _has_all_files(directory, files):
    return all(os.path.isfile(os.path.join(directory, f)) for f in files)


def _fashion_mnist_search_dirs(data_dir):
    dirs = []
    if data_dir is not None:
        dirs.append(os.path.expanduser(str(data_dir)))
    dirs.append(os.path.join(_keras_datasets_dir(), "fashion-mnist"))
    dirs.extend(SYSTEM_DATA_DIRS.get("fashion_mnist", ()))
    return dirs


def _keras_download(name):
    """`keras.datasets.<name>.load_data()`. Separate so tests can replace it."""
    import keras

    return getattr(keras.datasets, name).load_data()


def _load_fashion_mnist(data_dir, download):
    searched = _fashion_mnist_search_dirs(data_dir)
    for directory in searched:
        if _has_all_files(directory, FASHION_MNIST_FILES):
            return _read_fashion_mnist_dir(directory)
    cache = os.path.join(_keras_datasets_dir(), "fashion-mnist")
    how = (
        "Fashion-MNIST is not available. Searched for "
        f"{', '.join(FASHION_MNIST_FILES)} in: {', '.join(searched)}. "
        "To fix it, do one of: (a) on Debian/Ubuntu, `apt-get install "
        "dataset-fashion-mnist` (installs them under "
        "/usr/share/datasets/fashion-mnist/); (b) copy the four files into the "
        f"Keras cache directory {cache}/ (set KERAS_HOME to choose another "
        "cache root; it must be writable); (c) connect to the internet and call "
        "load('fashion_mnist', download=True), which runs "
        "keras.datasets.fashion_mnist.load_data()."
    )
    if not download:
        raise DatasetUnavailableError(how + " (download=False was given.)")
    try:
        return _keras_download("fashion_mnist")
    except Exception as e:  # noqa: BLE001 - any download failure means unavailable
        raise DatasetUnavailableError(
            how + f" The download failed with {type(e).__name__}: {e}"
        ) from e


# --------------------------------------------------------------------------------------
# tensorflow-datasets


def _tfds_help(name, data_dir):
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return (
        f"Data set {name!r} is not available from tensorflow-datasets "
        f"(data_dir={where}). To fix it: on a machine with internet, run "
        "`pip install tensorflow tensorflow-datasets` and "
        f"`python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{name}', data_dir='DIR').download_and_prepare()\"` "
        f"(or `tfds build {name} --data_dir DIR`), copy DIR/{name}/ to this "
        "machine, then pass `data_dir=DIR` to load() or set TFDS_DATA_DIR=DIR; "
        f"or connect to the internet and call load({name!r}, download=True)."
    )


def _tfds_to_numpy(ds, tfds):
    xs, ys = [], []
    # Batch explicitly instead of `batch_size=-1`: that needs split sizes in the
    # data set metadata (it crashes under `tfds.testing.mock_data` without them).
    for x, y in tfds.as_numpy(ds.batch(8192)):
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _load_tfds(name, data_dir, download):
    try:
        tfds = optional.require(
            "tensorflow_datasets", extra="tf", feature=f"Loading {name!r}"
        )
    except ImportError as e:
        raise DatasetUnavailableError(
            f"{e} (tensorflow-datasets and TensorFlow; on a machine without a GPU "
            "`pip install tensorflow-cpu tensorflow-datasets` is a smaller "
            "download). " + _tfds_help(name, data_dir)
        ) from e
    out = []
    for split in _TFDS_SPLITS[name]:
        try:
            ds = tfds.load(
                name,
                split=split,
                as_supervised=True,
                data_dir=data_dir,
                download=download,
            )
            out.append(_tfds_to_numpy(ds, tfds))
        except Exception as e:  # noqa: BLE001 - missing data, failed download, ...
            # The cause first: it may be a missing package, not missing data.
            raise DatasetUnavailableError(
                f"tensorflow-datasets failed on split {split!r} of {name!r} with "
                f"{type(e).__name__}: {e}. " + _tfds_help(name, data_dir)
            ) from e
    return tuple(out)


# --------------------------------------------------------------------------------------
# Public loader


def _tfds_installed():
    """Whether tensorflow-datasets and TensorFlow can be imported (checked
    without importing them). Separate so tests can replace it."""
    return optional.available("tensorflow_datasets") and optional.available("tensorflow")


def _load_keras_or_tfds(name, data_dir, download):
    cached = os.path.join(_keras_datasets_dir(), _KERAS_CACHE_FILES[name])
    if os.path.exists(cached):
        try:
            return _keras_download(name)
        except Exception:  # noqa: BLE001 - e.g. a corrupt cached file; try tfds
            pass
    if _tfds_installed():
        return _load_tfds(name, data_dir, download)
    # No tensorflow-datasets (a JAX- or torch-only install): Keras downloads
    # these sets itself, without TensorFlow.
    how = (
        f"Data set {name!r} is not in the Keras cache ({cached}), and "
        f"tensorflow-datasets is not installed ({optional.install_command('tf')}). "
        f"load({name!r}, download=True) downloads it with "
        f"keras.datasets.{name}.load_data(), which needs the internet"
    )
    if not download:
        raise DatasetUnavailableError(how + " (download=False was given).")
    try:
        return _keras_download(name)
    except Exception as e:  # noqa: BLE001 - any download failure means unavailable
        raise DatasetUnavailableError(
            how + f"; it failed with {type(e).__name__}: {e}"
        ) from e


def _to_nhwc(x, channels):
    x = np.asarray(x)
    if x.ndim == 3:
        return x[..., None]
    if x.shape[-1] != channels and x.shape[1] == channels:  # channels_first
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def _normalize(x, mean, std):
    out = x.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    out -= np.asarray(mean, np.float32)
    out /= np.asarray(std, np.float32)
    return out


def normalized(name, x):
    """The float32 images `load(name)` returns, from the raw uint8 pixels
    `load(name, normalize=False)` returns: `(x / 255 - mean) / std` per
    channel. For keeping a data set as uint8 (a quarter of the memory) and
    normalizing batch by batch.

    Example:

    >>> import numpy as np
    >>> normalized("fashion_mnist", np.full((1, 28, 28, 1), 255, np.uint8)).dtype
    dtype('float32')
    """
    _check_name(name)
    return _normalize(np.asarray(x), _INFOS[name].mean, _INFOS[name].std)


def load(name, normalize=True, data_dir=None, download=True):
    """Loads a data set as NumPy arrays.

    Args:
        name: one of `DATASETS`.
        normalize: if True, images are float32 `(x / 255 - mean) / std` per
            channel (`info(name).mean`, `.std`); otherwise the raw uint8 pixels.
        data_dir: for tensorflow-datasets sets, the tfds data directory
            (default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`). For
            `fashion_mnist`, a directory holding the four IDX `.gz` files,
            searched before the Keras cache and the system copy.
        download: whether a missing data set may be downloaded.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images NHWC, labels int32
        class ids of shape `(N,)`.

    Raises:
        ValueError: if `name` is not supported.
        DatasetUnavailableError: if the data set is neither available locally
            nor downloadable; the message says what to install or do.
    """
    _check_name(name)
    ds_info = _INFOS[name]
    if name == "fashion_mnist":
        splits = _load_fashion_mnist(data_dir, download)
    elif name in _KERAS_CACHE_FILES:
        splits = _load_keras_or_tfds(name, data_dir, download)
    else:
        splits = _load_tfds(name, data_dir, download)

    channels = ds_info.input_shape[-1]
    result = []
    for x, y in splits:
        x = _to_nhwc(x, channels)
        if normalize:
            x = _normalize(x, ds_info.mean, ds_info.std)
        else:
            x = x.astype(np.uint8, copy=False)
        y = np.asarray(y).reshape(-1).astype(np.int32)
        result.append((x, y))
    return tuple(result)


# --------------------------------------------------------------------------------------
# Augmentation


def augmentation(name, cutout=None, seed=None):
    """The paper's training augmentation of a data set, as Keras layers.

    In the reference order: random jitter (zero-padded random crop), horizontal
    flip, then cutout. It expects *normalised* images (as returned by
    `load(name)`): the jitter pads with `-mean / std`, the normalised value of a
    raw black pixel (torchvision pads the raw image with 0 before normalising),
    and cutout holes are 0, as in the reference where cutout follows
    normalisation. Every layer is active only when called with `training=True`.

    Args:
        name: one of `DATASETS`.
        cutout: hole length in pixels (int), `True` for the paper's recipe
            length `info(name).cutout_length`, or `None`/`False` for no cutout.
        seed: optional int; each layer gets its own seed derived from it.

    Returns:
        A `keras.Sequential`, or `None` when there is nothing to do.
    """
    import keras

    from keras_local.layers.cutout import Cutout
    from keras_local.layers.random_jitter import RandomJitter

    ds_info = info(name)
    if cutout is True:
        cutout = ds_info.cutout_length
        if cutout is None:
            raise ValueError(
                f"The paper has no cutout recipe for {name!r}; pass a length."
            )
    elif cutout is False:
        cutout = None
    if cutout is not None and (
        isinstance(cutout, bool) or int(cutout) != cutout or cutout <= 0
    ):
        raise ValueError(f"`cutout` must be a positive int or None. Got {cutout!r}")

    def layer_seed(i):
        return None if seed is None else int(seed) + i

    aug = ds_info.train_augmentation
    layers = []
    if aug.jitter:
        layers.append(
            RandomJitter(
                aug.jitter,
                fill_value=list(ds_info.fill_value),
                seed=layer_seed(0),
                name="jitter",
            )
        )
    if aug.horizontal_flip:
        layers.append(
            keras.layers.RandomFlip("horizontal", seed=layer_seed(1), name="flip")
        )
    if cutout is not None:
        layers.append(Cutout(int(cutout), seed=layer_seed(2), name="cutout"))
    if not layers:
        return None
    return keras.Sequential(layers, name=f"{name}_augmentation")
