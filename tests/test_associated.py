"""Associated learning (Kao & Chen 2021): the losses against a hand
computation, which parameters each loss trains (both published variants),
prediction as equation 7, components from the builder's groups, and saving."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_local import rules
from keras_local import zoo
from keras_local.layers import DenseBlock
from keras_local.model import LocalModel
from keras_local.rules.associated import LOG_EPSILON
from tests.conftest import gradients

NUM_CLASSES = 4
CODE_UNITS = 6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def al_model(detach_targets=True, groups=None, widths=(7, 5), seed=0):
    """Dense ELU blocks without batch norm, every weight random (the
    zero-free weights make every term of the hand computation count)."""
    blocks = [
        DenseBlock(units, activation="elu", batch_norm=False, name=f"block{i}")
        for i, units in enumerate(widths, start=1)
    ]
    rule = rules.get(
        "associated", code_units=CODE_UNITS, bridge_multiplier=2, detach_targets=detach_targets
    )
    model = LocalModel(blocks, NUM_CLASSES, rule=rule, input_shape=(3,), groups=groups)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(scale=0.7, size=variable.shape).astype("float32"))
    model.compile(keras.optimizers.SGD(0.1))
    return model


def batch(n=8, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (np.arange(n) % NUM_CLASSES).astype("int32")
    return x, y


def dense_np(layer, x, activation=None):
    """A `Dense` or `ScaledDense` applied in numpy, from its weights."""
    multiplier = getattr(layer, "lr_multiplier", 1.0)
    kernel = np.asarray(layer.kernel) * multiplier
    bias = np.asarray(layer.bias) * multiplier
    out = x @ kernel + bias
    return out if activation is None else activation(out)


def block_np(block, x):
    return elu(dense_np(block.kernel_layer, x))


def bridge_np(component, s):
    hidden, code = [l for l in component.bridge.layers if isinstance(l, keras.layers.Dense)]
    return dense_np(code, dense_np(hidden, s, sigmoid), sigmoid)


def test_losses_equal_a_hand_computation():
    model = al_model()
    x, y = batch()
    first, second = model.objectives
    s1 = block_np(model.hidden_blocks[0], x)
    s2 = block_np(model.hidden_blocks[1], s1)
    t0 = np.eye(NUM_CLASSES)[y]
    t1 = dense_np(first.encoder, t0, sigmoid)
    t2 = dense_np(second.encoder, t1, sigmoid)
    expected = {
        "block1_forward_loss": np.mean((bridge_np(first, s1) - t1) ** 2),
        "block1_inverse_loss": np.mean((dense_np(first.decoder, t1, sigmoid) - t0) ** 2),
        "block2_forward_loss": np.mean((bridge_np(second, s2) - t2) ** 2),
        "block2_inverse_loss": np.mean((dense_np(second.decoder, t2, sigmoid) - t1) ** 2),
    }
    _, results = model.local_objective(x, y)
    for index, result in enumerate(results, start=1):
        for part in ("forward", "inverse"):
            np.testing.assert_allclose(
                float(result[f"{part}_loss"]), expected[f"block{index}_{part}_loss"], rtol=1e-5
            )
        np.testing.assert_allclose(
            float(result["loss"]),
            expected[f"block{index}_forward_loss"] + expected[f"block{index}_inverse_loss"],
            rtol=1e-5,
        )


def test_prediction_is_equation_7():
    model = al_model()
    x, _ = batch()
    first, second = model.objectives
    s2 = block_np(model.hidden_blocks[1], block_np(model.hidden_blocks[0], x))
    # y0 = h1(h2(b2(f2(f1(x))))); the model's logits are its logarithm.
    decoded = dense_np(first.decoder, dense_np(second.decoder, bridge_np(second, s2), sigmoid), sigmoid)
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(x)), np.log(decoded + LOG_EPSILON), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(
        np.argmax(ops.convert_to_numpy(model.predict(x, verbose=0)), axis=1),
        np.argmax(decoded, axis=1),
    )


def test_a_middle_component_answers_through_the_lower_decoders():
    model = al_model()
    x, _ = batch()
    first = model.objectives[0]
    features, outputs = model.hidden_blocks[0](x)
    decoded = dense_np(first.decoder, bridge_np(first, block_np(model.hidden_blocks[0], x)), sigmoid)
    np.testing.assert_allclose(
        ops.convert_to_numpy(first.predict(features, outputs)),
        np.log(decoded + LOG_EPSILON),
        rtol=1e-5,
        atol=1e-6,
    )


def reference_losses(model, x, labels, detach_targets):
    """Component i's forward and inverse loss as functions of the variables,
    written from the paper's equations with the layers (not the objective)."""
    first, second = model.objectives
    t0 = ops.one_hot(labels, NUM_CLASSES)

    def code(component, lower):
        return component.encoder(ops.stop_gradient(lower))

    def target(code_value):
        return ops.stop_gradient(code_value) if detach_targets else code_value

    def forward1():
        s1 = model.hidden_blocks[0](x)[1]
        return ops.mean(ops.square(first.bridge(s1) - target(code(first, t0))))

    def inverse1():
        return ops.mean(ops.square(first.decoder(code(first, t0)) - t0))

    s1 = ops.stop_gradient(model.hidden_blocks[0](x)[1])

    def forward2():
        s2 = model.hidden_blocks[1](s1)[1]
        return ops.mean(ops.square(second.bridge(s2) - target(code(second, code(first, t0)))))

    def inverse2():
        t1 = ops.stop_gradient(code(first, t0))
        return ops.mean(ops.square(second.decoder(code(second, t1)) - t1))

    return {1: (forward1, inverse1), 2: (forward2, inverse2)}


