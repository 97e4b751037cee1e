"""TensorFlow and JAX reach the same weights from the same initial weights.

Both backends train the tiny conv model (predsim, no dropout, the same five
batches) in their own process. Tolerances: with SGD every weight agrees to
rtol 1e-4 / atol 1e-5 after five steps. With Adam the same holds for every
weight but the biases that feed a BatchNorm: their exact gradient is zero, so
each backend's float noise (about 1e-8) is turned into updates of up to the
learning rate by Adam's normalisation. They, and the BatchNorm moving means
they shift, are compared to 2 * lr * steps (the biases have no effect on the
training outputs, which BatchNorm makes independent of them).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Weights after training on TensorFlow, then on JAX from the same start."""
    out = tmp_path_factory.mktemp("cross_backend")
    for backend, extra in (("tensorflow", []), ("jax", [str(out)])):
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
        script = os.path.join(ROOT, "tests", "cross_backend_train.py")
        subprocess.run([sys.executable, script, str(out), *extra], env=env, check=True, cwd=ROOT)
    return out


def noise_driven_under_adam(path):
    """Biases that feed a BatchNorm, and the BatchNorm's moving mean, which
    averages the output those biases shift."""
    if "_heads/" in path or "classifier" in path:
        return False
    return path.endswith(("/conv/bias", "/dense/bias", "/batch_norm/moving_mean"))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_tensorflow_and_jax_reach_the_same_weights(runs, optimizer):
    tf_run = np.load(runs / f"tensorflow-{optimizer}.npz")
    jax_run = np.load(runs / f"jax-{optimizer}.npz")
    init = np.load(runs / f"init-{optimizer}.npz")
    paths = list(tf_run["paths"])
    assert paths == list(jax_run["paths"])
    moved = 0
    for i, path in enumerate(paths):
        a, b, start = tf_run[f"arr_{i}"], jax_run[f"arr_{i}"], init[f"arr_{i}"]
        if optimizer == "adam" and noise_driven_under_adam(path):
            np.testing.assert_allclose(a, b, atol=2 * 1e-3 * 5, err_msg=path)
            continue
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=path)
        moved += not np.allclose(a, start)
    assert moved > len(paths) // 2  # training really changed the weights
