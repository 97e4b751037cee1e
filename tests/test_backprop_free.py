"""pred-bpf, sim-bpf, predsim-bpf: the update of each block against the
analytic formula of Nøkland & Eidnes (2019) section 3.3 and the reference
code (`--bio`): no weight transpose is used inside a block's heads."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local import rules
from keras_local.layers import DenseBlock
from keras_local.model import LocalModel
from keras_local.ops import similarity_matrix
from tests.conftest import gradients
from tests.conftest import random_batch
from tests.conftest import tiny_conv_model

pytestmark = pytest.mark.backend

rng = np.random.default_rng(1)


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def heads_with_trained_decoder(rule="pred-bpf", num_classes=4, width=6):
    """A dense block's bpf heads, with a non-zero decoder (it starts at zero)."""
    model = LocalModel([DenseBlock(width, name="block1")], num_classes, rule=rule, input_shape=(3,))
    heads = model.objectives[0]
    if heads.decoder is not None:
        heads.decoder.kernel.assign(rng.normal(size=heads.decoder.kernel.shape).astype("float32"))
        heads.decoder.bias.assign(rng.normal(size=heads.decoder.bias.shape).astype("float32"))
    return heads


def test_settings_follow_the_published_recipes():
    assert rules.get("predsim-bpf").beta == 0.01
    for name, activation in [("pred-bpf", "relu"), ("sim-bpf", "leaky_relu"), ("predsim-bpf", "leaky_relu")]:
        rule = rules.get(name)
        assert rule.target_dim == 128 and rule.default_activation == activation
    assert rules.get("predsim-bpf").output_loss_weight == pytest.approx(0.99)
    heads = heads_with_trained_decoder()
    assert heads.projection.shape == (4, 128) and not heads.projection.trainable
    # P ~ U(+-1/sqrt(K)), PyTorch's default for Linear(K, 128).
    assert np.abs(numpy(heads.projection)).max() <= 0.5
    fresh = LocalModel([DenseBlock(6, name="block1")], 4, rule="pred-bpf", input_shape=(3,)).objectives[0]
    assert np.all(numpy(fresh.decoder.kernel) == 0) and np.all(numpy(fresh.decoder.bias) == 0)


def test_pred_bpf_update_equals_the_analytic_formula():
    heads = heads_with_trained_decoder("pred-bpf")
    h = keras.Variable(rng.normal(size=(8, 6)).astype("float32"), name="h")
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    W, b, B = (numpy(v) for v in (heads.decoder.kernel, heads.decoder.bias, heads.decoder.feedback_kernel))
    P = numpy(heads.projection)

    result = heads(h, h, y)
    z = numpy(h) @ W + b
    t = (P[y] > 0).astype("float32")
    bce = np.mean(np.logaddexp(0, z) - t * z)
    np.testing.assert_allclose(numpy(result["pred_loss"]), bce, rtol=1e-5)

    dh, dW, db = gradients(lambda: heads(h, h, y)["loss"], [h, heads.decoder.kernel, heads.decoder.bias])
    g = (sigmoid(z) - t) / t.size  # dBCE/dz, mean over N x 128
    np.testing.assert_allclose(dh, g @ B.T, rtol=1e-4, atol=1e-7)  # through B, not W^T
    np.testing.assert_allclose(dW, numpy(h).T @ g, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(db, g.sum(0), rtol=1e-4, atol=1e-7)
    assert not np.allclose(dh, g @ W.T, atol=1e-5)


def test_sim_bpf_compares_the_activation_with_the_codes_similarity():
    heads = heads_with_trained_decoder("sim-bpf")
    assert heads.decoder is None and heads.trainable_weights == []  # no learned head
    h = keras.Variable(rng.normal(size=(8, 6)).astype("float32"), name="h")
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    P = numpy(heads.projection)

    def numpy_similarity(a):
        a = a - a.mean(1, keepdims=True)
        a = a / (1e-8 + np.linalg.norm(a, axis=1, keepdims=True))
        return np.clip(a @ a.T, -1, 1)

    expected = np.mean((numpy_similarity(numpy(h)) - numpy_similarity(P[y])) ** 2)
    np.testing.assert_allclose(numpy(heads(h, h, y)["sim_loss"]), expected, rtol=1e-5)
    # The gradient is that of the similarity loss alone: nothing but the
    # (weightless) similarity computation is differentiated.
    (dh,) = gradients(lambda: heads(h, h, y)["loss"], [h])
    target = numpy(similarity_matrix(ops.convert_to_tensor(P[y])))
    (reference,) = gradients(lambda: ops.mean(ops.square(ops.subtract(similarity_matrix(h), target))), [h])
    np.testing.assert_allclose(dh, reference, rtol=1e-4, atol=1e-7)


def test_sim_bpf_pools_conv_maps_like_the_pred_head():
    model = tiny_conv_model(rule=rules.get("sim-bpf", dim_in_decoder=16))
    heads = model.objectives[1]  # block2: 4x4x6 features -> pooled to <= 16
    assert heads.pooling.pool_size != (1, 1)


def test_decoded_class_scores_pick_the_class_whose_code_was_predicted():
    heads = heads_with_trained_decoder("pred-bpf")
    codes = numpy(heads.class_codes())  # (4, 128)
    # Make the decoder output +-5 logits matching class c's code exactly.
    heads.decoder.kernel.assign(np.zeros(heads.decoder.kernel.shape, "float32"))
    y = np.array([2, 0, 3, 1])
    bits = 10.0 * codes[y] - 5.0
    logits = numpy(ops.matmul(ops.convert_to_tensor(bits), ops.transpose(heads.class_codes())))
    assert list(logits.argmax(1)) == list(y)
    # And through the head: a bias equal to class 2's code answers class 2.
    heads.decoder.bias.assign((10.0 * codes[2] - 5.0).astype("float32"))
    result = heads(ops.zeros((3, 6)), ops.zeros((3, 6)), np.array([0, 1, 2]))
    assert list(numpy(result["logits"]).argmax(1)) == [2, 2, 2]


@pytest.mark.parametrize("rule", ["pred-bpf", "sim-bpf", "predsim-bpf"])
def test_no_gradient_crosses_a_bpf_block_and_p_gets_none(rule):
    model = tiny_conv_model(rule=rule)
    x, y = random_batch()
    assert all(
        not v.trainable for o in model.objectives for v in o.weights if v.name in ("projection", "feedback_kernel")
    )
    grads, _, _ = model.compute_gradients(x, y)
    summed = gradients(lambda: model.local_objective(x, y, training=True)[0], model.trainable_variables)
    for variable, got, expected in zip(model.trainable_variables, grads, summed):
        np.testing.assert_allclose(numpy(got), expected, rtol=1e-4, atol=1e-6, err_msg=variable.path)
