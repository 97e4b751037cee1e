"""Throughput, model FLOP utilisation and peak memory of VGG8B and VGG11B
with the predsim and backprop rules in float32 and bf16 on the JAX backend,
and a short keras-tuner search, recorded under benchmarks/results/.

    python benchmarks/gpu.py                    # on the lent GPU machine (KERAS_BACKEND=jax)
    python benchmarks/gpu.py --models vgg8b --precisions bf16 --steps 50 --no-search
    python benchmarks/gpu.py --width 0.0625 --steps 2 --warmup 1 --batch-size 8 \\
        --output-dir /tmp/gpu_bench_test       # a quick check on a CPU

Steps: every (model, rule, precision) builds and steps in a fresh process, so
its peak memory is its own; bf16 is `mixed_bfloat16`, set before the model is
built. The step is the model's `train_step`, jitted as Keras' `fit` jits it and
compiled ahead of time (its compile time reported apart), on one synthetic
batch kept on the device (`--input-shape`, default 32x32x3 as CIFAR-10 in the
papers). Each step is timed to completion; throughput is the batch size over
the median of `--steps` steps after `--warmup`. FLOPs per step: XLA's cost
analysis of the lowered step (the model's FLOPs, before XLA's rewrites), else
of the compiled one, else a count of the traced step's dot and convolution
multiply-adds. MFU: FLOPs / median step time / the chip's dense peak (`PEAKS`,
by `jax.devices()[0].device_kind`; n/a elsewhere, e.g. on a CPU). Memory: the
device's `peak_bytes_in_use`, or the process's peak RSS where it has none.

Search: a random search (`keras_local.tuning.tune`, the package's default
space: learning rate, dropout, beta) of the first of `--models` with predsim,
float32, batch 128: `--search-trials` one-epoch trials on the first
`--search-examples` Fashion-MNIST training examples (28x28x1), in a fresh
process; its trials are recorded, its search files are not kept.
Contention: the load average and the other processes on the GPU (nvidia-smi)
before and after; `--note` adds what else you know.
"""

import argparse
import itertools
import json
import math
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from jax_step import train_state  # benchmarks/jax_step.py, beside this script
from machine import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
#: Keras dtype policies of the `--precisions` names.
POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16"}
SEARCH_BATCH_SIZE = 128
#: Dense peak FLOP/s (bf16, fp32) by a substring of the device kind; the first match counts.
PEAKS = (
    ("H100 PCIe", 756e12, 51e12),
    ("H100", 989e12, 67e12),
    ("H200", 989e12, 67e12),  # an H100 with more memory: the same peaks
    ("A100", 312e12, 19.5e12),
)


def peak_flops(device_kind, precision):
    """The chip's dense peak FLOP/s at `precision`, or None when unknown."""
    for name, bf16, fp32 in PEAKS:
        if name.lower() in device_kind.lower():
            return bf16 if precision == "bf16" else fp32
    return None


def parse_shape(text):
    """`"32x32x3"` -> `(32, 32, 3)`."""
    if not all(n.isdigit() and int(n) > 0 for n in text.lower().split("x")):
        raise argparse.ArgumentTypeError(f"expected a shape like 32x32x3, got {text!r}")
    return tuple(int(n) for n in text.lower().split("x"))


def measure(model_name, rule, precision, *, width, batch_size, steps, warmup, input_shape):
    """Builds one model under `precision` and times its jitted training step;
    returns a row of the table (see the module docstring)."""
    import jax
    import keras
    import numpy as np

    import keras_local

    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        input_shape = tuple(input_shape)
        model = keras_local.zoo.get(model_name)(rule=rule, width=width, input_shape=input_shape)
        rng = np.random.default_rng(0)
        x = jax.device_put(rng.normal(size=(batch_size, *input_shape)).astype("float32"))
        y = jax.device_put(rng.integers(0, 10, size=batch_size).astype("int32"))
        data = (x, y, None)
        state = train_state(model)
        device = jax.devices()[0]
        donate = () if device.platform == "cpu" else (0,)  # as Keras' fit, where it helps
        start = time.perf_counter()
        lowered = jax.jit(model.train_step, donate_argnums=donate).lower(state, data)
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
        flops, source = step_flops(lowered, compiled, lambda: jax.make_jaxpr(model.train_step)(state, data))
        times = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            logs, state = compiled(state, data)
            jax.block_until_ready((logs, state))
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    median = statistics.median(times)
    peak = peak_flops(device.device_kind, precision)
    return {
        "model": model_name, "rule": rule, "precision": precision, "policy": POLICIES[precision],
        "parameters": model.count_params(), "compile_s": compile_s, "median_step_ms": 1000 * median,
        "p10_step_ms": 1000 * float(np.percentile(times, 10)),
        "p90_step_ms": 1000 * float(np.percentile(times, 90)),
        "examples_per_s": batch_size / median, "flops_per_step": flops, "flops_source": source,
        "peak_flops": peak, "mfu": flops / median / peak if flops and peak else None,
        "final_loss": float(logs["loss"]), **peak_memory(device),
    }  # fmt: skip


