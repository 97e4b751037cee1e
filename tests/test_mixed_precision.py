"""Mixed precision: every rule trains under `mixed_bfloat16` and
`mixed_float16`, with float32 local losses, similarity matrices and logits
(the blocks compute in 16 bits), and `mixed_float16`'s loss scaling gives
the update of full precision.

Every test resets the global dtype policy to float32 (the other tests of
the worker assume it)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local import rules
from keras_local.layers import ConvBlock
from keras_local.layers import DenseBlock
from keras_local.model import LocalModel
from keras_local.ops import gradient_surrogate
from keras_local.ops import label_similarity
from keras_local.ops import prediction_loss
from keras_local.ops import similarity_loss
from keras_local.ops import similarity_matrix
from tests.conftest import gradients
from tests.conftest import random_batch
from tests.test_similarity import numpy_similarity

pytestmark = pytest.mark.backend

POLICIES = ["mixed_bfloat16", "mixed_float16"]
#: Rounding of the 16-bit forward pass, relative: bfloat16 keeps 8 bits of
#: mantissa (float16 11), so a few roundings on the way stay under this.
LOSS_RTOL = 5e-2


@pytest.fixture(autouse=True)
def float32_afterwards():
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def make_model(rule):
    """A conv block (pooled) and a dense block: every kind of stage, as few
    distinct ops as possible (on JAX each is compiled once per dtype)."""
    blocks = [
        ConvBlock(4, pool_size=2, activation="leaky_relu", name="block1"),
        DenseBlock(16, activation="leaky_relu", name="block2"),
    ]
    model = LocalModel(blocks, 5, rule=rule, input_shape=(8, 8, 3))
    # Eager: one step on a tiny model is faster than compiling it. SGD: on
    # JAX, Adam's update would add a dozen compiled ops per variable shape.
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    return model


def stage_numbers(results):
    """Every loss and logit of a `local_objective`'s results, by name."""
    return {
        f"{stage}/{key}": value
        for stage, result in enumerate(results)
        for key, value in result.items()
        if key.endswith("loss") or key == "logits"
    }


_REFERENCES = {}


def float32_reference(rule):
    """`(weights, numbers, predictions)` of a float32-policy model of `rule`
    on the test batch; cached, the policies compare against the same one."""
    if rule not in _REFERENCES:
        keras.mixed_precision.set_global_policy("float32")
        model = make_model(rule)
        x, y = random_batch()
        weights = model.get_weights()
        predictions = model.predict(x, verbose=0)
        _, results = model.local_objective(x, ops.convert_to_tensor(y), training=True)
        numbers = {k: ops.convert_to_numpy(v) for k, v in stage_numbers(results).items()}
        _REFERENCES[rule] = (weights, numbers, predictions)
    return _REFERENCES[rule]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("rule", rules.names())
