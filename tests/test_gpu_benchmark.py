"""benchmarks/gpu.py: its peak table, FLOP count, report, and (on JAX) one
measured configuration of a tiny VGG8B."""

import keras
import pytest

from tests.conftest import benchmark_module


@pytest.fixture(scope="module")
def gpu():
    return benchmark_module("gpu.py")


def test_peaks_by_device_kind_and_input_shapes(gpu):
    assert gpu.peak_flops("NVIDIA H200", "bf16") == 989e12
    assert gpu.peak_flops("NVIDIA H100 80GB HBM3", "float32") == 67e12
    assert gpu.peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert gpu.peak_flops("cpu", "bf16") is None
    assert gpu.parse_shape("32x32x3") == (32, 32, 3)
    for bad in ("32x", "ax3", "0x4"):
        with pytest.raises(Exception, match="32x32x3"):
            gpu.parse_shape(bad)


def _row(**kw):
    row = {
        "model": "vgg8b", "rule": "predsim", "precision": "bf16", "median_step_ms": 10.0,
        "p10_step_ms": 9.0, "p90_step_ms": 11.0, "examples_per_s": 12800.0, "flops_per_step": 2e12,
        "flops_source": "xla-lowered", "peak_flops": 989e12, "mfu": 2e12 / 0.01 / 989e12,
        "compile_s": 20.0, "peak_memory_mib": 3000.0, "memory_kind": "device peak",
    }  # fmt: skip
    return {**row, **kw}


def test_report_has_table_failures_contention_and_search(gpu):
    at = {"load_average": [0.1, 0.2, 0.3], "cpu_count": 16, "gpu_processes": []}
    record = {
        "command": "python benchmarks/gpu.py",
        "machine": {"date": "2026-01-01 00:00 UTC", "device": "NVIDIA H200", "platform": "gpu",
                    "device_count": 1, "backend": "jax", "keras": "3", "jax": "0.1", "cpu": "x",
                    "cpu_count": 16},
        "settings": {"models": ["vgg8b"], "rules": ["predsim", "backprop"], "batch_size": 128,
                     "input_shape": (32, 32, 3), "width": 1.0, "steps": 30, "warmup": 3},
        "steps": [_row(), _row(rule="backprop", error="...\nRESOURCE_EXHAUSTED: out of memory")],
        "contention": {"before": at, "after": at, "note": ""},
        "search": {"model": "vgg8b", "rule": "predsim", "precision": "float32", "width": 1.0,
                   "train_examples": 10000, "batch_size": 128, "wall_s": 60.0,
                   "trials": [{"trial_id": "0", "status": "COMPLETED", "score": 0.8,
                               "hyperparameters": {"learning_rate": 1e-3, "dropout": 0.1, "beta": 0.99}}]},
    }  # fmt: skip
    text = gpu.markdown(record)
    assert "| vgg8b | predsim | bf16 | 10.00 | 9.00-11.00 | 12,800 | 2000.00 | 20.2% | 20.0 | 3,000 |" in text
    assert "| vgg8b | backprop | bf16 | failed: RESOURCE_EXHAUSTED: out of memory |" in text
    assert "989 TFLOP/s for bf16" in text and "other GPU processes: none" in text
    assert "| 0 | COMPLETED | 0.8000 | 1.00e-03 | 0.10 | 0.9900 |" in text
    assert "ran on a CPU" not in text
    record["machine"]["platform"] = "cpu"
    assert "This ran on a CPU, not a GPU" in gpu.markdown(record)


def test_counted_flops_of_a_matmul_and_a_convolution(gpu):
    jax = pytest.importorskip("jax")
    import numpy as np

    def step(a, b, image, kernel):
        conv = jax.lax.conv_general_dilated(image, kernel, (1, 1), "VALID")
        return a @ b, conv

    args = (np.ones((4, 8)), np.ones((8, 3)), np.ones((2, 5, 6, 6)), np.ones((7, 5, 3, 3)))
    # 4x3 outputs of 8 multiply-adds; 2x7x4x4 outputs of 5x3x3; 2 FLOPs each.
    assert gpu.jaxpr_flops(jax.make_jaxpr(step)(*args).jaxpr) == 2 * (4 * 3 * 8 + 2 * 7 * 4 * 4 * 45)


@pytest.mark.backend
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the benchmark runs on JAX")
def test_measure_a_tiny_vgg8b_in_bf16(gpu):
    row = gpu.measure(
        "vgg8b", "predsim", "bf16", width=0.0625, batch_size=4, steps=2, warmup=1,
        input_shape=(16, 16, 3),
    )  # fmt: skip
    assert keras.mixed_precision.global_policy().name == "float32"
    assert row["policy"] == "mixed_bfloat16" and row["examples_per_s"] > 0
    assert row["p10_step_ms"] <= row["median_step_ms"] <= row["p90_step_ms"]
    assert row["flops_per_step"] > 0 and row["peak_memory_mib"] > 0
    assert row["mfu"] is None or 0 < row["mfu"] < 10
    assert row["final_loss"] == row["final_loss"]  # not NaN
