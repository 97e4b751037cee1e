"""Checks of every batch a `LocalModel` is given, whatever the input kind.

A local rule turns a bad label into a NaN (TensorFlow) or a finite, meaningless
loss (JAX) without a word, and an input of the wrong shape can make a traced
function relax its signature and fail on every later, correct call. So a
`LocalModel` checks each batch *before* a compiled step sees it: arrays at
once, `tf.data` pipelines inside the pipeline, `PyDataset`s and generators as
they yield. A bad batch stops `fit`, `evaluate` or `predict` with a
`ValueError` naming the bad value; the step never runs on it.
"""

import contextlib
import itertools
import re
import types

import keras
import numpy as np

from keras_local.epoch_seeding import EpochBatches


class BatchChecker:
    """Checks the inputs and labels of one batch against a model.

    Picklable (it holds no model), so `PyDataset` workers can run it.

    Args:
        model_name: the model's name, for messages.
        num_classes: labels must be integers in `[0, num_classes)`.
        input_shape: the shape of one example the model is built for, or
            `None` before it is built.
    """

    def __init__(self, model_name, num_classes, input_shape=None):
        self.model_name = model_name
        self.num_classes = num_classes
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def check_inputs(self, shape):
        """Raises a `ValueError` unless `shape` (a batch's, batch axis
        first) is a batch of the examples the model is built for."""
        if self.input_shape is None or getattr(shape, "rank", 0) is None:
            return  # not built yet, or a traced shape of unknown rank
        shape = tuple(None if d is None else int(d) for d in shape)
        example = shape[1:]
        fits = len(example) == len(self.input_shape) and all(
            got is None or got == want for got, want in zip(example, self.input_shape)
        )
        if not fits:
            expected = ", ".join(str(d) for d in self.input_shape)
            raise ValueError(
                f"{self.model_name} is built for inputs of shape (batch, {expected}); "
                f"got a batch of shape {shape}."
            )

    def check_labels(self, labels):
        """Raises a `ValueError` for one-hot, non-integer or out-of-range
        labels, naming the first bad value."""
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[-1] == self.num_classes and labels.shape[-1] > 1:
            raise ValueError(
                "LocalModel expects integer class ids, not one-hot labels of shape "
                f"{labels.shape}; pass np.argmax(y, axis=-1)."
            )
        if labels.size == 0:
            return
        dtype = labels.dtype
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise ValueError(f"Labels must be integer class ids; got dtype {labels.dtype}.")
        flat = labels.reshape(-1)
        not_integer = ~np.isfinite(flat) | (np.mod(np.nan_to_num(flat), 1) != 0)
        if not_integer.any():
            raise ValueError(
                "Labels must be integer class ids; got the non-integer value "
                f"{flat[np.argmax(not_integer)].item()!r}."
            )
        out_of_range = (flat < 0) | (flat >= self.num_classes)
        if out_of_range.any():
            raise ValueError(
                f"Labels must be class ids in [0, {self.num_classes}) for this "
                f"{self.num_classes}-class model; got {flat[np.argmax(out_of_range)].item()!r} "
                f"(labels from {flat.min().item()!r} to {flat.max().item()!r})."
            )

    def check_values(self, x):
        """Raises a `ValueError` when the NumPy array `x` holds NaN or an
        infinity (training on them silently turns every weight to NaN)."""
        if not (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)):
            return
        finite = np.isfinite(x)
        if not finite.all():
            bad = int(x.size - np.count_nonzero(finite))
            first = np.unravel_index(int(np.argmin(finite)), x.shape)
            raise ValueError(
                f"The inputs hold {bad} NaN or infinite value{'s' if bad > 1 else ''} "
                f"(the first at example {first[0]}, value {x[first]!r}); clean the data "
                "before training or predicting."
            )

    def check(self, x, y=None):
        """Checks inputs `x` (anything with a `shape`; NumPy arrays also for
        NaN and infinities) and labels `y` (`None`: none to check)."""
        if hasattr(x, "shape"):
            self.check_inputs(x.shape)
            self.check_values(x)
        if y is not None:
            self.check_labels(y)

    def check_batch(self, batch):
        """Checks a batch as a data set yields it: `x`, `(x,)`, `(x, y)` or
        `(x, y, sample_weight)`. Its `ValueError` is marked, so that
        `reraise_batch_check` finds it inside the error of whatever loader
        (a `tf.data` pipeline, Keras' `PyDataset` queue) ran the check."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        with _marked_errors():
            self.check(x, y)
        return batch


def checked(checker, x, y=None):
    """`(x, y)` with every batch to come checked by `checker`.

    Arrays are checked at once, also behind `EpochBatches`; a
    `tf.data.Dataset` gets a check in its pipeline; another `PyDataset` or a
    generator is wrapped so that each batch is checked as it is produced.
    Other kinds (a torch `DataLoader`, grain) pass unchanged.
    """
    if y is not None or hasattr(x, "shape"):
        checker.check(x, y)
        return x, y
    if isinstance(x, EpochBatches):
        # Its arrays whole, before the first step: a bad example late in the
        # data fails before any training, and no batch is checked twice.
        checker.check(x.x, x.y)
        return x, y
    if _is_tf_dataset(x):
        # The static shape first: a step traced for a wrong one fails (or
        # relaxes its signature) before any batch is read.
        spec = _input_spec(x)
        if spec is not None and spec.shape.rank is not None:
            checker.check_inputs(spec.shape)
        return _checked_tf_dataset(checker, x), y
    if isinstance(x, keras.utils.PyDataset):
        return CheckedPyDataset(x, checker), y
    if isinstance(x, types.GeneratorType):
        return (checker.check_batch(batch) for batch in x), y
    return x, y


def example_shape(x):
    """The shape of one example of `x` (arrays, a `tf.data.Dataset`, a
    `PyDataset` or a generator), and `x` itself (a generator is peeked at and
    given back whole); `None` if it cannot be known without consuming data."""
    if hasattr(x, "shape"):
        return tuple(x.shape[1:]), x
    if _is_tf_dataset(x):
        spec = _input_spec(x)
        if spec is None or spec.shape.rank is None:
            return None, x
        shape = tuple(spec.shape[1:])
        return (shape if None not in shape else None), x
    if isinstance(x, keras.utils.PyDataset):
        batch = x[0]
    elif isinstance(x, types.GeneratorType):
        batch = next(x)
        x = itertools.chain([batch], x)
        x = (item for item in x)  # a generator again, as Keras expects
    else:
        return None, x
    inputs, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
    return (tuple(inputs.shape[1:]) if hasattr(inputs, "shape") else None), x


class CheckedPyDataset(keras.utils.PyDataset):
    """A `PyDataset` whose batches are checked before they are used."""

    def __init__(self, dataset, checker):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self.checker = checker

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.checker.check_batch(self.dataset[index])

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


# Marks a check's message inside a TensorFlow error, to raise it as itself.
_MARK = "[keras_local batch check] "
_END = " [end of check]"


def _is_tf_dataset(x):
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec")


def _input_spec(dataset):
    """The `TensorSpec` of a `tf.data.Dataset`'s inputs, or `None`."""
    spec = dataset.element_spec
    if isinstance(spec, (tuple, list)):
        spec = spec[0]
    return spec if hasattr(spec, "shape") else None