def step_flops(lowered, compiled, trace):
    """FLOPs of one step and where they come from: XLA's cost analysis of the
    lowered step, else of the compiled one, else a count over `trace()`'s jaxpr."""
    for source, stage in (("xla-lowered", lowered), ("xla-compiled", compiled)):
        try:
            cost = stage.cost_analysis()
        except Exception:  # not every backend offers it
            continue
        cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
        if isinstance(cost, dict) and cost.get("flops", 0) > 0:
            return float(cost["flops"]), source
    return float(jaxpr_flops(trace().jaxpr)), "counted dot/conv multiply-adds x 2"


def jaxpr_flops(jaxpr):
    """2 x the multiply-adds of the dot products and convolutions of a jaxpr
    (forward and backward, as traced) and of the jaxprs inside it."""
    total = 0
    for eqn in jaxpr.eqns:
        out = eqn.outvars[0].aval.shape if eqn.outvars else ()
        if eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(out) * math.prod(lhs[d] for d in contracting)
        elif eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * math.prod(out) * math.prod(kernel) // out_features
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += jaxpr_flops(inner)
    return total


def peak_memory(device):
    """The device's peak bytes in use where it reports them, else the peak RSS."""
    stats = device.memory_stats() or {}
    if stats.get("peak_bytes_in_use"):
        return {"peak_memory_mib": stats["peak_bytes_in_use"] / 2**20, "memory_kind": "device peak"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_mib": rss_kib / 1024, "memory_kind": "process peak RSS"}


def search(model_name, *, width, trials, examples):
    """A random search of one-epoch predsim trials with the package's tuning
    API, in float32; returns its trials, best values and wall time."""
    from keras_local import tuning

    directory = tempfile.mkdtemp(prefix="gpu-bench-tune-")
    start = time.perf_counter()
    try:
        result = tuning.tune(
            model_name, "predsim", "fashion_mnist", tuner="random", max_trials=trials,
            max_epochs=1, train_examples=examples, batch_size=SEARCH_BATCH_SIZE,
            fixed={"width": width}, directory=directory, project_name="gpu-bench", overwrite=True,
            retrain=False, export=False, verbose=0, print_fn=lambda *a: print(*a, file=sys.stderr),
        )  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    keep = ("trial_id", "status", "score", "hyperparameters")
    return {
        "model": model_name, "rule": "predsim", "precision": "float32", "width": width,
        "train_examples": examples, "batch_size": SEARCH_BATCH_SIZE,
        "wall_s": time.perf_counter() - start, "best_hyperparameters": result.best_hyperparameters,
        "best_val_accuracy": result.best_score, "trials": [{k: t[k] for k in keep} for t in result.trials],
    }  # fmt: skip


def device_info():
    """`machine()` and the JAX device's platform and count (run in a child, so
    that this process never takes the GPU's memory)."""
    import jax

    return {**machine(), "platform": jax.devices()[0].platform, "device_count": jax.device_count()}


def contention():
    """The load average and the processes on the GPU (none when nvidia-smi is absent)."""
    seen = {"load_average": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True)
        seen["gpu_processes"] = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return seen


def run_isolated(job, timeout):
    """Runs one job (`measure`, `search` or `device_info` with its arguments)
    in a fresh process; returns its result, or `{"error": ...}`."""
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    results = [line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        return {"error": "\n".join(done.stderr.strip().splitlines()[-12:]) or f"exit {done.returncode}"}
    return json.loads(results[-1])


def child(job):
    """Runs a job of `run_isolated` here; prints its result."""
    kind = job.pop("kind")
    result = {"measure": measure, "search": search, "device_info": device_info}[kind](**job)
    print("RESULT " + json.dumps(result), flush=True)


def _number(value, form, scale=1):
    return "n/a" if value is None else format(value * scale, form)


def _kinds(rows, key):
    return ", ".join(sorted({r[key] for r in rows})) or "n/a"


def table(rows):
    """The results as Markdown table lines."""
    lines = [
        "| model | rule | precision | median step (ms) | p10-p90 (ms) | examples/s | GFLOP/step | MFU | compile (s) | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['rule']} | {r['precision']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error'].splitlines()[-1][:150]} |" + " |" * 6)
            continue
        lines.append(
            f"{head} {r['median_step_ms']:.2f} | {r['p10_step_ms']:.2f}-{r['p90_step_ms']:.2f} | "
            f"{r['examples_per_s']:,.0f} | {_number(r['flops_per_step'], '.2f', 1e-9)} | {_number(r['mfu'], '.1%')} | "
            f"{r['compile_s']:.1f} | {r['peak_memory_mib']:,.0f} |"
        )
    return lines


def markdown(record):
    """The .md file: machine, command, table, notes, contention and search."""
    info, rows, args = record["machine"], record["steps"], record["settings"]
    ok = [r for r in rows if "error" not in r]
    peaks = sorted({(r["precision"], r["peak_flops"]) for r in ok if r["peak_flops"]})
    peaks = ", ".join(f"{flops / 1e12:g} TFLOP/s for {precision}" for precision, flops in peaks)
    lines = [
        f"# GPU benchmark: {', '.join(args['models'])} x {', '.join(args['rules'])} on {info['device']}",
        "",
        f"{info['date']}; {info['device']} ({info['platform']}, {info['device_count']} device(s)), "
        f"backend {info['backend']}, keras {info['keras']}, jax {info.get('jax')}; host {info['cpu']} "
        f"({info['cpu_count']} cores). Command: `{record['command']}`.",
        "",
    ]
    if info["platform"] == "cpu":
        lines += ["**This ran on a CPU, not a GPU**: the times say nothing about a GPU; MFU is n/a.", ""]
    lines += [
        f"Median steady-state training step of the jitted `train_step` (batch {args['batch_size']}, "
        f"synthetic {'x'.join(map(str, args['input_shape']))} inputs on the device, width {args['width']}, "
        f"{args['steps']} timed steps after {args['warmup']} warm-up step(s), each timed to completion); "
        "compile is the ahead-of-time compilation. bf16 is Keras' `mixed_bfloat16` policy.",
        "",
        *table(rows),
        "",
        f"FLOPs per step: {_kinds(ok, 'flops_source')} (one step: forward, backward and the "
        f"optimizer update). MFU: FLOPs per step / median step time / the chip's dense peak "
        f"({peaks or 'none known for this device'}). XLA runs float32 convolutions and matmuls "
        "in TF32 on A100/H100/H200 by default, so a float32 MFU against the FP32 peak can exceed "
        f"100%. Peak memory: {_kinds(ok, 'memory_kind')}, of a process that built and stepped "
        "one model.",
        "", "## Contention", "",
        *contention_lines(record["contention"]),
    ]  # fmt: skip
    return "\n".join(lines + search_lines(record.get("search"))) + "\n"


def contention_lines(seen):
    lines = []
    for when, label in (("before", "before"), ("after", "after (with this benchmark's own load)")):
        if when not in seen:  # a record saved before the run ended
            continue
        gpu = seen[when].get("gpu_processes")
        gpu = "" if gpu is None else "; other GPU processes: " + ("; ".join(gpu) or "none")
        load = ", ".join(map(str, seen[when]["load_average"]))
        lines.append(f"- {label}: load average (1, 5, 15 min) {load} on {seen[when]['cpu_count']} cores{gpu}")
    return lines + [f"- note: {seen['note'] or 'none given (--note)'}"]


def search_lines(found):
    if not found or "error" in found:
        return ["", "## Hyperparameter search", "", f"Failed: {found['error']}"] if found else []
    lines = [
        "", "## Hyperparameter search", "", f"`keras_local.tuning.tune`: {found['model']} with {found['rule']} ({found['precision']}, width "
        f"{found['width']}), random search of {len(found['trials'])} trial(s) of 1 epoch on the first "
        f"{found['train_examples']} Fashion-MNIST training examples (a tenth held out for the "
        f"validation accuracy), batch {found['batch_size']}: {found['wall_s']:.0f} s in all.",
        "", "| trial | status | val accuracy | learning rate | dropout | beta |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for t in found["trials"]:
        hp = t["hyperparameters"]
        lines.append(
            f"| {t['trial_id']} | {t['status']} | {_number(t['score'], '.4f')} | "
            f"{_number(hp.get('learning_rate'), '.2e')} | {_number(hp.get('dropout'), '.2f')} | "
            f"{_number(hp.get('beta'), '.4f')} |"
        )
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vgg8b", "vgg11b"])
    parser.add_argument("--rules", nargs="+", default=["predsim", "backprop"])
    parser.add_argument("--precisions", nargs="+", choices=sorted(POLICIES), default=["float32", "bf16"])
    parser.add_argument("--width", type=float, default=1.0, help="the zoo builders' width multiplier")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    parser.add_argument("--input-shape", type=parse_shape, default=(32, 32, 3), help="default 32x32x3")
    parser.add_argument("--no-search", action="store_true", help="skip the keras-tuner search")
    parser.add_argument("--search-trials", type=int, default=2, help="of the search, on the first of --models")
    parser.add_argument("--search-examples", type=int, default=10000, help="Fashion-MNIST training examples")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per configuration")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the .md")
    parser.add_argument("--output-dir", default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1, --warmup at least 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")  # before any child imports Keras
    if args.child:
        return child(json.loads(args.child))
    if os.environ["KERAS_BACKEND"] != "jax":
        sys.exit(f"benchmarks/gpu.py runs on the JAX backend; KERAS_BACKEND is {os.environ['KERAS_BACKEND']!r}.")
    seen = {"before": contention(), "note": args.note}
    info = run_isolated({"kind": "device_info"}, args.timeout)
    if "error" in info:
        sys.exit(f"JAX could not start: {info['error']}")
    print(f"Device: {info['device']} (platform {info['platform']}), backend jax.", flush=True)
    if info["platform"] == "cpu":
        print("NOTE: running on the CPU, not a GPU: times are CPU times and MFU is n/a.", flush=True)
    common = {"width": args.width, "batch_size": args.batch_size, "steps": args.steps,
              "warmup": args.warmup, "input_shape": args.input_shape}  # fmt: skip
    command = shlex.join(["python", "benchmarks/gpu.py", *(sys.argv[1:] if argv is None else argv)])
    settings = {k: v for k, v in vars(args).items() if k != "child"}
    rows = []
    record = {"command": command, "machine": info, "settings": settings,
              "contention": seen, "steps": rows, "search": None}  # fmt: skip
    device = info["device"].replace(" ", "-").lower()
    stem = os.path.join(args.output_dir, f"gpu-{device}-{info['date'][:10]}")
    print("\n".join(table([])), flush=True)
    for model, rule, precision in itertools.product(args.models, args.rules, args.precisions):
        job = {"kind": "measure", "model_name": model, "rule": rule, "precision": precision}
        rows.append({"model": model, "rule": rule, "precision": precision,
                     **run_isolated({**job, **common}, args.timeout)})  # fmt: skip
        print(table(rows[-1:])[-1], flush=True)
        save(record, stem)  # after every row: a run cut off by the device's time limit keeps its rows
    job = {"kind": "search", "model_name": args.models[0], "width": args.width,
           "trials": args.search_trials, "examples": args.search_examples}  # fmt: skip
    record["search"] = None if args.no_search else run_isolated(job, args.timeout)
    seen["after"] = contention()
    print("\n" + save(record, stem))
    print(f"wrote {stem}.md and .json")


def save(record, stem):
    """Writes `record` to `stem`.json and its table to `stem`.md; returns the table."""
    text = markdown(record)
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    for ending, content in ((".json", json.dumps(record, indent=2)), (".md", text)):
        with open(stem + ending, "w") as f:
            f.write(content)
    return text


if __name__ == "__main__":
    main()
