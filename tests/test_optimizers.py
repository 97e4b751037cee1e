"""`TorchAdam` and `TorchSGD` compute torch.optim's updates (issue 14): against
an independent NumPy transcription of PyTorch's formulas, against
torch.optim itself where torch imports, with learning-rate changes, schedules,
callbacks, loss scaling, `fit` of a LocalModel, and a save/load round trip."""

import sys

import keras
import numpy as np
import pytest
from keras import ops

import keras_local
from keras_local.layers import TorchBatchNormalization
from keras_local.optimizers import TorchAdam
from keras_local.optimizers import TorchSGD
from keras_local.schedules import StepDecay
from tests.conftest import gradients
from tests.test_gradients import feeds_batch_norm

pytestmark = pytest.mark.backend


def import_torch(monkeypatch):
    """torch, or a skip. `torch.optim`'s `step` imports `torch._dynamo`,
    which loads Triton, and Triton's native library crashes (a segfault) a
    process where Keras' TensorFlow or JAX backend came first: hide Triton there
    (these comparisons compile nothing)."""
    torch = pytest.importorskip("torch")
    if keras.backend.backend() != "torch" and "triton" not in sys.modules:
        monkeypatch.setitem(sys.modules, "triton", None)
    return torch


class NumpyAdam:
    """torch.optim.Adam (single-tensor path) in float64, written from its
    documented algorithm: coupled L2, bias-corrected moments, eps added to
    sqrt(v_hat)."""

    def __init__(self, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0, amsgrad=False):
        self.b1, self.b2, self.eps, self.wd, self.amsgrad = beta_1, beta_2, epsilon, weight_decay, amsgrad
        self.t, self.m, self.v, self.v_max = 0, 0.0, 0.0, 0.0

    def step(self, p, g, lr):
        p, g = np.float64(p), np.float64(g)
        self.t += 1
        g = g + self.wd * p
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        v = self.v
        if self.amsgrad:
            self.v_max = np.maximum(self.v_max, self.v)
            v = self.v_max
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = v / (1 - self.b2**self.t)
        return p - lr * m_hat / (np.sqrt(v_hat) + self.eps)


class NumpySGD:
    """torch.optim.SGD in float64: coupled L2; the buffer starts at the first
    gradient, then buf = momentum * buf + (1 - dampening) * g."""

    def __init__(self, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.mu, self.damp, self.nesterov, self.wd = momentum, dampening, nesterov, weight_decay
        self.buf = None

    def step(self, p, g, lr):
        p, g = np.float64(p), np.float64(g)
        g = g + self.wd * p
        if self.mu:
            self.buf = g if self.buf is None else self.mu * self.buf + (1 - self.damp) * g
            g = g + self.mu * self.buf if self.nesterov else self.buf
        return p - lr * g


RNG = np.random.default_rng(14)
P0 = RNG.normal(size=(4, 6)).astype("float32")
#: Five gradients with magnitudes from 1e-9 (below Adam's eps) to 1 and
#: changing signs.
GRADS = [
    (RNG.normal(size=P0.shape) * 10.0 ** RNG.integers(-9, 1, size=P0.shape)).astype("float32")
    for _ in range(5)
]
#: The rate changes after the second and the fourth step.
LRS = [0.1, 0.1, 0.025, 0.025, 0.00625]
ADAM_CASES = [
    {},
    {"weight_decay": 0.1},
    {"amsgrad": True},
    {"weight_decay": 0.1, "amsgrad": True},
    {"beta_1": 0.0, "beta_2": 0.99, "epsilon": 1e-6},
]
SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.5},
    {"momentum": 0.9, "nesterov": True},
    {"weight_decay": 0.01},
    {"momentum": 0.8, "weight_decay": 0.01, "nesterov": True},
]


def keras_steps(optimizer, steps, grads=GRADS, lrs=LRS):
    variable = keras.Variable(P0)
    for g, lr in zip(grads[:steps], lrs[:steps]):
        optimizer.learning_rate = lr
        optimizer.apply([ops.convert_to_tensor(g)], [variable])
    return ops.convert_to_numpy(variable)


def numpy_steps(reference, steps, grads=GRADS, lrs=LRS):
    p = np.float64(P0)
    for g, lr in zip(grads[:steps], lrs[:steps]):
        p = reference.step(p, g, lr)
    return p


