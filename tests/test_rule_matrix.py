"""Every rule builds and takes a training step on every zoo model (tiny
inputs, narrow widths): rules and models compose without per-pair code."""

import keras
import numpy as np
import pytest

from keras_local import rules
from keras_local import zoo

# Narrow versions of every builder, on inputs just big enough for its pools.
MODELS = {
    "mlp": dict(units=16, input_shape=(8, 8, 1)),
    "vgg8b": dict(width=1 / 32, fc_units=16, input_shape=(16, 16, 1)),
    "vgg11b": dict(width=1 / 32, fc_units=16, input_shape=(16, 16, 3)),
    "mostafa_mlp": dict(units=16, input_shape=(8, 8, 1)),
    "mostafa_cnn5": dict(width=1 / 16, fc_units=16, input_shape=(8, 8, 3)),
    "mostafa_cnn10": dict(width=1 / 32, input_shape=(32, 32, 3)),
}


def test_the_matrix_covers_every_model():
    assert sorted(MODELS) == zoo.names()


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("rule", rules.names())
def test_every_rule_steps_on_every_model(rule, model_name):
    model = zoo.get(model_name)(rule=rule, num_classes=4, **MODELS[model_name])
    # Eager: one step on a tiny model is faster than compiling it.
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8), run_eagerly=True)
    x = np.random.default_rng(0).normal(size=(4, *MODELS[model_name]["input_shape"])).astype("float32")
    y = np.array([0, 1, 2, 3])
    before = [np.array(v) for v in model.trainable_variables]
    # Two steps: zero-initialised local classifiers pass no error to their
    # block until their first update.
    model.train_on_batch(x, y)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and 0.0 <= logs["accuracy"] <= 1.0
    changed = sum(not np.allclose(np.array(v), b) for v, b in zip(model.trainable_variables, before))
    assert changed > len(before) // 2, f"{changed} of {len(before)} variables moved"
    assert model.predict(x, verbose=0).shape == (4, 4)
