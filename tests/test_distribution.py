"""One SGD step on two host devices equals the step on one device.

Each backend runs `tests/distributed_step.py` in a process of its own (the
number of devices is fixed when the framework starts), whatever backend this
process runs, so the tests carry no `backend` mark and run once.

- TensorFlow, `MirroredStrategy` over two logical CPUs, compiled with XLA
  (which the model then applies per replica): every replica computes its
  batch statistics (BatchNorm, the similarity matrix) on its half of the
  batch, as PyTorch's DDP does. Reference: the mean of each half's gradients
  on one device, applied by hand.
- JAX, `keras.distribution.DataParallel` over two CPU devices: the step runs
  on the global batch. Reference: the whole batch's gradients on one device.

Both agree to float rounding (about 3e-8; the bound is 1e-5) after a step
that moves some weight by more than 1e-3. Before the loss was divided by the
number of replicas, TensorFlow's step moved the weights twice as far.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = ["predsim", "backprop", "feedback-alignment", "direct-feedback-alignment"]
BACKENDS = ["tensorflow", "jax"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Each installed backend's report; both processes run at once."""
    out = tmp_path_factory.mktemp("distribution")
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    script = os.path.join(ROOT, "tests", "distributed_step.py")
    processes = {
        backend: subprocess.Popen(
            [sys.executable, script, backend, str(out / f"{backend}.json"), *RULES],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for backend in BACKENDS
        if importlib.util.find_spec(backend) is not None
    }
    logs = {backend: process.communicate()[0] for backend, process in processes.items()}
    results = {}
    for backend, process in processes.items():
        assert process.returncode == 0, logs[backend][-3000:]
        with open(out / f"{backend}.json") as f:
            results[backend] = json.load(f)
    return results


def report(reports, backend):
    if backend not in reports:
        pytest.skip(f"{backend} is not installed")
    return reports[backend]


@pytest.mark.parametrize("rule", RULES)
def test_mirrored_strategy_step_equals_the_mean_of_the_half_batch_steps(reports, rule):
    result = report(reports, "tensorflow")[rule]
    assert result["xla_per_replica"]  # compiled with XLA, per replica
    assert result["moved"] > 1e-3
    assert result["diff"] < 1e-5
    # Batch statistics are the replicas' own: one device's step on the
    # whole batch is far from the distributed one.
    assert result["full_batch_diff"] > 100 * result["diff"] + 1e-5


@pytest.mark.parametrize("rule", RULES)
def test_data_parallel_step_equals_the_single_device_step(reports, rule):
    result = report(reports, "jax")[rule]
    assert result["devices"] == 2  # the weights live on both devices
    assert result["moved"] > 1e-3
    assert result["diff"] < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_distributed_model_evaluates(reports, backend):
    loss = report(reports, backend)[RULES[0]]["eval_loss"]
    # A 5-class cross-entropy plus the local losses: near ln 5 = 1.6 at the start.
    assert 0.1 < loss < 10
