"""keras_local beside the authors' PyTorch code (anokland/local-loss), whole
processes on the same machine, interleaved: wall time and peak memory of one
Fashion-MNIST epoch of the 3x1024 MLP, and VGG8B's time per training step
and start-up.

    git clone https://github.com/anokland/local-loss /path/to/local-loss
    python benchmarks/reference.py --reference /path/to/local-loss \\
        --reference-python /path/to/python-with-torch-and-torchvision

Every measurement is a whole process (`keras-local train` or the reference's
`train.py`), so start-up, data loading and compilation count as a user sees
them; the peak resident set size is the child's own (`wait4`). The systems
run one after the other in each round (reference, TensorFlow, JAX), so a
shared machine's drift hits them alike; the median over rounds is recorded.

- `mlp-epoch`: one epoch of predsim on all 60,000 training images with the
  papers' augmentation, then the test set: the reference's
  `--model mlp --num-layers 3 --dropout 0.025 --nonlin leakyrelu` and
  `keras-local train --model mlp --rule predsim ...` with the same settings.
- `vgg8b-steps`: VGG8B (`--dim-in-decoder 1024 --dropout 0.1`), predsim and
  backprop, run for 2 and for `--steps` training steps of batch 128 with one
  test batch; time per step = the difference of the two runs' wall times
  over the difference of steps (start-up, data and compilation cancel); the
  2-step run's wall time is the start-up. The reference's data loaders are
  cut to those batches by a wrapper (its code is run as it is).

The reference reads the IDX files torchvision expects; they are written from
the Fashion-MNIST copy keras_local finds (`keras_local.data`), so both read
the same images.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from machine import describe  # benchmarks/machine.py, beside this script
from machine import machine
from machine import save_record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
KERAS_LOCAL = [sys.executable, "-m", "keras_local.cli"]

# Runs the reference's train.py with its training loader cut to
# KL_TRAIN_BATCHES batches and its test loader to KL_TEST_BATCHES.
CUT_LOADERS = """
import itertools, os, runpy, sys
import torch.utils.data as data
limits = {True: os.environ.get("KL_TRAIN_BATCHES"), False: os.environ.get("KL_TEST_BATCHES")}
whole = data.DataLoader.__iter__
def cut(self):
    limit = limits[bool(getattr(self.dataset, "train", True))]
    return whole(self) if limit is None else itertools.islice(whole(self), int(limit))
data.DataLoader.__iter__ = cut
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def write_idx_files(directory):
    """Fashion-MNIST as the uncompressed IDX files torchvision reads."""
    import numpy as np

    from keras_local import data

    os.makedirs(directory, exist_ok=True)
    (x, y), (xt, yt) = data.load("fashion_mnist", normalize=False)
    for prefix, images, labels in (("train", x, y), ("t10k", xt, yt)):
        images = images.reshape(len(images), 28, 28).astype(np.uint8)
        with open(os.path.join(directory, f"{prefix}-images-idx3-ubyte"), "wb") as f:
            f.write(np.array([2051, len(images), 28, 28], ">i4").tobytes() + images.tobytes())
        with open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
            f.write(np.array([2049, len(labels)], ">i4").tobytes())
            f.write(labels.astype(np.uint8).tobytes())


def run(command, cwd, env):
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def reference_command(args, work, model, rule, train_batches=None):
    if model == "mlp":
        flags = ["--model", "mlp", "--num-layers", "3", "--dropout", "0.025"]
    else:
        flags = ["--model", "vgg8b", "--dropout", "0.1", "--dim-in-decoder", "1024"]
    # keras_local's predsim defaults to leaky ReLU, as the paper's predsim runs.
    flags += ["--backprop"] if rule == "backprop" else ["--nonlin", "leakyrelu"]
    script = os.path.join(args.reference, "train.py")
    env = dict(os.environ)
    if train_batches is not None:
        env.update(KL_TRAIN_BATCHES=str(train_batches), KL_TEST_BATCHES="1")
    command = [args.reference_python, "-c", CUT_LOADERS, script, "--dataset", "FashionMNIST",
               "--epochs", "1", "--lr", "5e-4", "--save-dir", os.path.join(work, "save"),
               *flags]  # fmt: skip
    return command, os.path.join(work, "run"), env


def keras_local_command(work, backend, model, rule, train_batches=None):
    output = os.path.join(work, f"{backend}-{model}-{rule}-{train_batches}.keras")
    for leftover in (output, output + ".json"):
        if os.path.exists(leftover):
            os.remove(leftover)
    flags = ["--model", model, "--rule", rule, "--dataset", "fashion_mnist", "--epochs", "1",
             "--optimizer", "pytorch-adam", "--pytorch-batch-norm", "--no-layer-report",
             "--quiet", "--output", output]  # fmt: skip
    if model == "mlp":
        flags += ["--dropout", "0.025"]
    else:
        flags += ["--dropout", "0.1"]
        flags += [] if rule == "backprop" else ["--dim-in-decoder", "1024"]
    if train_batches is not None:
        flags += ["--train-examples", str(128 * train_batches), "--test-examples", "128"]
    env = {**os.environ, "KERAS_BACKEND": backend}
    return [*KERAS_LOCAL, "train", *flags], ROOT, env


