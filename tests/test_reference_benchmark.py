"""benchmarks/reference.py: the IDX files it writes for the reference code,
the wrapper that cuts the reference's data loaders, and its report. (The
reference code itself and torchvision are not here; the benchmark records
what it measured with them.)"""

import argparse
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_local import data
from tests.conftest import benchmark_module


@pytest.fixture(scope="module")
def reference():
    return benchmark_module("reference.py")


def test_the_idx_files_hold_the_data_set_keras_local_reads(reference, tmp_path):
    """Read back with keras_local's own IDX reader, they are the data set."""
    reference.write_idx_files(str(tmp_path))
    for name in os.listdir(tmp_path):  # keras_local reads them gzipped
        with gzip.open(tmp_path / (name + ".gz"), "wb") as packed:
            packed.write((tmp_path / name).read_bytes())
    (x, y), (xt, yt) = data._read_fashion_mnist_dir(str(tmp_path))
    (want_x, want_y), (want_xt, want_yt) = data.load("fashion_mnist", normalize=False)
    np.testing.assert_array_equal(x, want_x[..., 0])
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(xt, want_xt[..., 0])
    np.testing.assert_array_equal(yt, want_yt)


SCRIPT = """
import sys
import torch
from torch.utils.data import DataLoader, TensorDataset
class Split(TensorDataset):
    def __init__(self, train):
        super().__init__(torch.arange(100.0))
        self.train = train
counts = [sum(1 for _ in DataLoader(Split(train), batch_size=10)) for train in (True, False)]
print("batches", *counts, "argv", *sys.argv[1:])
"""


def test_the_wrapper_cuts_the_training_and_test_loaders(reference, tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KL_TRAIN_BATCHES": "3", "KL_TEST_BATCHES": "1"}
    done = subprocess.run(
        [sys.executable, "-c", reference.CUT_LOADERS, str(script), "--epochs", "1"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )
    assert "batches 3 1 argv --epochs 1" in done.stdout
    env.pop("KL_TRAIN_BATCHES")
    env.pop("KL_TEST_BATCHES")
    done = subprocess.run(
        [sys.executable, "-c", reference.CUT_LOADERS, str(script)],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )
    assert "batches 10 10" in done.stdout


def test_the_report_gives_medians_and_ratios_to_the_reference(reference, tmp_path):
    rows = []
    for system, walls in (("reference", [30, 36, 40]), ("tensorflow", [20, 24, 99]),
                          ("jax", [27, 30, 33])):  # fmt: skip
        for round_, wall in enumerate(walls):
            rows.append({"job": "mlp-epoch", "system": system, "rule": "predsim",
                         "round": round_, "wall_s": wall, "peak_rss_mib": 900.0})  # fmt: skip
    for system, step in (("reference", 8.0), ("tensorflow", 6.0), ("jax", 12.0)):
        for rule, factor in (("predsim", 1.0), ("backprop", 0.4)):
            rows.append({"job": "vgg8b-steps", "system": system, "rule": rule, "round": 0,
                         "startup_s": 20.0, "step_s": step * factor,
                         "peak_rss_mib": 2000.0})  # fmt: skip

    args = argparse.Namespace(output_dir=str(tmp_path), vgg_rules=["predsim", "backprop"],
                              torch_version="2.x", note="nothing")  # fmt: skip
    reference.write(rows, args, {"date": "today", "cpu": "cpu", "cpu_count": 2})
    (report,) = tmp_path.glob("reference-cpu-*.md")
    text = report.read_text()
    assert "| mlp-epoch | predsim | whole process, s | 36.00 | 24.00 | 0.67x | 30.00 | 0.83x |" in text
    assert "| vgg8b-steps | predsim | time per step, s | 8.00 | 6.00 | 0.75x | 12.00 | 1.50x |" in text
    assert "reference 2.50, tensorflow 2.50, jax 2.50" in text