@pytest.mark.backend
@pytest.mark.parametrize("detach_targets", [True, False])
def test_each_loss_trains_only_its_parameters(detach_targets):
    model = al_model(detach_targets=detach_targets)
    x, y = batch()
    grads, _, _ = model.compute_gradients(x, ops.convert_to_tensor(y))
    got = {id(v): np.asarray(g) for v, g in zip(model.trainable_variables, grads)}
    losses = reference_losses(model, x, ops.convert_to_tensor(y), detach_targets)
    for index, (block, component) in enumerate(zip(model.hidden_blocks, model.objectives), 1):
        forward, inverse = losses[index]
        owned = {
            "block": block.trainable_variables,
            "bridge": component.bridge.trainable_variables,
            "encoder": component.encoder.trainable_variables,
            "decoder": component.decoder.trainable_variables,
        }
        for part, variables in owned.items():
            from_forward = gradients(forward, variables)
            from_inverse = gradients(inverse, variables)
            for variable, f, i in zip(variables, from_forward, from_inverse):
                np.testing.assert_allclose(
                    got[id(variable)], f + i, rtol=1e-4, atol=1e-6, err_msg=variable.path
                )
            forward_reaches = any(np.abs(g).max() > 0 for g in from_forward)
            inverse_reaches = any(np.abs(g).max() > 0 for g in from_inverse)
            # Which loss trains what: f and b by the forward loss only, h by
            # the inverse loss only, g by the inverse loss, and by the forward
            # loss too when the targets are not detached.
            assert forward_reaches == (part in ("block", "bridge") or (
                part == "encoder" and not detach_targets
            )), (index, part)
            assert inverse_reaches == (part in ("encoder", "decoder")), (index, part)


@pytest.mark.backend
def test_components_follow_the_builders_groups():
    # Three blocks in two components: the first component is blocks 1-2, so
    # block 1 learns from component 1's bridge through block 2, and nothing
    # of component 2 reaches blocks 1-2.
    model = al_model(groups=[2, 1], widths=(7, 5, 6))
    assert model.objectives[0] is None
    assert [o.name for o in model.objectives[1:]] == ["block2_objective", "block3_objective"]
    assert model.trained_groups() == [[0, 1], [2]]
    x, y = batch()
    y = ops.convert_to_tensor(y)
    grads, _, _ = model.compute_gradients(x, y)
    got = {id(v): np.asarray(g) for v, g in zip(model.trainable_variables, grads)}
    component = model.objectives[1]

    def component1_forward():
        s = model.hidden_blocks[1](model.hidden_blocks[0](x)[1])[1]
        code = ops.stop_gradient(component.encoder(ops.one_hot(y, NUM_CLASSES)))
        return ops.mean(ops.square(component.bridge(s) - code))

    variables = model.hidden_blocks[0].trainable_variables
    for variable, expected in zip(variables, gradients(component1_forward, variables)):
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(got[id(variable)], expected, rtol=1e-4, atol=1e-6)