def torch_steps(torch_optimizer_class, kwargs, steps):
    import torch

    param = torch.nn.Parameter(torch.tensor(P0))
    optimizer = torch_optimizer_class([param], lr=LRS[0], foreach=False, **kwargs)
    for g, lr in zip(GRADS[:steps], LRS[:steps]):
        for group in optimizer.param_groups:
            group["lr"] = lr
        param.grad = torch.tensor(g)
        optimizer.step()
    return param.detach().numpy()


def assert_same_steps(got, want):
    """The parameters to float32 rounding, and their change from P0 too
    (to the rounding of the stored parameter, half a float32 spacing: 1.2e-7
    for |p| < 4)."""
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got - P0, want - P0, rtol=2e-5, atol=2.5e-7)


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_steps_equal_pytorchs_formulas(kwargs, steps):
    got = keras_steps(TorchAdam(**kwargs), steps)
    assert_same_steps(got, numpy_steps(NumpyAdam(**kwargs), steps))


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_steps_equal_pytorchs_formulas(kwargs, steps):
    got = keras_steps(TorchSGD(**kwargs), steps)
    assert_same_steps(got, numpy_steps(NumpySGD(**kwargs), steps))


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_equals_torch_optim_adam(kwargs, monkeypatch):
    torch = import_torch(monkeypatch)
    torch_kwargs = {"eps": 1e-8, **kwargs}
    if "beta_1" in kwargs:
        torch_kwargs = {"betas": (kwargs["beta_1"], kwargs["beta_2"]), "eps": kwargs["epsilon"]}
    want = torch_steps(torch.optim.Adam, torch_kwargs, 5)
    np.testing.assert_allclose(keras_steps(TorchAdam(**kwargs), 5), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_equals_torch_optim_sgd(kwargs, monkeypatch):
    torch = import_torch(monkeypatch)
    want = torch_steps(torch.optim.SGD, kwargs, 5)
    np.testing.assert_allclose(keras_steps(TorchSGD(**kwargs), 5), want, rtol=1e-6, atol=1e-7)


def test_keras_adam_differs_where_gradients_are_near_epsilon():
    """Keras' Adam adds eps before the bias correction: at t = 1 its eps is
    1e-8 / sqrt(0.001) = 3.2e-7, so a gradient of 1e-8 moves a weight by
    about 0.03 * lr there and by lr / 2 in PyTorch."""
    g = np.full(P0.shape, 1e-8, "float32")
    g[0] = 0.5  # large gradients: both move by lr
    want = numpy_steps(NumpyAdam(), 1, [g], [0.1])
    ours = keras_steps(TorchAdam(0.1), 1, [g], [0.1])
    theirs = keras_steps(keras.optimizers.Adam(0.1, epsilon=1e-8), 1, [g], [0.1])
    np.testing.assert_allclose(ours - P0, want - P0, rtol=1e-5)
    np.testing.assert_allclose((P0 - ours)[1:], 0.05, rtol=1e-5)
    np.testing.assert_allclose((P0 - theirs)[0], 0.1, rtol=1e-5)
    np.testing.assert_allclose((P0 - theirs)[1:], 0.1 * 0.0307, rtol=1e-2)


def test_keras_sgd_differs_after_a_learning_rate_change():
    want = numpy_steps(NumpySGD(momentum=0.9), 3)
    theirs = keras_steps(keras.optimizers.SGD(momentum=0.9), 3)
    np.testing.assert_allclose(keras_steps(TorchSGD(momentum=0.9), 3), want, rtol=1e-6, atol=1e-7)
    assert np.max(np.abs(theirs - want)) > 1e-3


def test_a_learning_rate_schedule_is_evaluated_at_each_step():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1, 3], [0.1, 0.025, 0.00625])
    variable = keras.Variable(P0)
    optimizer = TorchSGD(schedule, momentum=0.9)
    for g in GRADS:
        optimizer.apply([ops.convert_to_tensor(g)], [variable])
    lrs = [0.1, 0.1, 0.025, 0.025, 0.00625]  # at iterations 0..4
    want = numpy_steps(NumpySGD(momentum=0.9), 5, lrs=lrs)
    np.testing.assert_allclose(ops.convert_to_numpy(variable), want, rtol=1e-6, atol=1e-7)


def test_the_base_class_decoupled_decay_stays_off():
    for optimizer in (TorchAdam(weight_decay=0.1), TorchSGD(weight_decay=0.1)):
        assert optimizer.weight_decay is None
        assert optimizer.coupled_weight_decay == 0.1
        assert optimizer.get_config()["weight_decay"] == 0.1


