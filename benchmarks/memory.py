"""Activation memory per example of each rule against backprop, recorded
under benchmarks/results/.

    python benchmarks/memory.py                         # TF and JAX, vgg8b and vgg11b
    python benchmarks/memory.py --backends jax --models vgg8b --rules backprop predsim

A process's peak memory holds the runtime, the weights and the optimizer's
state, which do not grow with the batch, and the activations (and their
gradients), which do. So the figure here is the slope: peak memory at batch
`--large` minus peak at batch `--small`, over the difference in examples,
in MiB per example; the fixed cost cancels.

Peak RSS: every (backend, model, rule, batch size) builds its model and runs
`--steps` training steps (`train_on_batch`, the rule's own compiled step) in a
fresh process, so its peak is its own. On JAX also the compiled step's own
figure: the temporary buffers of `jax.jit(model.train_step)` as XLA's
`memory_analysis()` reports them (no allocator, no runtime), with the model
trained block by block (`block_staged = True`) and with the summed objective
differentiated at once (the default). On a GPU only that compiled figure
means anything (JAX reserves most of the device's memory up front, and the
host's RSS is not the device's): run it there with `--steps 0`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from jax_step import train_state  # benchmarks/jax_step.py, beside this script
from machine import describe
from machine import machine
from machine import save_record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
MIB = 2**20


def measure(model_name, rule, batch_size, width, steps, input_shape):
    """In this process: peak RSS (MiB) after `steps` training steps, and on
    JAX the compiled step's temporary MiB, staged and not."""
    import resource

    import keras
    import numpy as np

    import keras_local

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *input_shape)).astype("float32")
    y = rng.integers(0, 10, size=batch_size).astype("int32")
    build = keras_local.zoo.get(model_name)
    model = build(rule=rule, input_shape=input_shape, width=width)
    for _ in range(steps):
        model.train_on_batch(x, y)
    result = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if keras.backend.backend() == "jax":
        for staged in (True, False):
            model = build(rule=rule, input_shape=input_shape, width=width)
            model.block_staged = staged
            result[f"compiled_temp_mib_staged_{staged}"] = compiled_temp(model, x, y) / MIB
    return result


def compiled_temp(model, x, y):
    import jax

    compiled = jax.jit(model.train_step).lower(train_state(model), (x, y)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def run_child(backend, args_list):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(args_list)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{backend} {args_list} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def slope(small, large, key, args):
    return (large[key] - small[key]) / (args.large - args.small)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--models", nargs="+", default=["vgg8b", "vgg11b"])
    parser.add_argument("--rules", nargs="+", default=["backprop", "pred", "sim", "predsim"])
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--small", type=int, default=32)
    parser.add_argument("--large", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="training steps before the peak RSS is read")
    parser.add_argument("--input-shape", default="28,28,1")
    parser.add_argument("--output-dir", default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    shape = [int(n) for n in args.input_shape.split(",")]
    rows = []
    for backend in args.backends:
        for model_name in args.models:
            for rule in args.rules:
                small, large = (
                    run_child(backend, [model_name, rule, batch, args.width, args.steps, shape])
                    for batch in (args.small, args.large)
                )
                row = {"backend": backend, "model": model_name, "rule": rule,
                       "small": small, "large": large,
                       "rss_mib_per_example": slope(small, large, "peak_rss_mib", args)}  # fmt: skip
                for staged in (True, False):
                    key = f"compiled_temp_mib_staged_{staged}"
                    if key in small:
                        row[f"compiled_mib_per_example_staged_{staged}"] = slope(small, large, key, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
    write(rows, args)


def _ratio(row, backprop, key):
    if backprop is None or key not in row or not backprop.get(key):
        return "n/a"
    return f"{row[key] / backprop[key]:.2f}x"


def write(rows, args):
    date = time.strftime("%Y-%m-%d")
    command = "python benchmarks/memory.py " + " ".join(sys.argv[1:])
    info = machine()  # after the children: on a GPU, JAX here would take the device's memory
    device = info["device"].replace(" ", "-").lower()  # "cpu", or e.g. "nvidia-h200"
    stem = os.path.join(args.output_dir, f"memory-{device}-{date}")
    save_record(stem, command, info, date, args, rows)
    lines = [
        f"# Activation memory per example, {date}",
        "",
        f"`{command}`; {describe(info)}. Slope of peak memory between batch {args.small} and "
        f"{args.large} ({args.steps} training steps, width {args.width}, input "
        f"{args.input_shape}), MiB per example; each rule beside backprop on the same "
        "backend and model. 'compiled': JAX's `memory_analysis()` of the jitted step "
        "(staged: `block_staged = True`, group by group; summed: the default, one "
        "differentiation of the summed objective).",
        "",
        "| backend | model | rule | RSS MiB/example | vs backprop | compiled staged | vs backprop"
        " | compiled summed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        backprop = next(
            (r for r in rows if r["rule"] == "backprop" and r["backend"] == row["backend"]
             and r["model"] == row["model"]), None,
        )  # fmt: skip
        staged = row.get("compiled_mib_per_example_staged_True")
        summed = row.get("compiled_mib_per_example_staged_False")
        lines.append(
            f"| {row['backend']} | {row['model']} | {row['rule']} | "
            f"{row['rss_mib_per_example']:.2f} | {_ratio(row, backprop, 'rss_mib_per_example')} | "
            + ("n/a" if staged is None else f"{staged:.2f}")
            + f" | {_ratio(row, backprop, 'compiled_mib_per_example_staged_True')} | "
            + ("n/a" if summed is None else f"{summed:.2f}")
            + " |"
        )
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
