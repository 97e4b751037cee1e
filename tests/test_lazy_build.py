"""Models built from data behave as models built with `input_shape`.

Users write `zoo.vgg11b(rule="predsim").fit(ds)` and then `predict`: the model
is built by its first batch, inside whatever Keras does first. Every zoo
builder with every rule (the trimmed matrix of `test_rule_matrix`) walks
fit -> predict -> __call__ -> evaluate -> save -> load -> predict, and must
give what its twin built with `input_shape` gives, from the same seed; a few
walk on through early exit and SavedModel export, and through every input
kind (arrays, `tf.data`, `PyDataset`, a generator).
"""

import os

import keras
import numpy as np
import pytest

from keras_local import early_exit
from keras_local import rules
from keras_local import zoo
from tests.test_rule_matrix import MODELS
from tests.test_rule_matrix import REPEATED_KINDS

NUM_CLASSES = 4
BATCH = 8

#: Every rule on a model of each block kind (dense, conv, residual), and
#: every other model under its own papers' rules or predsim and associated
#: (the rule whose heads are made differently): the full rule x model
#: matrix would take half an hour on 2 cores.
BLOCK_KINDS = ["mlp", "vgg8b", "resnet20"]
MATRIX = [(rule, name) for name in BLOCK_KINDS for rule in rules.names()] + [
    (rule, name)
    for name in sorted(MODELS)
    if name not in BLOCK_KINDS
    for rule in REPEATED_KINDS.get(name, ["predsim", "associated"])
]


def trained(model_name, rule, lazy, data=None, run_eagerly=False):
    """The model built lazily (from the data, by `fit`) or with its input
    shape, seeded and trained on one epoch of two batches by SGD (traced,
    not eager: the compiled path is the one that differed). With one seed
    right before it is made and nothing random between its making and its
    `fit`, both ways draw the same initial weights and dropout masks.
    Returns `(model, x, y)`; `data(x, y)` gives the data `fit` is fed."""
    settings = dict(MODELS[model_name])
    input_shape = settings.pop("input_shape")
    x, y = data_for(input_shape)
    keras.utils.set_random_seed(0)
    model = zoo.get(model_name)(
        rule=rule, num_classes=NUM_CLASSES, input_shape=None if lazy else input_shape, **settings
    )
    # XLA compiles slowly; traced (not eager) is the path that broke.
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False, run_eagerly=run_eagerly)
    assert model.built is not lazy
    inputs, labels = (x, y) if data is None else data(x, y)
    model.fit(inputs, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model, x, y


def data_for(input_shape, n=2 * BATCH, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    y = (np.arange(n) % NUM_CLASSES).astype("int32")
    return x, y


def test_the_matrix_covers_every_rule_and_model():
    assert {rule for rule, _ in MATRIX} == set(rules.names())
    assert {name for _, name in MATRIX} == set(zoo.names())


@pytest.mark.parametrize("rule, model_name", MATRIX)
def test_built_from_data_equals_built_with_input_shape(rule, model_name, tmp_path):
    # Eager steps: the model is built before any step runs, traced or not
    # (`LocalModel._prepare_data`), and eager is 3x faster on tiny models;
    # the traced path is walked below and by `test_traced_walk`.
    lazy, x, y = trained(model_name, rule, lazy=True, run_eagerly=True)
    eager, _, _ = trained(model_name, rule, lazy=False, run_eagerly=True)
    assert lazy.built
    assert lazy.example_shape == MODELS[model_name]["input_shape"]

    expected = eager.predict(x, verbose=0)
    got = lazy.predict(x, verbose=0)
    assert got.shape == (len(x), NUM_CLASSES) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(lazy(x[:3])), expected[:3], rtol=1e-4, atol=1e-5
    )
    logs = lazy.evaluate(x, y, verbose=0, return_dict=True)
    assert logs == pytest.approx(eager.evaluate(x, y, verbose=0, return_dict=True), rel=1e-4, abs=1e-5)

    path = tmp_path / "lazy.keras"
    lazy.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), got, rtol=1e-5, atol=1e-6)
    # Built from data, the batch axis stays open: any batch size predicts.
    assert lazy.predict(x[:1], verbose=0).shape == (1, NUM_CLASSES)


def input_kinds(x, y):
    """The same batches as arrays, a tf.data pipeline, a PyDataset and a
    generator (the kinds `fit` takes)."""

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(x) // BATCH

        def __getitem__(self, i):
            return x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]

    kinds = {
        "arrays": lambda: (x, y),
        "pydataset": lambda: (Batches(), None),
        "generator": lambda: ((b for b in (Batches()[i] for i in range(len(Batches())))), None),
    }
    if keras.backend.backend() in ("tensorflow", "jax"):
        try:
            import tensorflow as tf

            kinds["tf.data"] = lambda: (
                tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH),
                None,
            )
        except ImportError:
            pass
    return kinds


@pytest.mark.backend
@pytest.mark.parametrize("rule", ["predsim", "associated", "backprop"])
def test_traced_walk(rule, tmp_path):
    """The walk on traced (compiled) steps, where building inside a step
    used to fail on TensorFlow."""
    lazy, x, y = trained("vgg8b", rule, lazy=True)
    eager, _, _ = trained("vgg8b", rule, lazy=False)
    expected = eager.predict(x, verbose=0)
    np.testing.assert_allclose(lazy.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(lazy(x[:3])), expected[:3], rtol=1e-4, atol=1e-5
    )
    path = tmp_path / "lazy.keras"
    lazy.save(path)
    np.testing.assert_allclose(
        keras.saving.load_model(path).predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5
    )


@pytest.mark.backend
@pytest.mark.parametrize(
    "model_name, rule",
    [("mlp", "predsim"), ("vgg11b", "predsim"), ("mlp", "associated")],
)
def test_every_input_kind_builds_the_model(model_name, rule):
    eager, x, y = trained(model_name, rule, lazy=False)
    expected = eager.predict(x, verbose=0)
    for kind, make in input_kinds(x, y).items():
        lazy, _, _ = trained(model_name, rule, lazy=True, data=lambda x, y, make=make: make())
        np.testing.assert_allclose(
            lazy.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5, err_msg=kind
        )


@pytest.mark.backend
@pytest.mark.parametrize("rule", ["predsim", "associated", "backprop"])
def test_built_from_data_exits_early_and_exports(rule, tmp_path):
    lazy, x, y = trained("mlp", rule, lazy=True)
    eager, _, _ = trained("mlp", rule, lazy=False)
    for threshold in (0.0, 2.0):  # everyone at the first exit; everyone at the end
        got, got_exit = early_exit.predict_early_exit(lazy, x, threshold=threshold)
        want, want_exit = early_exit.predict_early_exit(eager, x, threshold=threshold)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got_exit, want_exit)
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    from keras_local import export

    directory = os.fspath(tmp_path / "exported")
    export.export_saved_model(lazy, directory)
    served = tf.saved_model.load(directory)
    probabilities = served.signatures["serving_default"](inputs=tf.constant(x))["probabilities"]
    np.testing.assert_allclose(
        probabilities.numpy(), keras.ops.convert_to_numpy(keras.ops.softmax(eager.predict(x, verbose=0))),
        rtol=1e-4, atol=1e-5,
    )
