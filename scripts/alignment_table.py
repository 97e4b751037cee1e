"""Every rule's alignment with backprop on the Fashion-MNIST MLP: zoo/alignment.md
and zoo/alignment.png.

For each rule of the registry: `keras_local.zoo.mlp(width=...)` built with the
rule's builder defaults (optimizer included), trained for one epoch on the first
`--train-examples` training examples (seeded), then its test accuracy and
`keras_local.analysis.alignment` per block on the first `--examples` test
examples. Records the command, machine and date beside the table.

    .venv/bin/python scripts/alignment_table.py --width 0.25 --train-examples 20000
"""

import argparse
import datetime
import os
import platform
import sys
import time

import keras
import numpy as np

from keras_local import data
from keras_local import rules
from keras_local import zoo
from keras_local.analysis import alignment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{date}; {cpu} ({os.cpu_count()} cores); Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, Python {platform.python_version()}"
    )


def measure(rule, args, train, test):
    (x, y), (xt, yt) = train, test
    keras.utils.set_random_seed(args.seed)
    model = zoo.mlp(rule=rule, width=args.width, input_shape=x.shape[1:])
    start = time.time()
    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
    seconds = time.time() - start
    logs = model.evaluate(xt, yt, batch_size=1000, verbose=0, return_dict=True)
    result = alignment(model, xt[: args.examples], yt[: args.examples])
    return {"rule": rule, "accuracy": logs["accuracy"], "seconds": seconds, "result": result}


def angle(value):
    if value is None:
        return "-"
    return "nan" if np.isnan(value) else f"{value:.1f}"


def row_names(measured):
    """The blocks' names, then `output` (the last row: the output layer, or
    the exit of a rule without one, associated learning)."""
    return [row.name for row in measured[0]["result"]][:-1] + ["output"]


def table(measured):
    names = row_names(measured)
    head = "| rule | test acc. | " + " | ".join(f"{n} update" for n in names) + " | feedback (" + ", ".join(names) + ") |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for m in measured:
        rows = list(m["result"])
        updates = " | ".join(angle(r.angle_update_deg) for r in rows)
        feedback = ", ".join(angle(r.angle_feedback_deg) for r in rows)
        if all(r.angle_feedback_deg is None for r in rows):
            feedback = "-"
        lines.append(f"| {m['rule']} | {100 * m['accuracy']:.2f}% | {updates} | {feedback} |")
    return lines


def plot(measured, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = row_names(measured)
    rules_ = [m["rule"] for m in measured]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(rules_)), 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [m["result"][i].angle_update_deg for m in measured]
        positions = np.arange(len(rules_)) + (i - (len(names) - 1) / 2) * width
        ax.bar(positions, np.nan_to_num(values, nan=0.0), width, label=name)
    ax.axhline(90, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(np.arange(len(rules_)), rules_, rotation=35, ha="right")
    ax.set_ylabel("angle to backprop's gradient (degrees)")
    ax.set_ylim(0, 180)
    ax.set_title("Update direction vs backprop, MLP on Fashion-MNIST after 1 epoch")
    ax.legend(ncol=len(names), fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--train-examples", type=int, default=20000)
    parser.add_argument("--examples", type=int, default=256, help="test examples of the alignment batch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rules", nargs="+", default=None)
    parser.add_argument("--output", default=os.path.join(ROOT, "zoo", "alignment.md"))
    args = parser.parse_args(argv)
    (x, y), (xt, yt) = data.load("fashion_mnist")
    train = (x[: args.train_examples], y[: args.train_examples])
    measured = []
    for rule in args.rules or rules.names():
        try:
            m = measure(rule, args, train, (xt, yt))
        except Exception as e:  # noqa: BLE001 - one rule's failure is reported, not fatal
            print(f"{rule}: FAILED {type(e).__name__}: {e}", flush=True)
            continue
        print(f"{rule}: {100 * m['accuracy']:.2f}% ({m['seconds']:.0f} s)", flush=True)
        print(m["result"].format(), flush=True)
        measured.append(m)
    png = os.path.splitext(args.output)[0] + ".png"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot(measured, png)
    command = "KERAS_BACKEND=" + keras.backend.backend() + " .venv/bin/python " + " ".join(
        ["scripts/alignment_table.py", *(sys.argv[1:] if argv is None else argv)]
    )
    text = [
        "# Alignment with backprop, every rule",
        "",
        f"The MLP `keras_local.zoo.mlp(width={args.width})` (3 blocks of {int(1024 * args.width)} "
        f"units) on Fashion-MNIST, trained for 1 epoch on the first {len(train[0])} training "
        f"examples (batch {args.batch_size}, seed {args.seed}, each rule's builder defaults), "
        "then tested on the full test set. The angles (degrees) are "
        "`keras_local.analysis.alignment` on the first "
        f"{args.examples} test examples: per block, between the rule's update and the backprop "
        "gradient of the output cross-entropy (0 = backprop's direction, 90 = orthogonal, `nan` = "
        "a zero gradient), and between each block's feedback matrix and its forward weights "
        "(rules with feedback matrices only) (associated learning has no output layer: its "
        "`output` column is its last objective's exit weights, and on this MLP with the "
        "builder's defaults it is still at chance after one epoch's 157 steps: its label "
        "autoencoder needs about 300 steps before the last exit separates the classes, and two "
        "epochs, or one at batch 32, give it 82-83%; tests/test_associated_on_any_model.py). "
        "How they are computed: "
        "[docs/analysis.md](../docs/analysis.md#how-well-does-a-rule-align-with-backprop).",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_line()}",
        "",
        *table(measured),
        "",
        f"![update angles per rule and block]({os.path.basename(png)})",
        "",
    ]
    with open(args.output, "w") as f:
        f.write("\n".join(text))
    print(f"written {args.output} and {png}")


if __name__ == "__main__":
    main()
