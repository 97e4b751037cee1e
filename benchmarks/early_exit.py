"""Does early exit really skip the later blocks? Wall time of the compiled
early-exit path against the full network, recorded under benchmarks/results/.

    python benchmarks/early_exit.py                 # VGG8B (width 1/4), pred
    python benchmarks/early_exit.py --model mlp --width 1 --rule predsim
    python benchmarks/early_exit.py --rule backprop --probes   # probe heads as exits

A model is trained briefly on real Fashion-MNIST (the first
`--train-examples` training examples, `--epochs`, no augmentation), then in
inference mode, on TensorFlow, both paths are `tf.function`s without XLA
(dynamic shapes): the full network (`tf_full_network_function`, softmax of
the output) and the early-exit path (`tf_early_exit_function`: after each
exit the undecided examples are gathered and the rest of the network runs in
a `tf.cond`, so only on them and not at all when none are left). Cases, each
on a batch of `--batch-sizes` test examples:

- `confident`: test examples the first exit classifies with confidence
  >= `--threshold` (chosen beforehand), so every one answers at the first
  head; the case the issue asks to measure.
- `mixed`: the first test examples, as they come, at the same threshold: some
  answer early, the rest run on (the share per exit is recorded).
- `no exit`: the same batch at threshold 1.01: every example runs every
  block, so this is the overhead of computing and checking the exits.
- `full`: the full network on the same batch.

All cases are timed round-robin (a shared VM's speed drifts by tens of
percent over minutes; this way the drift hits every case alike), each one's
median over `--runs` calls after `--warmup`, timed to the host values.
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




def train_model(args):
    import keras
    import numpy as np

    from keras_local import data
    from keras_local import rules
    from keras_local import zoo

    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = data.load("fashion_mnist")
    if args.model_file and os.path.exists(args.model_file):
        import keras_local  # noqa: F401 - registers the classes load_model needs

        model = keras.saving.load_model(args.model_file, compile=False)
        with open(args.model_file + ".json") as f:
            saved = json.load(f)
        return model, (x_test, y_test), saved["train_s"], saved["test_accuracy"]
    rule = rules.with_probes(args.rule) if args.probes else args.rule
    kwargs = dict(rule=rule, input_shape=(28, 28, 1), width=args.width)
    if args.model != "mlp":
        kwargs["fc_units"] = args.fc_units
    model = zoo.get(args.model)(**kwargs)
    start = time.perf_counter()
    model.fit(
        x[: args.train_examples], y[: args.train_examples], batch_size=128,
        epochs=args.epochs, verbose=0,
    )  # fmt: skip
    train_s = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(model.predict(x_test, batch_size=256, verbose=0), -1) == y_test))
    if args.model_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.model_file)), exist_ok=True)
        model.save(args.model_file)
        with open(args.model_file + ".json", "w") as f:
            json.dump({"train_s": train_s, "test_accuracy": accuracy, "settings": vars(args)}, f)
    return model, (x_test, y_test), train_s, accuracy


def time_round_robin(cases, runs, warmup):
    for function in cases.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in cases}
    for _ in range(runs):
        for name, function in cases.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def measure(model, x_test, batch_size, threshold, runs, warmup):
    import numpy as np

    from keras_local import early_exit

    exits = early_exit.exits(model)
    first = early_exit.exit_probabilities(model, x_test[:4096])[0]
    confident = np.flatnonzero(np.asarray(early_exit.confidence(first)) >= threshold)
    if len(confident) < batch_size:
        raise SystemExit(
            f"Only {len(confident)} of 4096 test examples reach {threshold} at the first "
            f"exit; fewer than a batch of {batch_size}. Train longer or lower --threshold."
        )
    batches = {"confident": x_test[confident[:batch_size]], "mixed": x_test[:batch_size]}
    full_fn = early_exit.tf_full_network_function(model)
    early_fn = early_exit.tf_early_exit_function(model)
    t = np.float32(threshold)

    def early(x, t):
        return lambda: early_fn(x, t)["exit_index"].numpy()

    cases = {
        "full (confident batch)": lambda: full_fn(batches["confident"])["probabilities"].numpy(),
        "early exit (confident batch)": early(batches["confident"], t),
        "full (mixed batch)": lambda: full_fn(batches["mixed"])["probabilities"].numpy(),
        "early exit (mixed batch)": early(batches["mixed"], t),
        "early exit at 1.01 (mixed batch)": early(batches["mixed"], np.float32(1.01)),
    }
    times = time_round_robin(cases, runs, warmup)
    rows = []
    for name, values in times.items():
        batch = "confident" if "confident" in name else "mixed"
        if name.startswith("full"):
            exit_index = np.full(batch_size, len(exits) - 1)
        else:
            this = 1.01 if "1.01" in name else threshold
            exit_index = early_fn(batches[batch], np.float32(this))["exit_index"].numpy()
        counts = np.bincount(exit_index, minlength=len(exits))
        rows.append(
            {
                "case": name,
                "batch": batch,
                "batch_size": batch_size,
                "threshold": None if name.startswith("full") else (1.01 if "1.01" in name else threshold),
                "median_ms": 1000 * statistics.median(values),
                "p10_ms": 1000 * float(np.percentile(values, 10)),
                "p90_ms": 1000 * float(np.percentile(values, 90)),
                "mean_blocks": float(np.mean(early_exit.blocks_run(model, exit_index))),
                "exit_fractions": [float(c) / batch_size for c in counts],
                "runs": runs,
            }
        )
    for row in rows:
        full = next(r for r in rows if r["case"] == f"full ({row['batch']} batch)")
        row["time_vs_full"] = row["median_ms"] / full["median_ms"]
    return rows


def markdown(info, setup, rows, command):
    lines = [
        f"# Early exit against the full network: {info['backend']} on {info['device']}",
        "",
        f"{info['date']}; {info['cpu']} ({info['cpu_count']} cores, shared with other "
        f"jobs); keras {info['keras']}, tensorflow {info['tensorflow']}. Produced by "
        f"`{command}`.",
        "",
        f"Model: `{setup['model']}` (width {setup['width']}), rule `{setup['rule']}`, "
        f"{setup['num_blocks']} hidden blocks, exits "
        + ", ".join(f"{e['name']} (after {e['blocks_run']} blocks)" for e in setup["exits"])
        + f"; trained {setup['epochs']} epoch(s) on the first {setup['train_examples']} "
        f"Fashion-MNIST training examples ({setup['train_s']:.0f} s), test accuracy "
        f"{100 * setup['test_accuracy']:.2f}%. Threshold {setup['threshold']} (max "
        "probability). Both paths are `tf.function`s without XLA, in inference mode; "
        "median of the runs, timed round-robin.",
        "",
        "| batch | case | median (ms) | p10-p90 (ms) | time / full | mean blocks run | "
        "share answering at each exit |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shares = " / ".join(f"{100 * f:.0f}%" for f in row["exit_fractions"])
        lines.append(
            f"| {row['batch_size']} | {row['case']} | {row['median_ms']:.2f} | "
            f"{row['p10_ms']:.2f}-{row['p90_ms']:.2f} | {row['time_vs_full']:.2f} | "
            f"{row['mean_blocks']:.2f} | {shares} |"
        )
    lines += [
        "",
        "`confident`: test examples whose first-exit confidence reaches the threshold, "
        "so every one answers at the first head; `mixed`: the first test examples as they "
        "come; `early exit at 1.01`: no example can exit (the overhead of computing and "
        "checking every exit); `time / full`: against the full network on the same batch.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg8b", help="a zoo model (default: vgg8b)")
    parser.add_argument("--width", type=float, default=0.25, help="default: 0.25")
    parser.add_argument("--fc-units", type=int, default=256, help="VGG dense width (default: 256)")
    parser.add_argument("--rule", default="pred", help="default: pred")
    parser.add_argument("--probes", action="store_true", help="wrap the rule in probe heads")
    parser.add_argument("--train-examples", type=int, default=5000, help="default: 5000")
    parser.add_argument("--epochs", type=int, default=1, help="default: 1")
    parser.add_argument("--threshold", type=float, default=0.9, help="default: 0.9")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[128, 1], help="default: 128 1"
    )
    parser.add_argument("--runs", type=int, default=30, help="default: 30")
    parser.add_argument("--warmup", type=int, default=3, help="default: 3")
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument(
        "--model-file",
        metavar="PATH",
        help="a .keras file: loaded if it exists (the settings then describe it), "
        "otherwise the trained model is saved there (with PATH.json)",
    )
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)

    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("The compiled early-exit path is TensorFlow's; run with the TF backend.")
    from keras_local import early_exit

    model, (x_test, _), train_s, accuracy = train_model(args)
    rows = []
    for batch_size in args.batch_sizes:
        rows += measure(model, x_test, batch_size, args.threshold, args.runs, args.warmup)
    info = machine()
    setup = {
        "model": args.model,
        "width": args.width,
        "rule": args.rule + (" with probes" if args.probes else ""),
        "num_blocks": len(model.hidden_blocks),
        "exits": [{"name": e.name, "blocks_run": e.blocks_run} for e in early_exit.exits(model)],
        "epochs": args.epochs,
        "train_examples": args.train_examples,
        "train_s": train_s,
        "test_accuracy": accuracy,
        "threshold": args.threshold,
    }
    command = "python benchmarks/early_exit.py " + " ".join(argv if argv is not None else sys.argv[1:])
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(
        args.out, f"early_exit-{args.model}-{info['backend']}-cpu-{info['date'][:10]}"
    )
    with open(stem + ".json", "w") as f:
        json.dump({"machine": info, "setup": setup, "rows": rows, "command": command.strip()}, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(markdown(info, setup, rows, command.strip()))
    print(markdown(info, setup, rows, command.strip()))
    print(f"Written to {stem}.md and .json")


if __name__ == "__main__":
    main()