@pytest.mark.parametrize("make", [TorchAdam, TorchSGD])
def test_excluded_variables_get_no_weight_decay(make):
    decayed, excluded = keras.Variable(P0, name="kernel"), keras.Variable(P0, name="bias")
    optimizer = make(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.apply([ops.convert_to_tensor(GRADS[0])] * 2, [decayed, excluded])
    reference = NumpyAdam if make is TorchAdam else NumpySGD
    want = reference(weight_decay=0.5).step(P0, GRADS[0], 0.1), reference().step(P0, GRADS[0], 0.1)
    for got, expected in zip((decayed, excluded), want):
        np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TorchAdam(-1e-3), "learning_rate"),
        (lambda: TorchAdam(epsilon=-1.0), "epsilon"),
        (lambda: TorchAdam(beta_1=1.0), r"beta_1` must be in \[0, 1\)"),
        (lambda: TorchAdam(beta_2=-0.1), "beta_2"),
        (lambda: TorchAdam(weight_decay=-0.1), "weight_decay"),
        (lambda: TorchSGD(-0.1), "learning_rate"),
        (lambda: TorchSGD(momentum=-0.5), "momentum"),
        (lambda: TorchSGD(weight_decay=-1.0), "weight_decay"),
        (lambda: TorchSGD(nesterov=True), "Nesterov momentum requires a momentum"),
        (lambda: TorchSGD(momentum=0.9, dampening=0.1, nesterov=True), "zero dampening"),
    ],
)
def test_invalid_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "optimizer",
    [
        TorchAdam(2e-3, beta_1=0.8, beta_2=0.99, epsilon=1e-6, weight_decay=0.01, amsgrad=True, clipnorm=1.0),
        TorchSGD(0.05, momentum=0.9, dampening=0.1, weight_decay=1e-4, name="sgd"),
    ],
    ids=["adam", "sgd"],
)
def test_the_config_round_trips(optimizer):
    config = optimizer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(restored) is type(optimizer)
    assert restored.get_config() == config
    assert keras.saving.get_registered_name(type(optimizer)) == f"keras_local>{type(optimizer).__name__}"


#: XLA on TensorFlow and JAX. On torch `jit_compile=True` is `torch.compile`
#: (tens of seconds for these models; the LocalModel's own torch step does
#: not use it).
JIT = keras.backend.backend() != "torch"


def linear_model(optimizer):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mean_squared_error", jit_compile=JIT)
    return model


