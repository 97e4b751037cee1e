"""What `LocalModel` adds to Keras' own entry points: building from the
data, checking every batch, and refusing what a local rule cannot honour.

`fit`, `evaluate`, `predict` and the `*_on_batch` methods build the model
from the data's example shape before any step is traced, check every batch
of every input kind (`keras_local.batch_checks`), refuse sample and class
weights, give Keras' callbacks the direction of the model's metrics, and
add `StopOnDivergence` to `fit`.
"""

import contextlib
import warnings

import keras
from keras import ops

from keras_local.batch_checks import BatchChecker
from keras_local.batch_checks import checked
from keras_local.batch_checks import example_shape
from keras_local.batch_checks import reraise_batch_check
from keras_local.callbacks import StopOnDivergence
from keras_local.epoch_seeding import EpochBatches


class CheckedEntryPoints:
    """A mixin for `keras.Model` subclasses with `num_classes` and a
    `build` from an input shape (`LocalModel`)."""

    @property
    def example_shape(self):
        """The shape of one example the model is built for (no batch axis),
        or `None` before it is built (what inputs are checked against)."""
        shape = getattr(self, "_input_shape_checked", None)
        return None if shape is None else tuple(shape[1:])

    def batch_checker(self):
        """A `BatchChecker` of inputs and labels for this model."""
        return BatchChecker(self.name, self.num_classes, self.example_shape)

    def standardize_inputs(self, x):
        """`x` as the blocks take it: integer images (raw uint8 data) cast to
        the compute dtype, as a Keras `Input` casts them; the model built
        from `x`'s shape if it is not built yet. Raises a `ValueError` when
        `x`'s (static) shape does not fit the built model."""
        if not self.built:
            self.build(tuple(x.shape))
        self.batch_checker().check_inputs(x.shape)
        if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype)):
            x = ops.cast(x, self.compute_dtype)
        return x

    @staticmethod
    def labels_from(y):
        if y is None:
            raise ValueError("LocalModel needs labels to train or evaluate.")
        return ops.reshape(ops.cast(y, "int32"), (-1,))

    def unpack(self, data):
        """`(x, labels)` of a training or test step's batch."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(_NO_SAMPLE_WEIGHTS)
        return self.standardize_inputs(x), self.labels_from(y)

    def check_data(self, x, y=None):
        """Raises a clear `ValueError` for labels out of range, one-hot or
        non-integer labels and inputs of the wrong shape, in arrays `x`, `y`
        (or the first batch of a `PyDataset`). `fit`, `evaluate` and
        `predict` check every batch of every input kind themselves."""
        if y is None and isinstance(x, keras.utils.PyDataset):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(x[0])
        self.batch_checker().check(x, y if hasattr(y, "shape") else None)

    def _check_compile(self):
        if getattr(self, "_compile_loss", None) is not None or getattr(
            self, "_compile_metrics", None
        ) is not None:
            raise ValueError(
                "LocalModel computes its own losses and metrics from its rule; "
                "compile it with an optimizer only (no `loss=` or `metrics=`)."
            )

    def _prepare_data(self, x, y):
        """Builds the model from the data's example shape if needed (so that
        its state is made eagerly, never inside a traced step), and returns
        `(x, y)` with every batch to come checked."""
        if not self.built:
            shape, x = example_shape(x)
            if shape is not None:
                self.build((None, *shape))
        return checked(self.batch_checker(), x, y)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_compile()
        _reject_weights(kwargs)
        arrays = x
        x, y = self._prepare_data(x, y)
        # After `_prepare_data`: a model built from the data has its batch
        # norm layers only from then on.
        self._warn_single_example_batches(arrays, kwargs.get("batch_size"))
        validation_data = kwargs.get("validation_data")
        if isinstance(validation_data, (tuple, list)):
            kwargs["validation_data"] = (
                *self._prepare_data(*validation_data[:2]),
                *validation_data[2:],
            )
        elif validation_data is not None:
            kwargs["validation_data"] = self._prepare_data(validation_data, None)[0]
        callbacks = list(kwargs.get("callbacks") or [])
        for callback in callbacks:
            self._resolve_monitor_mode(callback)
        if self.stop_on_divergence and not any(
            isinstance(callback, StopOnDivergence) for callback in callbacks
        ):
            callbacks.append(StopOnDivergence())
        kwargs["callbacks"] = callbacks
        with _batch_check_errors():
            return super().fit(x, y, *args, **kwargs)

    def _warn_single_example_batches(self, x, batch_size):
        """Batch norm normalises a training batch by its own statistics: a
        batch of one example becomes all zeros (the similarity losses then
        see a constant), so say so when arrays make such a batch."""
        if isinstance(x, EpochBatches):
            x, batch_size = x.x, x.batch_size
        if not hasattr(x, "shape") or not any(
            isinstance(layer, keras.layers.BatchNormalization)
            for layer in self._flatten_layers()
        ):
            return
        batch_size = batch_size or 32  # Keras' default for arrays
        if batch_size == 1 or len(x) % batch_size == 1:
            warnings.warn(
                f"{self.name} has batch normalization, and "
                + ("every batch has" if batch_size == 1 else "the last batch of each epoch has")
                + " one example: batch norm turns it into zeros, so the blocks learn "
                "nothing from it. Use a larger batch size, or drop one example.",
                stacklevel=3,
            )

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_compile()
        _reject_weights(kwargs)
        if not kwargs.get("_use_cached_eval_dataset"):
            x, y = self._prepare_data(x, y)
        with _batch_check_errors():
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        x, _ = self._prepare_data(x, None)
        with _batch_check_errors():
            return super().predict(x, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        _reject_weights(kwargs)
        x, y = self._prepare_data(x, y)
        with _batch_check_errors():
            return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        _reject_weights(kwargs)
        x, y = self._prepare_data(x, y)
        with _batch_check_errors():
            return super().test_on_batch(x, y, *args, **kwargs)

    def predict_on_batch(self, x):
        x, _ = self._prepare_data(x, None)
        return super().predict_on_batch(x)

    def _resolve_monitor_mode(self, callback):
        """Gives a callback that monitors one of the model's metrics in
        `mode="auto"` (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau)
        that metric's direction: Keras' automatic mode knows only the
        metrics given to `compile`, and a LocalModel makes its own."""
        monitor = getattr(callback, "monitor", None)
        if getattr(callback, "mode", None) != "auto" or not isinstance(monitor, str):
            return
        name = monitor.removeprefix("val_")
        if name.endswith("loss"):
            callback.mode = "min"
        elif name.endswith("accuracy"):
            callback.mode = "max"


_NO_SAMPLE_WEIGHTS = (
    "LocalModel does not support sample weights: every block's local loss is a "
    "mean over the batch. Resample the data instead."
)


def _reject_weights(kwargs):
    if kwargs.get("sample_weight") is not None:
        raise ValueError(_NO_SAMPLE_WEIGHTS)
    if kwargs.get("class_weight") is not None:
        raise ValueError(
            "LocalModel does not support class_weight: every block's local loss "
            "(and the similarity losses, which compare pairs of examples) is "
            "unweighted. Balance the classes by resampling the data instead."
        )


@contextlib.contextmanager
def _batch_check_errors():
    """Raises a batch check that failed inside a loader (a `tf.data`
    pipeline, Keras' `PyDataset` queue) as the `ValueError` it was, not as
    the loader's error."""
    try:
        yield
    except Exception as error:
        reraise_batch_check(error)
        raise
