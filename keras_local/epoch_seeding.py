"""Randomness that is a function of the seed and the epoch alone, so that a
run resumed at an epoch boundary trains exactly as the uninterrupted run.

Keras draws the order of the training batches and the state of every
`keras.random.SeedGenerator` (augmentation, dropout) from streams that start
afresh in each process, and `keras.callbacks.BackupAndRestore` saves neither.
A run killed in its second epoch and resumed from the first epoch's backup
would therefore train the second epoch on the first epoch's batch order and
augmentations: a different model from the uninterrupted run's. Here both are
drawn at the start of each epoch from `(seed, epoch)`, which the backup's
epoch number is enough to recreate.

Example:

```python
batches = EpochBatches(x_train, y_train, batch_size=128, seed=1)
model.fit(
    batches,
    epochs=10,
    steps_per_epoch=batches.batches_per_epoch,
    shuffle=False,
    callbacks=[keras.callbacks.BackupAndRestore("backup"), SeedEachEpoch(1, batches)],
)
```
"""

import math

import keras
import numpy as np

from keras_local.optional import tensorflow_left_unimported

# Seed generator states are stored in uint32 on some backends.
_SEED_LIMIT = 2**31 - 1


class _ArrayBatches(keras.utils.PyDataset):
    """Batches of arrays `x`, `y`, each batch of `x` passed through
    `transform` (if given) as it is taken."""

    def __init__(self, x, y, batch_size, transform=None):
        super().__init__()
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples but y has {len(y)}.")
        self.x = x
        self.y = y
        self.batch_size = int(batch_size)
        self.transform = transform

    def _batch(self, chosen):
        """The examples `chosen` (indices or a slice), transformed."""
        x = self.x[chosen]
        return (x if self.transform is None else self.transform(x)), self.y[chosen]


class EpochBatches(_ArrayBatches):
    """Arrays `x`, `y` as an endless stream of batches, epoch after epoch,
    whose order in epoch `e` is a permutation drawn from `(seed, e)`: the
    same in every process. Fit it with
    `steps_per_epoch=batches.batches_per_epoch, shuffle=False`.

    Batch `i` of the stream is batch `i % batches_per_epoch` of epoch
    `first_epoch + i // batches_per_epoch`. The stream is endless because
    Keras opens the next epoch's iterator, and TensorFlow prefetches from
    it, before the next epoch begins: an order chosen at the start of an
    epoch would come too late. `SeedEachEpoch` sets `first_epoch` to the
    epoch `fit` starts at (after a resume, the backup's).

    Args:
        x: NumPy array of inputs, examples on the first axis.
        y: NumPy array of labels, as long as `x`.
        batch_size: examples per batch (the last batch of an epoch may be
            smaller).
        seed: non-negative int the orders are drawn from.
        transform: optional function applied to each batch of `x`, e.g.
            `functools.partial(data.normalized, "fashion_mnist")` on the raw
            uint8 pixels, which take a quarter of float32's memory.
    """

    def __init__(self, x, y, batch_size, seed, transform=None):
        super().__init__(x, y, batch_size, transform)
        self.seed = int(seed)
        self.first_epoch = 0
        self._orders = {}

    @property
    def batches_per_epoch(self):
        return math.ceil(len(self.x) / self.batch_size)

    @property
    def num_batches(self):
        return None  # endless

    def order(self, epoch):
        """The order of the examples in epoch `epoch` (0-based)."""
        if epoch not in self._orders:
            # Two epochs at most are read at once (the end of one, the
            # prefetched start of the next).
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            rng = np.random.default_rng([self.seed, epoch])
            self._orders[epoch] = rng.permutation(len(self.x))
        return self._orders[epoch]

    def __getitem__(self, index):
        epoch, position = divmod(index, self.batches_per_epoch)
        order = self.order(self.first_epoch + epoch)
        chosen = order[position * self.batch_size : (position + 1) * self.batch_size]
        return self._batch(chosen)


class OrderedBatches(_ArrayBatches):
    """Arrays `x`, `y` batch by batch in their order, once: what `evaluate`
    and `validation_data` make of arrays, with each batch of `x` passed
    through `transform` (so that the arrays can stay raw uint8 pixels).

    Args:
        x: NumPy array of inputs, examples on the first axis.
        y: NumPy array of labels, as long as `x`.
        batch_size: examples per batch (the last may be smaller).
        transform: optional function applied to each batch of `x`.
    """

    @property
    def num_batches(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} of {self.num_batches}")
        return self._batch(slice(index * self.batch_size, (index + 1) * self.batch_size))


class SeedEachEpoch(keras.callbacks.Callback):
    """Before the first step of each epoch, sets the model's seed
    generators and the global ones (`set_random_seed`) from
    `(seed, epoch)`; at the start of `fit`, tells `batches` the epoch it
    starts at.

    Put it after `BackupAndRestore` in the callback list: the first epoch it
    sees is then the one the backup resumes from.

    Args:
        seed: non-negative int (`fresh_seed()` for an unseeded run).
        batches: optional `EpochBatches` fed to the same `fit`.
    """

    def __init__(self, seed, batches=None):
        super().__init__()
        self.seed = int(seed)
        self.batches = batches
        self._started = False

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        # Keras opens the data's iterator only after the first epoch begins.
        if self.batches is not None and not self._started:
            self.batches.first_epoch = epoch
        self._started = True
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        # Seeded at the first step, not at the epoch's start: torch's
        # DataLoader draws from the global generator when it opens an
        # iterator, which a resumed run does in an epoch where the
        # uninterrupted run does not.
        if batch == 0:
            self._seed(self._epoch)

    def _seed(self, epoch):
        generators = seed_generators(self.model)
        # One fresh starting seed per generator (in the model's layer order,
        # the same in every process that builds the same model); counters
        # start at 0, as a new generator's do. And the global generators
        # too: on torch, a layer built without a seed (`Dropout()`) draws
        # from torch's global one.
        rng = np.random.default_rng([self.seed, epoch, len(generators)])
        starts = rng.integers(1, _SEED_LIMIT, size=len(generators) + 1)
        set_random_seed(int(starts[-1]))
        for generator, start in zip(generators, starts[:-1], strict=True):
            dtype = keras.backend.standardize_dtype(generator.state.dtype)
            generator.state.assign(np.array([start, 0]).astype(dtype))


def set_random_seed(seed):
    """`keras.utils.set_random_seed` (Python's, NumPy's and Keras' global
    generators, and torch's on its backend), without importing TensorFlow
    only to seed it on the JAX and torch backends
    (`optional.tensorflow_left_unimported`).

    Args:
        seed: non-negative int.
    """
    with tensorflow_left_unimported():
        keras.utils.set_random_seed(seed)


def fresh_seed():
    """A random seed (from the operating system's entropy), for a run given
    none."""
    return int(np.random.SeedSequence().entropy % _SEED_LIMIT)


def seed_generators(model):
    """Every `SeedGenerator` of `model`'s layers, in layer order, each once."""
    found = []
    seen = set()
    for layer in model._flatten_layers(include_self=True):
        # `_seed_generators` is where `Layer` tracks them (what its
        # `variables` property reads); no public accessor lists them.
        for generator in getattr(layer, "_seed_generators", ()):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found
