"""Forward-pass time, FLOPs and parameters of `PerturbativeConv2D` against
the 3x3 `Conv2D` it replaces at the same width, recorded under
benchmarks/results/.

    python benchmarks/perturbative_conv.py                   # C = 64 and 128, 32x32, batch 64
    python benchmarks/perturbative_conv.py --widths 64 --runs 20
    KERAS_BACKEND=jax python benchmarks/perturbative_conv.py # e.g. on the GPU machine

Each layer is a one-layer Keras model on a (batch, size, size, C) input
with C output channels, called in inference mode: on TensorFlow as a
`tf.function`, both compiled by XLA (`jit_compile=True`, what the zoo's
models use) and as a plain graph (TensorFlow's own oneDNN kernels); on
JAX as a `jax.jit` of the stateless call, timed to `block_until_ready`.
The input is already a backend tensor, so no host copy is timed. The
layers are timed round-robin (a shared VM's speed drifts by tens of
percent over minutes; this way the drift hits every layer alike), each
one's median over `--runs` calls after `--warmup`.

Rows: `conv3x3`, the learned 3x3 convolution with bias ('same' padding);
`perturbative`, `PerturbativeConv2D(C)` (one mask per input channel:
noise, ReLU, 1x1 mixing with bias); `conv1x1`, a plain 1x1 convolution
with bias, the perturbative layer's mixing alone (its lower bound).
FLOPs count a multiply-add as 2 and every element-wise addition, bias
and ReLU as 1, per forward pass of the batch.
"""

import argparse
import json
import os
import statistics
import sys
import time

from machine import machine  # benchmarks/machine.py, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
sys.path.insert(0, ROOT)


def layers(width):
    import keras

    from keras_local.layers import PerturbativeConv2D

    return {
        "conv3x3": keras.layers.Conv2D(width, 3, padding="same", name="conv3x3"),
        "perturbative": PerturbativeConv2D(width, seed=0, name="perturbative"),
        "conv1x1": keras.layers.Conv2D(width, 1, name="conv1x1"),
    }


def flops(name, batch, size, width):
    """Forward FLOPs of the batch (multiply-add = 2; additions, bias, ReLU = 1)."""
    pixels = batch * size * size
    if name == "conv3x3":
        return pixels * width * (2 * 9 * width + 1)
    if name == "conv1x1":
        return pixels * width * (2 * width + 1)
    # noise addition and ReLU over C_in maps, then the 1x1 mixing with bias
    return pixels * (2 * width + width * (2 * width + 1))


def forward_fns(model, mode):
    """`fn(x)` running `model` in inference mode to completion, per backend."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def forward(trainable, fixed, x):
            return model.stateless_call(trainable, fixed, x, training=False)[0]

        return lambda x: forward(trainable, fixed, x).block_until_ready()
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), jit_compile=(mode == "xla"))
    # TensorFlow runs CPU kernels synchronously: the call returns when done.
    return fn


def measure(widths, batch, size, runs, warmup, modes):
    import keras
    import numpy as np

    rows = []
    for width in widths:
        x_np = np.random.default_rng(0).normal(size=(batch, size, size, width)).astype("float32")
        x = keras.ops.convert_to_tensor(x_np)
        for mode in modes:
            fns, info = {}, {}
            for name, layer in layers(width).items():
                inputs = keras.Input((size, size, width), batch_size=batch)
                model = keras.Model(inputs, layer(inputs))
                fn = forward_fns(model, mode)
                start = time.perf_counter()
                fn(x)
                first = time.perf_counter() - start
                for _ in range(warmup):
                    fn(x)
                fns[name] = fn
                info[name] = {
                    "first_call_s": first,
                    "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
                    "fixed_values": int(sum(np.prod(v.shape) for v in model.non_trainable_variables)),
                }
            times = {name: [] for name in fns}
            for _ in range(runs):
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - start)
            for name in fns:
                ms = [1000 * t for t in times[name]]
                rows.append(
                    {
                        "layer": name,
                        "mode": mode,
                        "width": width,
                        "size": size,
                        "batch_size": batch,
                        "median_ms": statistics.median(ms),
                        "p10_ms": float(np.percentile(ms, 10)),
                        "p90_ms": float(np.percentile(ms, 90)),
                        "runs": runs,
                        "gflops": flops(name, batch, size, width) / 1e9,
                        **info[name],
                    }
                )
                print(
                    f"C={width:4d} {mode:5s} {name:13s} {rows[-1]['median_ms']:9.2f} ms",
                    flush=True,
                )
    return rows






def markdown(info, rows, command):
    lines = [
        f"# Perturbative layer vs 3x3 convolution, forward pass: {info['backend']} on {info['device']}",
        "",
        f"{info['date']}; {info['cpu']} ({info['cpu_count']} cores); "
        + ", ".join(f"{k} {info[k]}" for k in ("keras", "tensorflow", "jax") if k in info)
        + f". Produced by `{command}`.",
        "",
        f"Inference-mode forward pass of one layer, C input and C output channels, "
        f"{rows[0]['size']}x{rows[0]['size']} maps, batch {rows[0]['batch_size']}: median over "
        f"{rows[0]['runs']} calls after warm-up (p10-p90), and the ratio to the 3x3 conv in the "
        "same mode. `perturbative` is `PerturbativeConv2D(C)` (one fixed mask per input "
        "channel, ReLU, 1x1 mixing); `conv1x1` its mixing alone. Fixed values: the noise "
        "masks (not trained, but stored and read every call).",
        "",
        "| C | mode | layer | median (ms) | p10-p90 (ms) | / conv3x3 | GFLOP | / conv3x3 | trainable params | fixed values |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r["width"], r["mode"]): r for r in rows if r["layer"] == "conv3x3"}
    for r in rows:
        b = base[(r["width"], r["mode"])]
        lines.append(
            f"| {r['width']} | {r['mode']} | {r['layer']} | {r['median_ms']:.2f} | "
            f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f} | {r['median_ms'] / b['median_ms']:.2f} | "
            f"{r['gflops']:.3f} | {r['gflops'] / b['gflops']:.3f} | {r['trainable_params']:,} | "
            f"{r['fixed_values']:,} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=None, help="tensorflow: xla and/or graph (default both); jax: xla")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)

    import keras

    modes = args.modes or (["xla"] if keras.backend.backend() == "jax" else ["xla", "graph"])
    rows = measure(args.widths, args.batch_size, args.size, args.runs, args.warmup, modes)
    info = machine()
    command = " ".join(["python benchmarks/perturbative_conv.py", *(sys.argv[1:] if argv is None else argv)])
    os.makedirs(args.out, exist_ok=True)
    device = info["device"].replace(" ", "-").lower()
    stem = os.path.join(args.out, f"perturbative_conv-{info['backend']}-{device}-{info['date'][:10]}")
    with open(stem + ".json", "w") as f:
        json.dump({"machine": info, "command": command, "rows": rows}, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(markdown(info, rows, command))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