def test_every_rule_trains_with_float32_losses_and_logits(rule, policy):
    weights, reference, reference_predictions = float32_reference(rule)
    keras.mixed_precision.set_global_policy(policy)
    model = make_model(rule)
    model.set_weights(weights)
    assert model.hidden_blocks[0].compute_dtype == policy.removeprefix("mixed_")
    x, y = random_batch()

    predictions = model.predict(x, verbose=0)
    assert predictions.dtype == np.float32
    np.testing.assert_allclose(predictions, reference_predictions, rtol=LOSS_RTOL, atol=2e-2)

    # In training mode (batch statistics), as the steps below: on JAX
    # every distinct op is compiled, and these are the steps' own.
    _, results = model.local_objective(x, ops.convert_to_tensor(y), training=True)
    numbers = stage_numbers(results)
    assert numbers.keys() == reference.keys()
    for name, value in numbers.items():
        assert keras.backend.standardize_dtype(value.dtype) == "float32", name
        # The same weights give the float32 numbers, up to 16-bit rounding.
        np.testing.assert_allclose(
            ops.convert_to_numpy(value), reference[name], rtol=LOSS_RTOL, atol=2e-2,
            err_msg=name,
        )

    before = [np.array(v) for v in model.trainable_variables]
    # Two steps: zero-initialised local classifiers pass no error to their
    # block until their first update.
    for _ in range(2):
        logs = model.train_on_batch(x, y, return_dict=True)
    assert all(np.isfinite(value) for value in logs.values()), logs
    moved = [not np.allclose(np.array(v), b) for v, b in zip(model.trainable_variables, before)]
    assert sum(moved) > len(moved) // 2, f"{sum(moved)} of {len(moved)} variables moved"
    # Every block learns (its first variable is its kernel).
    for block in model.hidden_blocks:
        kernel = block.trainable_variables[0]
        index = [id(v) for v in model.trainable_variables].index(id(kernel))
        assert moved[index], f"{block.name} did not learn under {rule}"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_similarities_and_losses_of_16_bit_inputs_are_float32(dtype):
    rng = np.random.default_rng(0)
    features = ops.cast(rng.normal(size=(6, 5, 5, 8)), dtype)
    labels = np.array([0, 1, 2, 0, 1, 2])
    # The reference sees the same (rounded) 16-bit values, in float64.
    exact = ops.convert_to_numpy(ops.cast(features, "float32"))

    similarity = similarity_matrix(features)
    assert keras.backend.standardize_dtype(similarity.dtype) == "float32"
    np.testing.assert_allclose(ops.convert_to_numpy(similarity), numpy_similarity(exact), atol=1e-5)

    target = label_similarity(labels, 3)
    assert keras.backend.standardize_dtype(target.dtype) == "float32"
    same = labels[:, None] == labels[None, :]
    np.testing.assert_allclose(ops.convert_to_numpy(target), np.where(same, 1.0, -0.5), atol=1e-6)

    loss = similarity_loss(ops.cast(similarity, dtype), labels, 3)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    rounded = ops.convert_to_numpy(ops.cast(ops.cast(similarity, dtype), "float32"))
    expected = np.mean((rounded - np.where(same, 1.0, -0.5)) ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)

    logits = ops.cast(rng.normal(size=(6, 3)) * 4, dtype)
    loss = prediction_loss(logits, labels)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    z = ops.convert_to_numpy(ops.cast(logits, "float32")).astype(np.float64)
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(float(loss), -log_softmax[np.arange(6), labels].mean(), rtol=1e-5)


def test_gradient_surrogate_sends_a_float32_signal_to_a_16_bit_input():
    # The direct feedback of DFA and the targets of rec-LRA: a float32 error
    # injected at a bfloat16 activation.
    variable = keras.Variable(np.ones((3, 4)), dtype="float32")
    signal = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")

    def surrogate():
        activation = ops.cast(variable, "bfloat16") * 2.0
        value = gradient_surrogate(activation, signal)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        return value

    assert float(surrogate()) == 0.0
    (grad,) = gradients(surrogate, [variable])
    rounded = ops.convert_to_numpy(ops.cast(ops.cast(signal, "bfloat16"), "float32"))
    np.testing.assert_allclose(grad, 2.0 * rounded, rtol=1e-2)


def test_loss_scaling_gives_the_float32_update():
    # SGD: the update is the gradient itself, so it shows whether the step
    # differentiated the scaled loss and the optimizer unscaled it. predsim:
    # local losses and the output cross-entropy, both scaled.
    rule = "predsim"
    keras.mixed_precision.set_global_policy("float32")
    reference = make_model(rule)
    weights = reference.get_weights()
    x, y = random_batch()
    reference.train_on_batch(x, y)
    expected = np.concatenate([
        (np.array(v) - w0).ravel()
        for v, w0 in zip(reference.trainable_variables, _trainable(reference, weights))
    ])

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = make_model(rule)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    model.set_weights(weights)
    start = _trainable(model, weights)
    model.train_on_batch(x, y)
    # The step's scaled gradients were finite: not skipped, scale kept.
    assert float(model.optimizer.dynamic_scale) == 2.0**15
    actual = np.concatenate([
        (np.array(v) - w0).ravel() for v, w0 in zip(model.trainable_variables, start)
    ])
    cosine = actual @ expected / (np.linalg.norm(actual) * np.linalg.norm(expected))
    assert cosine > 0.99
    np.testing.assert_allclose(np.linalg.norm(actual), np.linalg.norm(expected), rtol=2e-2)

    # The differentiated loss is `optimizer.scale_loss(loss)`: with a scale
    # of 0 nothing moves. (A compiled step would keep the real scale_loss.)
    model.set_weights(weights)
    model.optimizer.scale_loss = lambda loss: loss * 0.0
    model.make_train_function(force=True)
    model.train_on_batch(x, y)
    for variable, value in zip(model.trainable_variables, start):
        np.testing.assert_array_equal(np.array(variable), value)


def _trainable(model, weights):
    """The values in `weights` (`model.get_weights()` order) of the model's
    trainable variables."""
    index = {id(v): i for i, v in enumerate(model.weights)}
    return [weights[index[id(v)]] for v in model.trainable_variables]