def test_fit_with_a_step_decay_callback_follows_pytorch():
    """Full-batch `fit` of a linear model under MSE (its gradient in closed
    form), the rate quartered after each epoch by the package's callback."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    model = linear_model(TorchSGD(0.1, momentum=0.9, dampening=0.2, weight_decay=0.01))
    w, b = (np.float64(v) for v in model.get_weights())
    references = NumpySGD(0.9, 0.2, weight_decay=0.01), NumpySGD(0.9, 0.2, weight_decay=0.01)
    for lr in (0.1, 0.025, 0.00625):
        error = x @ w + b - y
        w = references[0].step(w, 2 * x.T @ error / len(x), lr)
        b = references[1].step(b, 2 * error.sum(0) / len(x), lr)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
              callbacks=[StepDecay(0.1, milestones=[1, 2])])
    got_w, got_b = model.get_weights()
    np.testing.assert_allclose(got_w, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, b, rtol=1e-5, atol=1e-6)
    assert float(ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.00625)


def apply_scaled(optimizer, variable, gradient):
    """`optimizer.apply`; on JAX `stateless_apply`, as `fit` calls it (the
    stateful `apply` of a `LossScaleOptimizer` leaks a tracer from its
    `cond` there, whatever the inner optimizer)."""
    gradient = ops.convert_to_tensor(gradient)
    if keras.backend.backend() != "jax":
        optimizer.apply([gradient], [variable])
        return
    (value,), optimizer_values = optimizer.stateless_apply(
        [v.value for v in optimizer.variables], [gradient], [variable.value]
    )
    variable.assign(value)
    for v, new in zip(optimizer.variables, optimizer_values, strict=True):
        v.assign(new)


def test_loss_scaling_skips_a_non_finite_step_without_counting_it():
    variable = keras.Variable(P0)
    optimizer = keras.optimizers.LossScaleOptimizer(TorchAdam(0.1))
    optimizer.build([variable])
    apply_scaled(optimizer, variable, np.full(P0.shape, np.inf, "float32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(variable), P0)
    assert int(ops.convert_to_numpy(optimizer.inner_optimizer.iterations)) == 0
    scale = float(ops.convert_to_numpy(optimizer.dynamic_scale))
    for g in GRADS[:3]:  # the gradients of a scaled loss
        apply_scaled(optimizer, variable, g * np.float32(scale))
    want = numpy_steps(NumpyAdam(), 3, lrs=[0.1] * 3)
    np.testing.assert_allclose(ops.convert_to_numpy(variable), want, rtol=1e-6, atol=1e-7)


def local_model(optimizer, layers=3):
    keras.utils.set_random_seed(3)
    model = keras_local.zoo.mlp(layers, rule="predsim", width=0.0625, input_shape=(28, 28, 1))
    model.compile(optimizer=optimizer, jit_compile=True)
    return model


@pytest.mark.parametrize(
    "make, reference",
    [(lambda: TorchAdam(5e-4), NumpyAdam), (lambda: TorchSGD(0.05, momentum=0.9), lambda: NumpySGD(0.9))],
    ids=["adam", "sgd"],
)
def test_fit_of_a_local_model_takes_pytorchs_steps(make, reference):
    """Two `fit` steps (jit-compiled) of the zoo's MLP equal two NumPy steps
    on the gradients of its summed local objective."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 28, 28, 1)).astype("float32")
    y = (np.arange(32) % 10).astype("int32")
    model, twin = local_model(make()), local_model(make())
    twin.set_weights(model.get_weights())
    variables = twin.trainable_variables
    references = [reference() for _ in variables]
    lr = float(ops.convert_to_numpy(model.optimizer.learning_rate))
    for batch in (slice(0, 16), slice(16, 32)):
        grads = gradients(lambda b=batch: twin.local_objective(x[b], y[b], training=True)[0], variables)
        for v, g, r in zip(variables, grads, references):
            v.assign(r.step(ops.convert_to_numpy(v), np.float32(g), lr))
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 2
    adam = isinstance(model.optimizer, TorchAdam)
    for a, b in zip(model.trainable_variables, variables):
        if adam and feeds_batch_norm(a):
            continue  # a gradient of exactly 0 plus float noise, which Adam scales to lr
        # Adam's steps are about lr wherever |g| >> eps, so float noise in a
        # small gradient moves a weight by a fraction of lr: atol lr / 10.
        atol = 5e-5 if adam else 1e-6
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-5, atol=atol, err_msg=a.path)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_fit_keeps_float32_state(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = local_model(TorchAdam(5e-4), layers=1)
        x = np.random.default_rng(0).normal(size=(32, 28, 28, 1)).astype("float32")
        y = (np.arange(32) % 10).astype("int32")
        before = [ops.convert_to_numpy(v) for v in model.trainable_variables]
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    inner = model.optimizer
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        inner = model.optimizer.inner_optimizer
    assert isinstance(inner, TorchAdam)
    assert int(ops.convert_to_numpy(inner.iterations)) == 2
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    assert {v.dtype for v in inner._exp_avgs + inner._exp_avg_sqs} == {"float32"}
    moved = [np.abs(ops.convert_to_numpy(v) - b).max() for v, b in zip(model.trainable_variables, before)]
    # Every kernel moves by about 2 * lr = 1e-3 in two Adam steps.
    assert 5e-4 < max(moved) <= 1e-3 * 1.01


def small_model(optimizer):
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8),
            TorchBatchNormalization(name="norm"),
            keras.layers.Dense(2),
        ]
    )
    model.compile(optimizer=optimizer, loss="mean_squared_error")
    return model


@pytest.mark.parametrize(
    "optimizer",
    [lambda: TorchAdam(1e-2, weight_decay=0.01, amsgrad=True), lambda: TorchSGD(0.1, momentum=0.9, nesterov=True)],
    ids=["adam", "sgd"],
)
def test_a_saved_model_keeps_optimizer_and_batch_norm(optimizer, tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    model = small_model(optimizer())
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert isinstance(loaded.get_layer("norm"), TorchBatchNormalization)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    assert int(ops.convert_to_numpy(loaded.optimizer.iterations)) == 2
    # Training on continues identically: the state (iterations, moments) came back.
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7)
