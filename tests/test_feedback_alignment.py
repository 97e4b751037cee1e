"""Feedback alignment: the layers' identity (value x W + b, input gradient
g B^T, kernel gradient x^T g), fixed matrices that never change, and the
rules built on them (feedback-alignment, direct-feedback-alignment,
random-classifier's feedbacks), on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local import rules
from keras_local.layers import DenseBlock
from keras_local.layers import FeedbackAlignmentConv2D
from keras_local.layers import FeedbackAlignmentDense
from keras_local.model import LocalModel
from keras_local.ops import prediction_loss
from tests.conftest import gradients
from tests.conftest import random_batch
from tests.conftest import tiny_conv_model

pytestmark = pytest.mark.backend

rng = np.random.default_rng(0)


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_dense_value_input_gradient_and_kernel_gradient():
    layer = FeedbackAlignmentDense(5)
    x = keras.Variable(rng.normal(size=(4, 7)).astype("float32"), name="x")
    layer.build((None, 7))
    g = rng.normal(size=(4, 5)).astype("float32")
    W, b, B = numpy(layer.kernel), numpy(layer.bias), numpy(layer.feedback_kernel)
    assert not np.allclose(W, B)

    np.testing.assert_allclose(numpy(layer(x)), numpy(x) @ W + b, rtol=1e-5, atol=1e-6)
    dx, dW, db = gradients(lambda: ops.sum(ops.multiply(layer(x), g)), [x, layer.kernel, layer.bias])
    np.testing.assert_allclose(dx, g @ B.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dW, numpy(x).T @ g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, g.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_conv_value_input_gradient_and_kernel_gradient():
    layer = FeedbackAlignmentConv2D(4, 3, padding="same")
    layer.build((None, 6, 6, 3))
    x = keras.Variable(rng.normal(size=(2, 6, 6, 3)).astype("float32"), name="x")
    g = rng.normal(size=(2, 6, 6, 4)).astype("float32")
    # Independent references: ordinary convolutions with W and with B.
    forward = keras.layers.Conv2D(4, 3, padding="same")
    backward = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    forward.build((None, 6, 6, 3))
    backward.build((None, 6, 6, 3))
    forward.set_weights([numpy(layer.kernel), numpy(layer.bias)])
    backward.set_weights([numpy(layer.feedback_kernel)])

    np.testing.assert_allclose(numpy(layer(x)), numpy(forward(x)), rtol=1e-5, atol=1e-5)
    dx, dW = gradients(lambda: ops.sum(ops.multiply(layer(x), g)), [x, layer.kernel])
    (dx_through_b,) = gradients(lambda: ops.sum(ops.multiply(backward(x), g)), [x])
    dx_through_w, dW_true = gradients(lambda: ops.sum(ops.multiply(forward(x), g)), [x, forward.kernel])
    np.testing.assert_allclose(dx, dx_through_b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(dx, dx_through_w, atol=1e-3)  # not the transpose of W
    np.testing.assert_allclose(dW, dW_true, rtol=1e-4, atol=1e-5)


def fit_a_few_steps(model, steps=3):
    x, y = random_batch()
    for _ in range(steps):
        model.train_on_batch(x, y)


def fixed_and_trained(model, fixed_names):
    fixed = {v.path: numpy(v) for v in model.non_trainable_variables if v.name in fixed_names}
    trained = {v.path: numpy(v) for v in model.trainable_variables}
    return fixed, trained


@pytest.mark.parametrize(
    "rule, fixed_names",
    [
        ("feedback-alignment", {"feedback_kernel"}),
        ("direct-feedback-alignment", {"feedback_matrix"}),
        ("pred-bpf", {"feedback_kernel", "projection"}),
        (rules.get("random-classifier", feedback="scfb"), {"classifier_matrix", "feedback_matrix"}),
    ],
)
def test_fixed_matrices_never_change_while_the_network_learns(rule, fixed_names):
    model = tiny_conv_model(rule=rule)
    fixed, trained = fixed_and_trained(model, fixed_names)
    assert fixed, "the rule made no fixed matrices"
    fit_a_few_steps(model)
    fixed_after, trained_after = fixed_and_trained(model, fixed_names)
    for path, value in fixed.items():
        np.testing.assert_array_equal(fixed_after[path], value, err_msg=path)
    assert any(not np.allclose(trained_after[p], v) for p, v in trained.items())


def test_feedback_alignment_rule_puts_random_feedback_in_every_weighted_layer():
    model = tiny_conv_model(rule="feedback-alignment")
    assert all(block.feedback == "random" for block in model.hidden_blocks)
    kinds = [type(block.kernel_layer).__name__ for block in model.hidden_blocks]
    kinds.append(type(model.output_layer.dense).__name__)
    assert kinds == ["FeedbackAlignmentConv2D"] * 2 + ["FeedbackAlignmentDense"] * 2
    # One segment: the output error reaches the first block.
    grads, _, _ = model.compute_gradients(*random_batch())
    assert np.abs(numpy(grads[0])).max() > 0


def test_feedback_alignment_sends_the_output_error_through_b():
    # y = block1(x); logits = y W2 + b2. Under FA block 1 learns as if the
    # gradient at y were e B2^T (e = dL/dlogits), not e W2^T; W2 and b2 get
    # their true gradients.
    model = LocalModel([DenseBlock(8, name="block1")], 3, rule="feedback-alignment", input_shape=(5,))
    x = rng.normal(size=(6, 5)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    block, dense = model.hidden_blocks[0], model.output_layer.dense
    grads, _, _ = model.compute_gradients(x, y)
    by_variable = {id(v): numpy(g) for v, g in zip(model.trainable_variables, grads)}

    _, h = block(x, training=True)
    logits = numpy(model.output_layer(h))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    error = (p - np.eye(3)[y]) / len(y)
    signal = error @ numpy(dense.feedback_kernel).T
    expected = gradients(
        lambda: ops.sum(ops.multiply(block(x, training=True)[1], signal)), block.trainable_variables
    )
    for variable, reference in zip(block.trainable_variables, expected):
        np.testing.assert_allclose(by_variable[id(variable)], reference, rtol=1e-4, atol=1e-7, err_msg=variable.path)
    np.testing.assert_allclose(by_variable[id(dense.kernel)], numpy(h).T @ error, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(by_variable[id(dense.bias)], error.sum(0), rtol=1e-4, atol=1e-7)
    # With W2^T instead of B2^T the block's gradient would differ.
    wrong = gradients(
        lambda: ops.sum(ops.multiply(block(x, training=True)[1], error @ numpy(dense.kernel).T)),
        [block.kernel_layer.kernel],
    )[0]
    assert not np.allclose(by_variable[id(block.kernel_layer.kernel)], wrong, atol=1e-4)


def test_direct_feedback_sends_the_output_error_through_b_to_every_block():
    model = tiny_conv_model(rule="direct-feedback-alignment")
    x, y = random_batch()
    grads, _, _ = model.compute_gradients(x, y)
    by_variable = {id(v): numpy(g) for v, g in zip(model.trainable_variables, grads)}

    # Independent reference: the forward pass, the output error e, then for
    # each block the gradient of sum(h_i * (e @ B_i)) w.r.t. its variables.
    inputs, outputs = [x], []
    h = x
    for block in model.hidden_blocks:
        _, h = block(h, training=True)
        inputs.append(numpy(h))
        outputs.append(numpy(h))
    logits = numpy(model.output_layer(h))
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    error = (probabilities - np.eye(5)[y]) / len(y)
    for index, (block, objective) in enumerate(zip(model.hidden_blocks, model.objectives)):
        signal = (error @ numpy(objective.feedback_matrix)).reshape(outputs[index].shape)

        def surrogate(block=block, x_in=inputs[index], signal=signal):
            _, out = block(x_in, training=True)
            return ops.sum(ops.multiply(out, signal))

        variables = model.layer_variables(index)
        for variable, expected in zip(variables, gradients(surrogate, variables)):
            np.testing.assert_allclose(
                by_variable[id(variable)], expected, rtol=1e-4, atol=1e-6, err_msg=variable.path
            )
    # The logged loss is the real one: the surrogates add exactly zero.
    total, _ = model.local_objective(x, y, training=False)
    np.testing.assert_allclose(
        numpy(total), numpy(prediction_loss(model(x), y)), rtol=1e-6
    )


@pytest.mark.parametrize("feedback", ["sym", "scfb", "random"])
def test_random_classifier_feedback_matrices(feedback):
    model = tiny_conv_model(rule=rules.get("random-classifier", feedback=feedback))
    x, y = random_batch()
    for objective in model.objectives:
        M = numpy(objective.classifier_matrix)
        width = M.shape[0]
        # Zero mean, std sqrt(2 / (n_in + n_out)), uniform by default.
        std = np.sqrt(2.0 / (width + 5))
        assert np.abs(M).max() <= std * np.sqrt(3) + 1e-6
        assert abs(M.std() - std) < 0.2 * std
        if feedback == "sym":
            assert objective.feedback_matrix is None
            continue
        K = numpy(objective.feedback_matrix)
        agree = np.mean(np.sign(K) == np.sign(M))
        if feedback == "scfb":
            assert agree == 1.0  # sign concordance
            assert not np.allclose(np.abs(K), np.abs(M))  # independent magnitudes
        else:
            assert 0.3 < agree < 0.7  # independent signs

    # The block's output receives the local error through K (M^T for sym).
    _, outputs = model.hidden_blocks[2](model.hidden_blocks[1](model.hidden_blocks[0](x)[1])[1])
    h = keras.Variable(numpy(outputs), name="h")
    objective = model.objectives[2]
    (dh,) = gradients(lambda: objective(h, h, y)["loss"], [h])
    M = numpy(objective.classifier_matrix)
    logits = numpy(h) @ M
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    e_s = (p - np.eye(5)[y]) / len(y)
    K_T = M if feedback == "sym" else numpy(objective.feedback_matrix)
    np.testing.assert_allclose(dh, e_s @ K_T.T, rtol=1e-4, atol=1e-7)


def test_random_classifier_trains_its_classifier_only_when_asked():
    fixed = tiny_conv_model(rule="random-classifier")
    tlc = tiny_conv_model(rule=rules.get("random-classifier", trainable=True))
    assert all(not o.classifier_matrix.trainable for o in fixed.objectives)
    assert all(o.classifier_matrix.trainable for o in tlc.objectives)
    before = [numpy(o.classifier_matrix) for o in tlc.objectives]
    fit_a_few_steps(tlc)
    assert all(not np.allclose(numpy(o.classifier_matrix), b) for o, b in zip(tlc.objectives, before))


def test_random_classifier_reads_the_pooled_output():
    model = tiny_conv_model(rule="random-classifier")
    # block1 pools 8x8 -> 4x4 with 4 channels: 64 inputs to its classifier.
    assert model.objectives[0].classifier_matrix.shape == (4 * 4 * 4, 5)


def test_bad_random_classifier_settings():
    with pytest.raises(ValueError, match="feedback must be one of 'sym', 'scfb', 'random'"):
        rules.get("random-classifier", feedback="transpose")
    with pytest.raises(ValueError, match="distribution"):
        rules.get("random-classifier", distribution="laplace")
