"""Training-step time and peak memory of each rule, and the time of one
Fashion-MNIST epoch, recorded under benchmarks/results/.

    python benchmarks/step_time.py                      # all, on this machine
    python benchmarks/step_time.py --models mlp --rules backprop predsim --steps 30
    KERAS_BACKEND=jax python benchmarks/step_time.py    # e.g. on the GPU machine

Step time: the rules of one model are built in one process and stepped
round-robin (a shared VM's speed drifts by tens of percent over minutes; this
way the drift hits every rule alike); each rule's median over `--steps`
steady-state steps after `--warmup` (compilation is not training speed), each
step timed to completion (`train_on_batch` returns host values). Memory: every
(model, rule) builds and steps in a fresh process, so its peak is its own: the
process's peak resident set size on the CPU, the device's `peak_bytes_in_use`
on a JAX GPU. Epoch: the MLP trains for one epoch over the full Fashion-MNIST
training set with batch 128 and is evaluated on the test set, as the
reference PyTorch script's epoch; the median over `--epochs - 1` epochs after
the first (compiling) one.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from machine import describe  # benchmarks/machine.py, beside this script
from machine import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def batch(batch_size):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=batch_size).astype("int32")
    return x, y


def measure_steps(model_name, rules, batch_size, rounds, warmup):
    """Times every rule's step round-robin in one process, so that the
    machine's drift (a shared VM's speed varies by tens of percent over
    minutes) hits all rules alike."""
    import numpy as np

    import keras_local

    x, y = batch(batch_size)
    models, first, times = {}, {}, {rule: [] for rule in rules}
    for rule in rules:
        models[rule] = keras_local.zoo.get(model_name)(rule=rule, input_shape=(28, 28, 1))
        start = time.perf_counter()
        models[rule].train_on_batch(x, y)
        first[rule] = time.perf_counter() - start
        for _ in range(warmup):
            models[rule].train_on_batch(x, y)
    for _ in range(rounds):
        for rule in rules:
            start = time.perf_counter()
            models[rule].train_on_batch(x, y)
            times[rule].append(time.perf_counter() - start)
    return [
        {
            "model": model_name,
            "rule": rule,
            "batch_size": batch_size,
            "first_step_s": first[rule],
            "median_step_ms": 1000 * float(np.median(times[rule])),
            "p10_step_ms": 1000 * float(np.percentile(times[rule], 10)),
            "p90_step_ms": 1000 * float(np.percentile(times[rule], 90)),
            "steps": rounds,
        }
        for rule in rules
    ]


def measure_memory(model_name, rule, batch_size):
    """Peak memory of a process that builds one model and trains 3 steps."""
    import keras_local

    x, y = batch(batch_size)
    model = keras_local.zoo.get(model_name)(rule=rule, input_shape=(28, 28, 1))
    for _ in range(3):
        model.train_on_batch(x, y)
    return {"model": model_name, "rule": rule, **peak_memory()}


def measure_epoch(rule, batch_size, epochs):
    import keras
    import numpy as np

    import keras_local

    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = keras_local.data.load("fashion_mnist")
    model = keras_local.zoo.mlp(rule=rule, input_shape=(28, 28, 1))
    times, accuracy = [], None
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        logs = model.evaluate(xt, yt, batch_size=batch_size, verbose=0, return_dict=True)
        times.append(time.perf_counter() - start)
        accuracy = accuracy if accuracy is not None else logs["accuracy"]
    return {
        "model": "mlp",
        "rule": rule,
        "batch_size": batch_size,
        "epoch_with_compile_s": times[0],
        "epoch_s": float(np.median(times[1:])),
        "epoch_runs_s": times[1:],
        "test_accuracy_after_1_epoch": accuracy,
    }


def peak_memory():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            stats = device.memory_stats() or {}
            return {"peak_device_mib": stats.get("peak_bytes_in_use", 0) / 2**20}
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}






def run_isolated(kind, args):
    """Runs one measurement in a fresh process; returns its JSON result."""
    command = [sys.executable, os.path.abspath(__file__), "--child", kind, *args]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(info, step_rows, epoch_rows):
    lines = [
        f"# Step time and memory: {info['backend']} on {info['device']}",
        "",
        describe(info) + ". Produced by `python benchmarks/step_time.py`.",
        "",
    ]
    memory = "peak device MiB" if any("peak_device_mib" in r for r in step_rows) else "peak RSS MiB"
    if step_rows:
        lines += [
            "Median steady-state training step (batch "
            f"{step_rows[0]['batch_size']}, 28x28x1 inputs, builder defaults: width 1, no dropout,"
            " dim_in_decoder 4096), p10-p90, and the ratio to backprop on the same model.",
            "",
            f"| model | rule | median step (ms) | p10-p90 (ms) | / backprop | first step (s) | {memory} |",
            "|---|---|---|---|---|---|---|",
        ]
        base = {r["model"]: r["median_step_ms"] for r in step_rows if r["rule"] == "backprop"}
        for r in step_rows:
            ratio = f"{r['median_step_ms'] / base[r['model']]:.2f}" if r["model"] in base else "-"
            mem = r.get("peak_device_mib", r.get("peak_rss_mib"))
            lines.append(
                f"| {r['model']} | {r['rule']} | {r['median_step_ms']:.1f} | "
                f"{r['p10_step_ms']:.1f}-{r['p90_step_ms']:.1f} | {ratio} | {r['first_step_s']:.1f} | {mem:.0f} |"
            )
    if epoch_rows:
        lines += [
            "",
            "One epoch of the MLP 3x1024 over the full Fashion-MNIST training set (batch 128)"
            " plus a test pass, as the reference script's epoch.",
            "",
            "| rule | epoch + test, median (s) | all runs (s) | first epoch, with compilation (s) | test accuracy after 1 epoch |",
            "|---|---|---|---|---|",
        ]
        for r in epoch_rows:
            runs = ", ".join(f"{t:.1f}" for t in r["epoch_runs_s"])
            lines.append(
                f"| {r['rule']} | {r['epoch_s']:.1f} | {runs} | {r['epoch_with_compile_s']:.1f} | "
                f"{100 * r['test_accuracy_after_1_epoch']:.2f}% |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "vgg8b"])
    parser.add_argument("--rules", nargs="+", default=["backprop", "pred", "sim", "predsim"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per rule (default 50 for the MLP, 5 for VGG8B)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per rule in the epoch benchmark; the first (compiling) one is reported apart")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-epoch", action="store_true", help="skip the Fashion-MNIST epoch benchmark")
    parser.add_argument("--epoch-rules", nargs="+", default=["backprop", "predsim"])
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "steps":
            model, batch_size, steps, warmup, *rules = rest
            result = measure_steps(model, rules, int(batch_size), int(steps), int(warmup))
        elif kind == "memory":
            model, rule, batch_size = rest
            result = measure_memory(model, rule, int(batch_size))
        else:
            rule, batch_size, epochs = rest
            result = measure_epoch(rule, int(batch_size), int(epochs))
        print(json.dumps(result))
        return

    step_rows, epoch_rows = [], []
    for model in args.models:
        steps = args.steps or (50 if model == "mlp" else 5)
        rows = run_isolated("steps", [model, str(args.batch_size), str(steps), str(args.warmup), *args.rules])
        for row in rows:
            row.update(run_isolated("memory", [model, row["rule"], str(args.batch_size)]))
            print(f"{model:6s} {row['rule']:9s} {row['median_step_ms']:9.1f} ms", flush=True)
        step_rows += rows
    if not args.no_epoch:
        for rule in args.epoch_rules:
            row = run_isolated("epoch", [rule, str(args.batch_size), str(args.epochs)])
            print(f"epoch  {rule:9s} {row['epoch_s']:9.1f} s", flush=True)
            epoch_rows.append(row)

    info = machine()
    os.makedirs(args.out, exist_ok=True)
    device = info["device"].replace(" ", "-").lower()
    stem = os.path.join(args.out, f"step_time-{info['backend']}-{device}-{info['date'][:10]}")
    with open(stem + ".json", "w") as f:
        json.dump({"machine": info, "steps": step_rows, "epochs": epoch_rows}, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(markdown(info, step_rows, epoch_rows))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
