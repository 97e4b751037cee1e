"""TensorFlow, JAX and PyTorch reach the same weights from the same initial
weights.

Each backend trains the tiny conv model (predsim, no dropout, the same five
batches) in its own process; JAX and PyTorch start from TensorFlow's initial
weights. Tolerances: with SGD every weight agrees to rtol 1e-4 / atol 1e-5
after five steps. With Adam the same holds for every weight but the biases
that feed a BatchNorm: their exact gradient is zero, so each backend's float
noise (about 1e-8) is turned into updates of up to the learning rate by
Adam's normalisation. They, and the BatchNorm moving means they shift, are
compared to 2 * lr * steps (the biases have no effect on the training
outputs, which BatchNorm makes independent of them). A backend that is not
installed (PyTorch is an optional extra) is skipped.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(backend, out, init_dir=None):
    """Runs cross_backend_train.py on `backend` in a fresh process."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
    script = os.path.join(ROOT, "tests", "cross_backend_train.py")
    extra = [] if init_dir is None else [str(init_dir)]
    subprocess.run([sys.executable, script, str(out), *extra], env=env, check=True, cwd=ROOT)


@pytest.fixture(scope="module")
def tensorflow_run(tmp_path_factory):
    """Weights after training on TensorFlow, and the initial weights."""
    out = tmp_path_factory.mktemp("cross_backend")
    train("tensorflow", out)
    return out


@pytest.fixture(scope="module", params=["jax", "torch"])
def other_run(request, tensorflow_run):
    """The backend's name, after it trained from TensorFlow's initial weights."""
    # find_spec, not import: this process runs TensorFlow and needs neither.
    if importlib.util.find_spec(request.param) is None:
        pytest.skip(f"{request.param} is not installed")
    train(request.param, tensorflow_run, init_dir=tensorflow_run)
    return request.param


def noise_driven_under_adam(path):
    """Biases that feed a BatchNorm, and the BatchNorm's moving mean, which
    averages the output those biases shift."""
    if "_heads/" in path or "classifier" in path:
        return False
    return path.endswith(("/conv/bias", "/dense/bias", "/batch_norm/moving_mean"))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_every_backend_reaches_tensorflows_weights(tensorflow_run, other_run, optimizer):
    tf_run = np.load(tensorflow_run / f"tensorflow-{optimizer}.npz")
    other = np.load(tensorflow_run / f"{other_run}-{optimizer}.npz")
    init = np.load(tensorflow_run / f"init-{optimizer}.npz")
    paths = list(tf_run["paths"])
    assert paths == list(other["paths"])
    moved = 0
    for i, path in enumerate(paths):
        a, b, start = tf_run[f"arr_{i}"], other[f"arr_{i}"], init[f"arr_{i}"]
        if optimizer == "adam" and noise_driven_under_adam(path):
            np.testing.assert_allclose(a, b, atol=2 * 1e-3 * 5, err_msg=path)
            continue
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=path)
        moved += not np.allclose(a, start)
    assert moved > len(paths) // 2  # training really changed the weights