SYSTEMS = ("reference", "tensorflow", "jax")


def command_for(system, args, work, model, rule, train_batches=None):
    if system == "reference":
        return reference_command(args, work, model, rule, train_batches)
    return keras_local_command(work, system, model, rule, train_batches)


def measure(args, work):
    rows = []
    for round_ in range(args.rounds):
        for system in SYSTEMS:
            result = run(*command_for(system, args, work, "mlp", "predsim"))
            rows.append({"job": "mlp-epoch", "system": system, "rule": "predsim",
                         "round": round_, **result})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    for round_ in range(args.vgg_rounds):
        for rule in args.vgg_rules:
            for system in SYSTEMS:
                short, long = (run(*command_for(system, args, work, "vgg8b", rule, n))
                               for n in (2, args.steps))  # fmt: skip
                rows.append({"job": "vgg8b-steps", "system": system, "rule": rule,
                             "round": round_, "startup_s": short["wall_s"],
                             "step_s": (long["wall_s"] - short["wall_s"]) / (args.steps - 2),
                             "peak_rss_mib": long["peak_rss_mib"]})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows, job, rule, key):
    """`{system: median of key}` over the rounds of `job` with `rule`, for
    the systems that ran it."""
    values = {}
    for row in rows:
        if row["job"] == job and row["rule"] == rule:
            values.setdefault(row["system"], []).append(row[key])
    return {system: statistics.median(v) for system, v in values.items()}


def write(rows, args, info):
    date = time.strftime("%Y-%m-%d")
    command = "python benchmarks/reference.py " + " ".join(sys.argv[1:])
    # The time in the name too: runs of one day are kept side by side.
    stem = os.path.join(args.output_dir, f"reference-cpu-{date}-{time.strftime('%H%M')}")
    save_record(stem, command, info, date, args, rows)
    lines = [
        f"# keras_local beside the reference PyTorch code, {date}",
        "",
        f"`{command}`; {describe(info)}; reference: anokland/local-loss `train.py` on torch "
        f"{args.torch_version}. Medians over rounds; ratio = keras_local / reference "
        "(below 1: keras_local is faster or smaller). Contention: "
        f"{args.note}.",
        "",
        "| job | rule | measure | reference | TensorFlow | ratio | JAX | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    jobs = [("mlp-epoch", "predsim", "wall_s", "whole process, s"),
            ("mlp-epoch", "predsim", "peak_rss_mib", "peak RSS, MiB")]  # fmt: skip
    for rule in args.vgg_rules:
        jobs += [("vgg8b-steps", rule, "step_s", "time per step, s"),
                 ("vgg8b-steps", rule, "startup_s", "2 steps, whole process, s"),
                 ("vgg8b-steps", rule, "peak_rss_mib", "peak RSS, MiB")]  # fmt: skip
    for job, rule, key, label in jobs:
        values = summary(rows, job, rule, key)
        if "reference" not in values:
            continue
        cells = [f"{values['reference']:.2f}"]
        for system in ("tensorflow", "jax"):
            value = values.get(system)
            cells += ["n/a", "n/a"] if value is None else [
                f"{value:.2f}", f"{value / values['reference']:.2f}x"]
        lines.append(f"| {job} | {rule} | {label} | " + " | ".join(cells) + " |")
    if "backprop" in args.vgg_rules and "predsim" in args.vgg_rules:
        predsim = summary(rows, "vgg8b-steps", "predsim", "step_s")
        backprop = summary(rows, "vgg8b-steps", "backprop", "step_s")
        ratios = ", ".join(f"{s} {predsim[s] / backprop[s]:.2f}" for s in SYSTEMS)
        lines += ["", f"predsim / backprop time per VGG8B step (the FLOP ratio is about 2.5): {ratios}"]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True,
                        help="a checkout of github.com/anokland/local-loss")
    parser.add_argument("--reference-python", required=True,
                        help="a Python with torch and torchvision")
    parser.add_argument("--rounds", type=int, default=3, help="MLP epoch rounds")
    parser.add_argument("--vgg-rounds", type=int, default=1)
    parser.add_argument("--vgg-rules", nargs="*", default=["predsim", "backprop"])
    parser.add_argument("--steps", type=int, default=8, help="the longer VGG8B run's steps")
    parser.add_argument("--note", default="not stated", help="what else ran on the machine")
    parser.add_argument("--output-dir", default=RESULTS)
    args = parser.parse_args()  # fmt: skip
    args.torch_version = subprocess.run(
        [args.reference_python, "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "run"))
        write_idx_files(os.path.join(work, "data", "FashionMNIST", "FashionMNIST", "raw"))
        rows = measure(args, work)
    write(rows, args, machine())


if __name__ == "__main__":
    main()