def test_inference_parameters_are_the_papers_effective_ones():
    model = al_model()
    first, second = model.objectives
    # f1, f2, the last bridge, h2 and h1 (section 2.4); not g1, g2, b1.
    expected = (3 * 7 + 7) + (7 * 5 + 5)
    expected += (5 * 12 + 12) + (12 * CODE_UNITS + CODE_UNITS)
    expected += (CODE_UNITS * CODE_UNITS + CODE_UNITS) + (CODE_UNITS * NUM_CLASSES + NUM_CLASSES)
    assert model.count_inference_params() == expected


def test_the_autoencoder_moves_at_twice_the_rate_under_adam():
    model = al_model()
    model.compile(keras.optimizers.Adam(1e-3))
    x, y = batch()
    decoder, bridge_code = model.objectives[0].decoder, model.objectives[0].bridge.layers[-1]
    before = [np.asarray(decoder.effective_kernel()), np.asarray(bridge_code.kernel)]
    model.train_on_batch(x, y)
    after = [np.asarray(decoder.effective_kernel()), np.asarray(bridge_code.kernel)]
    # Adam's first step moves a weight by lr * g / (|g| + epsilon): lr for
    # every weight whose gradient is not tiny, so 2e-3 for the decoder's
    # effective weights and 1e-3 for the bridge's.
    for moved, rate in ((after[0] - before[0], 2e-3), (after[1] - before[1], 1e-3)):
        np.testing.assert_allclose(np.max(np.abs(moved)), rate, rtol=1e-3)
        np.testing.assert_allclose(np.median(np.abs(moved)), rate, rtol=1e-2)


def test_save_and_load_keep_predictions(tmp_path):
    model = al_model(detach_targets=False)
    x, y = batch()
    model.train_on_batch(x, y)
    path = tmp_path / "al.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.rule == model.rule
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), rtol=1e-6
    )


def test_bad_parameters_are_reported():
    with pytest.raises(ValueError, match="code_units"):
        rules.get("associated", code_units=0)
    with pytest.raises(ValueError, match="detach_targets"):
        rules.get("associated", detach_targets="yes")
    with pytest.raises(ValueError, match="groups"):
        LocalModel([DenseBlock(4), DenseBlock(4)], 3, rule="associated", groups=[1, 2])


@pytest.mark.slow
def test_al_mlp_learns_fashion_mnist_within_two_points_of_backprop(fashion_mnist):
    # The paper's MLP (1024, 1024, 5120, 1024, 1024): 2 AL components with
    # a 5120-1024 bridge and 1024-wide codes, against backprop on the same
    # layers; one epoch each on the full training set, full test set.
    (x, y), (xt, yt) = fashion_mnist
    accuracy = {}
    for rule in ("associated", "backprop"):
        keras.utils.set_random_seed(1)
        model = zoo.al_mlp(rule=rule, input_shape=(28, 28, 1), learning_rate=5e-4)
        model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        accuracy[rule] = model.evaluate(xt, yt, batch_size=1000, verbose=0, return_dict=True)[
            "accuracy"
        ]
    assert accuracy["backprop"] >= 0.80, accuracy
    assert accuracy["associated"] >= accuracy["backprop"] - 0.02, accuracy


def test_analysis_reads_the_decoded_output():
    from keras_local import analysis

    model = al_model()
    x, _ = batch()
    np.testing.assert_allclose(
        analysis.layer_activations(model, x, "output"),
        ops.convert_to_numpy(model(x)),
        rtol=1e-5,
        atol=1e-6,
    )
