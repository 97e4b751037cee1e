"""`TorchBatchNormalization` (issue 14): Keras' batch norm, except that the
moving variance averages the unbiased batch variance, as PyTorch's does."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local.layers import TorchBatchNormalization
from tests.test_optimizers import JIT
from tests.test_optimizers import import_torch

pytestmark = pytest.mark.backend

RNG = np.random.default_rng(7)
#: A Dense-style (N, C) and a conv (N, H, W, C) batch, with channel means
#: and scales far from 0 and 1.
DENSE = (RNG.normal(size=(6, 4)) * [1, 2, 3, 4] + [0, -1, 5, 2]).astype("float32")
CONV = (RNG.normal(size=(3, 4, 5, 2)) * [0.5, 3] + [1, -2]).astype("float32")


def numbers(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("x, axes", [(DENSE, (0,)), (CONV, (0, 1, 2))], ids=["dense", "conv"])
def test_one_training_step_averages_the_unbiased_variance(x, axes):
    layer = TorchBatchNormalization(synchronized=False)
    layer(x, training=True)
    x64 = np.float64(x)
    np.testing.assert_allclose(numbers(layer.moving_mean), 0.1 * x64.mean(axes), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        numbers(layer.moving_variance), 0.9 + 0.1 * x64.var(axes, ddof=1), rtol=1e-6
    )


@pytest.mark.parametrize("x", [DENSE, CONV], ids=["dense", "conv"])
def test_training_output_and_mean_are_keras_own(x):
    ours = TorchBatchNormalization(momentum=0.8, epsilon=1e-3, gamma_initializer="random_normal", beta_initializer="random_normal")
    keras_bn = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-3)
    ours.build(x.shape)
    keras_bn.build(x.shape)
    keras_bn.set_weights(ours.get_weights())
    got, want = ours(x, training=True), keras_bn(x, training=True)
    np.testing.assert_allclose(numbers(got), numbers(want), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(numbers(ours.moving_mean), numbers(keras_bn.moving_mean), rtol=1e-6)
    # Keras' moving variance has the biased variance: n / (n - 1) apart.
    n = x.size // x.shape[-1]
    np.testing.assert_allclose(
        (numbers(ours.moving_variance) - 0.8) / (numbers(keras_bn.moving_variance) - 0.8), n / (n - 1), rtol=1e-5
    )
    # Inference normalises with the moving statistics, as Keras does.
    keras_bn.moving_variance.assign(ours.moving_variance)
    np.testing.assert_allclose(numbers(ours(x)), numbers(keras_bn(x)), rtol=1e-6, atol=1e-6)


def test_a_jit_compiled_fit_with_an_unknown_batch_size():
    """The count n comes from the traced shape (TensorFlow's graph has a
    batch dimension of None)."""
    model = keras.Sequential([keras.Input(CONV.shape[1:]), TorchBatchNormalization(name="norm")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mean_squared_error", jit_compile=JIT)
    model.fit(CONV, np.zeros_like(CONV), batch_size=3, epochs=1, verbose=0)
    var = np.float64(CONV).var((0, 1, 2), ddof=1)
    np.testing.assert_allclose(numbers(model.get_layer("norm").moving_variance), 0.9 + 0.1 * var, rtol=1e-6)


def test_a_single_value_per_channel_keeps_variance_zero():
    """n = 1: no NaN or infinity (PyTorch refuses such a batch in training)."""
    layer = TorchBatchNormalization()
    out = layer(DENSE[:1], training=True)
    np.testing.assert_array_equal(numbers(out), np.zeros((1, 4), "float32"))
    np.testing.assert_allclose(numbers(layer.moving_variance), np.full(4, 0.9), rtol=1e-7)


def test_a_mask_counts_only_the_unmasked_positions():
    x = RNG.normal(size=(2, 5, 3)).astype("float32") * 2 + 1
    mask = np.array([[True, True, True, False, False], [True, True, True, True, False]])
    layer = TorchBatchNormalization()
    layer(x, training=True, mask=mask)
    var = np.float64(x)[mask].var(0, ddof=1)  # the 7 unmasked positions
    # Keras' masked moments divide by the count plus 1e-7.
    np.testing.assert_allclose(numbers(layer.moving_variance), 0.9 + 0.1 * var, rtol=1e-5)


def test_inference_after_training_equals_torch_batchnorm2d(monkeypatch):
    torch = import_torch(monkeypatch)
    gamma, beta = RNG.normal(size=2).astype("float32"), RNG.normal(size=2).astype("float32")
    ours = TorchBatchNormalization()  # momentum 0.9 = PyTorch's 0.1, epsilon 1e-5
    ours.build(CONV.shape)
    ours.set_weights([gamma, beta, np.zeros(2, "float32"), np.ones(2, "float32")])
    theirs = torch.nn.BatchNorm2d(2, momentum=0.1, eps=1e-5)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(gamma))
        theirs.bias.copy_(torch.tensor(beta))
    nchw = lambda x: torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # noqa: E731
    theirs.train()
    for step in range(3):
        x = (CONV * (1 + step) - step).astype("float32")
        np.testing.assert_allclose(
            numbers(ours(x, training=True)),
            theirs(nchw(x)).detach().numpy().transpose(0, 2, 3, 1),
            rtol=1e-5,
            atol=1e-5,
        )
    np.testing.assert_allclose(numbers(ours.moving_mean), theirs.running_mean.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(numbers(ours.moving_variance), theirs.running_var.numpy(), rtol=1e-6)
    theirs.eval()
    x = RNG.normal(size=CONV.shape).astype("float32")
    np.testing.assert_allclose(
        numbers(ours(x)), theirs(nchw(x)).detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6
    )


def test_mixed_precision_keeps_float32_statistics():
    layer = TorchBatchNormalization(dtype="mixed_float16")
    out = layer(CONV, training=True)
    assert ops.convert_to_numpy(out).dtype == np.float16
    assert layer.moving_variance.dtype == "float32"
    var = np.float64(CONV.astype("float16")).var((0, 1, 2), ddof=1)
    np.testing.assert_allclose(numbers(layer.moving_variance), 0.9 + 0.1 * var, rtol=1e-5)


def test_the_config_round_trips_and_unsupported_options_are_refused():
    layer = TorchBatchNormalization(axis=1, momentum=0.95, epsilon=1e-4, center=False, name="bn")
    config = layer.get_config()
    assert (config["momentum"], config["epsilon"], config["axis"]) == (0.95, 1e-4, 1)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is TorchBatchNormalization
    assert restored.get_config() == config
    assert keras.saving.get_registered_name(TorchBatchNormalization) == "keras_local>TorchBatchNormalization"
    assert TorchBatchNormalization().get_config()["epsilon"] == 1e-5  # PyTorch's defaults
    with pytest.raises(ValueError, match="renorm"):
        TorchBatchNormalization(renorm=True)
    with pytest.raises(ValueError, match="synchronized"):
        TorchBatchNormalization(synchronized=True)