def _checked_tf_dataset(checker, dataset):
    import tensorflow as tf

    def check(shape, labels):
        with _marked_errors():
            checker.check_inputs(shape)
            if labels.size:
                checker.check_labels(labels)
        return np.int32(0)

    def checked_element(*element):
        element = element[0] if len(element) == 1 else element
        x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
        labels = tf.zeros((0,), "int32") if y is None else y
        ok = tf.numpy_function(check, [tf.shape(x), labels], tf.int32)
        ok.set_shape(())
        # Data-dependent on the check, so no graph optimisation can drop it.
        return tf.nest.map_structure(lambda t: t + tf.cast(ok, t.dtype), element)

    return dataset.map(checked_element)


@contextlib.contextmanager
def _marked_errors():
    # A loader reports a Python error by its text only (tf.data), or wraps
    # it; the mark lets `reraise_batch_check` give the user the ValueError.
    try:
        yield
    except ValueError as error:
        raise ValueError(_MARK + str(error) + _END) from None


def reraise_batch_check(error):
    """If `error` carries a batch check's message (raised inside a loader),
    raises that message as a plain `ValueError`."""
    match = re.search(re.escape(_MARK) + "(.*?)" + re.escape(_END), str(error), re.DOTALL)
    if match:
        raise ValueError(match.group(1)) from None
