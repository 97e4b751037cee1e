"""Early-exit inference: every local classifier is an exit.

An example answers at the first exit whose confidence reaches a threshold,
and the blocks after that exit are not run for it.

The exits are every block whose objective has a local classifier, then the
output; `exit_index` is 0-based over the exits, not a block number. The
confidence is the largest softmax probability (or `1 - entropy / log
classes`); an example exits when it reaches the threshold, and only the
undecided examples of a batch run on. docs/export.md explains each choice.

>>> from keras_local import early_exit, rules, zoo
>>> model = zoo.mlp(layers=3, units=16, input_shape=(8, 8, 1), rule="pred")
>>> [e.name for e in early_exit.exits(model)]
['block1', 'block2', 'block3', 'output']
>>> probabilities, exit_index = early_exit.predict_early_exit(
...     model, x, threshold=0.9)  # doctest: +SKIP
"""

import collections
import dataclasses
import math
import time
import weakref

import keras
import numpy as np
from keras import ops

CRITERIA = ("max_probability", "entropy")


@dataclasses.dataclass(frozen=True)
class Exit:
    """One exit of a model.

    Attributes:
        index: its position among the exits (what `exit_index` holds).
        block: the 0-based index of the hidden block it reads.
        blocks_run: hidden blocks run by an example answering here
            (`block + 1`).
        name: `"block<i>"` (1-based, as in the logs) or `"output"`.
        head: `head(features, outputs)` returns the exit's logits.
    """

    index: int
    block: int
    blocks_run: int
    name: str
    head: object = dataclasses.field(repr=False, compare=False)


EarlyExitPrediction = collections.namedtuple(
    "EarlyExitPrediction", ["probabilities", "exit_index"]
)
EarlyExitPrediction.__doc__ = """What `predict_early_exit` returns.

Attributes:
    probabilities: `(n, num_classes)` float32, the softmax of the answering
        exit's logits.
    exit_index: `(n,)` int32, the 0-based index of the answering exit.
"""


def exits(model):
    """The exits of a `LocalModel`, in order; the last one is the output."""
    blocks = getattr(model, "hidden_blocks", None)
    if blocks is None:
        raise ValueError(
            f"Early exit needs a keras_local LocalModel; got {type(model).__name__}."
        )
    found = []
    for index, objective in enumerate(model.objectives):
        if objective is not None and objective.has_local_classifier:
            found.append((index, f"block{index + 1}", objective.predict))
    last = len(blocks) - 1
    if model.output_layer is not None:
        found.append((last, "output", model.predict_from_last_block))
    else:
        # The last objective's prediction is the network's output (`call`).
        index, _, head = found[-1]
        found[-1] = (index, "output", head)
    return [
        Exit(index=i, block=block, blocks_run=block + 1, name=name, head=head)
        for i, (block, name, head) in enumerate(found)
    ]


def blocks_run(model, exit_index):
    """The number of hidden blocks run for each example, from `exit_index`."""
    table = np.array([e.blocks_run for e in exits(model)], dtype="int32")
    return table[np.asarray(exit_index)]


def confidence(probabilities, criterion="max_probability"):
    """Per-example confidence in [0, 1] of class probabilities (keras.ops).

    `"max_probability"`: the largest probability; `"entropy"`:
    `1 - H(p) / log(num_classes)`.
    """
    check_criterion(criterion)
    if criterion == "max_probability":
        return ops.max(probabilities, axis=-1)
    num_classes = probabilities.shape[-1]
    # 0 log 0 = 0: where p is 0 the product is 0 whatever log(max(p, tiny)) is.
    logs = ops.log(ops.maximum(probabilities, 1e-30))
    # ops.multiply, not `*`: NumPy probabilities times a torch tensor fail.
    entropy = -ops.sum(ops.multiply(probabilities, logs), axis=-1)
    return 1.0 - entropy / math.log(num_classes)


def check_criterion(criterion):
    """Raises a `ValueError` unless `criterion` is one of `CRITERIA`."""
    if criterion not in CRITERIA:
        raise ValueError(
            f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}."
        )


def _check_threshold(threshold):
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}.") from None
    if math.isnan(value):
        raise ValueError("threshold must be a number, got NaN.")
    return value


def _batches(x, batch_size):
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def _as_inputs(model, x):
    x = np.asarray(x, dtype="float32")
    expected = getattr(model, "example_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(
            f"{model.name} expects inputs of shape (batch, "
            f"{', '.join(str(d) for d in expected)}); got {tuple(x.shape)}."
        )
    return x


# ------------------------------------------------------------------- eager
def _run_to(blocks, start, stop, features, h):
    for block in blocks[start : stop + 1]:
        features, h = block(h, training=False)
    return features, h


def _predict_eager(model, x, threshold, criterion):
    """One batch, eagerly, on any backend: keras.ops for the network,
    NumPy for choosing and gathering the undecided examples."""
    model_exits = exits(model)
    n = len(x)
    probabilities = np.zeros((n, model.num_classes), dtype="float32")
    exit_index = np.zeros((n,), dtype="int32")
    remaining = np.arange(n)
    features, h, start = None, ops.convert_to_tensor(x), 0
    for e in model_exits:
        features, h = _run_to(model.hidden_blocks, start, e.block, features, h)
        start = e.block + 1
        p = ops.softmax(e.head(features, h))
        if e.index == len(model_exits) - 1:
            done = np.ones(len(remaining), dtype=bool)
        else:
            done = ops.convert_to_numpy(confidence(p, criterion) >= threshold)
        probabilities[remaining[done]] = ops.convert_to_numpy(p)[done]
        exit_index[remaining[done]] = e.index
        keep = np.flatnonzero(~done)
        if keep.size == 0:
            break
        remaining = remaining[keep]
        h = ops.take(h, keep, axis=0)
        if features is not None:
            features = ops.take(features, keep, axis=0)
    return probabilities, exit_index


# -------------------------------------------------------------- TensorFlow
_COMPILED = weakref.WeakKeyDictionary()


def _cached(model, key, make):
    """`make(proxy)`'s function, made once per model and key. The function
    sees the model through a weak proxy, so the cache does not keep the
    model alive."""
    functions = _COMPILED.setdefault(model, {})
    if key not in functions:
        functions[key] = make(weakref.proxy(model))
    return functions[key]


def _require_tensorflow(what):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"{what} needs the TensorFlow backend (this is {keras.backend.backend()}). "
            "Save the model as .keras and load it with KERAS_BACKEND=tensorflow."
        )
    import tensorflow as tf

    return tf


def input_signature(model):
    """`[inputs]` as a `tf.TensorSpec` with a dynamic batch size, named
    `"inputs"`."""
    tf = _require_tensorflow("A TensorFlow input signature")
    shape = getattr(model, "example_shape", None)
    if shape is None:
        raise ValueError(f"{model.name} is not built; call it on a batch first.")
    return [tf.TensorSpec((None, *shape), tf.float32, name="inputs")]


def early_exit_graph(model, inputs, threshold, criterion="max_probability"):
    """The early-exit computation in TensorFlow graph ops, for use inside a
    `tf.function`: returns `{"probabilities", "exit_index", "blocks_run"}`.

    Each exit scatters the examples that answered into the result
    (`tf.tensor_scatter_nd_update`), gathers the others (`tf.boolean_mask`),
    and runs the rest of the network inside a `tf.cond` on whether any are
    left, so later blocks run on the undecided examples only, and not at all
    when none remain. Written without autograph (Python control flow only
    over the static list of exits), as SavedModel endpoints need.
    """
    tf = _require_tensorflow("The compiled early-exit path")
    check_criterion(criterion)
    model_exits = exits(model)
    blocks = model.hidden_blocks
    last = len(model_exits) - 1
    n = tf.shape(inputs)[0]
    threshold = tf.cast(threshold, tf.float32)

    def answer(results, index, rows, p, k):
        probabilities, exit_index = results
        rows = tf.expand_dims(index, -1) if rows is None else rows
        probabilities = tf.tensor_scatter_nd_update(probabilities, rows, p)
        exit_index = tf.tensor_scatter_nd_update(
            exit_index, rows, tf.fill(tf.shape(rows)[:1], tf.constant(k, tf.int32))
        )
        return probabilities, exit_index

    def from_exit(k, start, features, h, index, results):
        e = model_exits[k]
        features, h = _run_to(blocks, start, e.block, features, h)
        p = tf.cast(ops.softmax(e.head(features, h)), tf.float32)
        if k == last:
            return answer(results, index, None, p, k)
        done = confidence(p, criterion) >= threshold
        results = answer(
            results, None, tf.expand_dims(tf.boolean_mask(index, done), -1),
            tf.boolean_mask(p, done), k,
        )
        keep = tf.logical_not(done)
        index = tf.boolean_mask(index, keep)
        h = tf.boolean_mask(h, keep)
        # The block's features are needed only by another exit on it.
        features = (
            tf.boolean_mask(features, keep) if model_exits[k + 1].block == e.block else None
        )
        return tf.cond(
            tf.size(index) > 0,
            lambda: from_exit(k + 1, e.block + 1, features, h, index, results),
            lambda: results,
        )

    results = (
        tf.zeros(tf.stack([n, model.num_classes]), tf.float32),
        tf.zeros(tf.reshape(n, [1]), tf.int32),
    )
    probabilities, exit_index = from_exit(0, 0, None, inputs, tf.range(n), results)
    table = tf.constant([e.blocks_run for e in model_exits], tf.int32)
    return {
        "probabilities": probabilities,
        "exit_index": exit_index,
        "blocks_run": tf.gather(table, exit_index),
    }


def full_network_graph(model, inputs):
    """`{"probabilities": softmax(model(inputs))}` in inference mode."""
    return {"probabilities": ops.softmax(model(inputs, training=False))}


def tf_early_exit_function(model, criterion="max_probability"):
    """A `tf.function(inputs, threshold)` (dynamic batch size, threshold a
    float32 scalar) running `early_exit_graph`; cached per model and
    criterion. TensorFlow backend only."""
    tf = _require_tensorflow("The compiled early-exit path")
    check_criterion(criterion)
    signature = input_signature(model) + [tf.TensorSpec((), tf.float32, name="threshold")]

    def make(model):
        def early_exit(inputs, threshold):
            return early_exit_graph(model, inputs, threshold, criterion)

        return tf.function(early_exit, input_signature=signature, autograph=False)

    return _cached(model, ("early_exit", criterion), make)


def tf_full_network_function(model):
    """A `tf.function(inputs)` returning the full network's probabilities
    (`{"probabilities": ...}`); cached per model. TensorFlow backend only."""
    tf = _require_tensorflow("The compiled full network")
    signature = input_signature(model)

    def make(model):
        def full_network(inputs):
            return full_network_graph(model, inputs)

        return tf.function(full_network, input_signature=signature, autograph=False)

    return _cached(model, ("full",), make)


# -------------------------------------------------------------------- API
def predict_early_exit(
    model,
    x,
    threshold,
    criterion="max_probability",
    batch_size=256,
    compiled=None,
):
    """Early-exit predictions of a `LocalModel` on `x`.

    Each example answers at the first exit (`exits(model)`) whose confidence
    reaches `threshold`; the blocks after it are not run for that example
    (see the module docstring for mixed batches).

    Args:
        model: a built `LocalModel` (with `rules.with_probes(rule)` for rules
            without local classifiers).
        x: inputs, an array of shape `(n, *input_shape)`.
        threshold: exit when the confidence is `>= threshold`; 0 answers at
            the first exit, above 1 runs the full network.
        criterion: `"max_probability"` or `"entropy"` (see `confidence`).
        batch_size: examples per batch.
        compiled: run the compiled TensorFlow function
            (`tf_early_exit_function`); default: on the TensorFlow backend.
            Otherwise the blocks run eagerly with `keras.ops` (any backend).

    Returns:
        `EarlyExitPrediction(probabilities, exit_index)`, NumPy arrays: the
        answering exit's softmax probabilities `(n, num_classes)` and its
        0-based index among the exits `(n,)`.
    """
    check_criterion(criterion)
    threshold = _check_threshold(threshold)
    x = _as_inputs(model, x)
    if compiled is None:
        compiled = keras.backend.backend() == "tensorflow"
    parts = []
    if compiled:
        function = tf_early_exit_function(model, criterion)
        for batch in _batches(x, batch_size):
            out = function(batch, np.float32(threshold))
            parts.append((out["probabilities"].numpy(), out["exit_index"].numpy()))
    else:
        for batch in _batches(x, batch_size):
            parts.append(_predict_eager(model, batch, threshold, criterion))
    if not parts:
        return EarlyExitPrediction(
            np.zeros((0, model.num_classes), "float32"), np.zeros((0,), "int32")
        )
    return EarlyExitPrediction(
        np.concatenate([p for p, _ in parts]), np.concatenate([i for _, i in parts])
    )


def exit_probabilities(model, x, batch_size=256):
    """Every exit's softmax probabilities on every example, from one pass
    through the whole network: an array `(num_exits, n, num_classes)`.

    What the early-exit path answers at any threshold follows from it
    (`decide`), which makes a sweep over thresholds cheap.
    """
    x = _as_inputs(model, x)
    num_exits = len(exits(model))

    def make(model):
        def all_exits(inputs):
            features, h, start, out = None, inputs, 0, []
            for e in exits(model):
                features, h = _run_to(model.hidden_blocks, start, e.block, features, h)
                start = e.block + 1
                out.append(ops.softmax(e.head(features, h)))
            return ops.stack(out)

        if keras.backend.backend() != "tensorflow":
            return all_exits
        import tensorflow as tf

        return tf.function(all_exits, input_signature=input_signature(model), autograph=False)

    function = _cached(model, ("all_exits",), make)
    parts = [ops.convert_to_numpy(function(batch)) for batch in _batches(x, batch_size)]
    if not parts:
        return np.zeros((num_exits, 0, model.num_classes), "float32")
    return np.concatenate(parts, axis=1)


def decide(probabilities, threshold, criterion="max_probability"):
    """What early exit answers, from every exit's probabilities
    (`exit_probabilities`): `EarlyExitPrediction(probabilities,
    exit_index)`, the first exit whose confidence is `>= threshold`, else
    the last."""
    check_criterion(criterion)
    threshold = _check_threshold(threshold)
    probabilities = np.asarray(probabilities, dtype="float32")
    num_exits, n = probabilities.shape[:2]
    confident = np.asarray(confidence(probabilities, criterion)) >= threshold
    confident[-1] = True
    exit_index = np.argmax(confident, axis=0).astype("int32")
    return EarlyExitPrediction(probabilities[exit_index, np.arange(n)], exit_index)


def report(
    model,
    x,
    y,
    thresholds,
    criterion="max_probability",
    batch_size=256,
    timing_examples=1024,
    repeats=3,
):
    """Accuracy and compute of early exit at each threshold.

    Accuracy, exits and blocks run are those of the early-exit path on all of
    `x` (computed from one pass that records every exit, `decide`); the wall
    time is measured by running the early-exit path itself (compiled on
    TensorFlow) on the first `timing_examples` examples in batches of
    `batch_size`, the median of `repeats` runs after a warm-up. The full
    network is timed the same way (`tf_full_network_function`), round-robin
    with the thresholds so that a shared machine's drift hits all alike.

    Returns:
        A dict: `"exits"` (name and blocks run of each), `"num_blocks"`,
        `"full_network"` (accuracy, seconds per example), and `"rows"`, one
        per threshold: `threshold`, `accuracy`, `mean_blocks`,
        `block_fraction` (mean blocks / number of blocks), `exit_fractions`
        (share of examples answering at each exit), `seconds_per_example`,
        `time_fraction` (of the full network's).
    """
    check_criterion(criterion)
    x = _as_inputs(model, x)
    y = np.asarray(y).reshape(-1)
    model_exits = exits(model)
    num_blocks = len(model.hidden_blocks)
    all_probabilities = exit_probabilities(model, x, batch_size)
    full_accuracy = float(np.mean(np.argmax(all_probabilities[-1], -1) == y))

    timed = x[: max(1, min(len(x), timing_examples))]
    tensorflow = keras.backend.backend() == "tensorflow"
    if tensorflow:
        full = tf_full_network_function(model)

        def run_full():
            for batch in _batches(timed, batch_size):
                full(batch)["probabilities"].numpy()
    else:

        def run_full():
            for batch in _batches(timed, batch_size):
                ops.convert_to_numpy(model(batch, training=False))

    def run_early(threshold):
        return lambda: predict_early_exit(model, timed, threshold, criterion, batch_size)

    # Round-robin: the full network and every threshold once per round, so a
    # shared machine's drift hits them alike; the median of the rounds.
    cases = [run_full] + [run_early(threshold) for threshold in thresholds]
    for case in cases:
        case()  # warm-up (tracing)
    times = [[] for _ in cases]
    for _ in range(repeats):
        for case, spent in zip(cases, times):
            start = time.perf_counter()
            case()
            spent.append(time.perf_counter() - start)
    seconds_each = [float(np.median(spent)) / len(timed) for spent in times]
    full_seconds = seconds_each[0]

    rows = []
    for threshold, seconds in zip(thresholds, seconds_each[1:]):
        _, exit_index = decide(all_probabilities, threshold, criterion)
        chosen = all_probabilities[exit_index, np.arange(len(x))]
        counts = np.bincount(exit_index, minlength=len(model_exits))
        mean_blocks = float(np.mean(blocks_run(model, exit_index)))
        rows.append(
            {
                "threshold": float(threshold),
                "accuracy": float(np.mean(np.argmax(chosen, -1) == y)),
                "mean_blocks": mean_blocks,
                "block_fraction": mean_blocks / num_blocks,
                "exit_fractions": [float(c) / len(x) for c in counts],
                "seconds_per_example": seconds,
                "time_fraction": seconds / full_seconds,
            }
        )
    return {
        "criterion": criterion,
        "num_examples": len(x),
        "timing_examples": len(timed),
        "batch_size": batch_size,
        "backend": keras.backend.backend(),
        "compiled": tensorflow,
        "num_blocks": num_blocks,
        "exits": [{"name": e.name, "blocks_run": e.blocks_run} for e in model_exits],
        "full_network": {"accuracy": full_accuracy, "seconds_per_example": full_seconds},
        "rows": rows,
    }


def format_report(result):
    """The lines of a text table of `report`'s result."""
    names = [e["name"] for e in result["exits"]]
    full = result["full_network"]
    lines = [
        f"{'threshold':>9s} {'accuracy':>8s} {'blocks':>6s} {'of all':>6s} "
        f"{'ms/example':>10s} {'time':>5s}  exited at " + " ".join(f"{n:>7s}" for n in names)
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['threshold']:9.3f} {100 * row['accuracy']:7.2f}% {row['mean_blocks']:6.2f} "
            f"{100 * row['block_fraction']:5.1f}% {1000 * row['seconds_per_example']:10.3f} "
            f"{100 * row['time_fraction']:4.0f}%  {'':9s} "
            + " ".join(f"{100 * f:6.1f}%" for f in row["exit_fractions"])
        )
    lines.append(
        f"{'full net':>9s} {100 * full['accuracy']:7.2f}% {result['num_blocks']:6.2f} "
        f"{100.0:5.1f}% {1000 * full['seconds_per_example']:10.3f} {100:4.0f}%"
    )
    return lines


def plot_report(result, path, title=None):
    """Writes a PNG: accuracy (left axis) and compute (mean share of blocks
    run, and wall time as a share of the full network's; right axis)
    against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    thresholds = [r["threshold"] for r in rows]
    figure, accuracy_axis = plt.subplots(figsize=(7, 5))
    accuracy_axis.plot(
        thresholds, [100 * r["accuracy"] for r in rows], "o-", color="tab:blue",
        label="early-exit accuracy",
    )
    accuracy_axis.axhline(
        100 * result["full_network"]["accuracy"], color="tab:blue", linestyle=":",
        label="full network accuracy",
    )
    accuracy_axis.set_xlabel(f"threshold ({result['criterion'].replace('_', ' ')})")
    accuracy_axis.set_ylabel("test accuracy (%)", color="tab:blue")
    compute_axis = accuracy_axis.twinx()
    compute_axis.plot(
        thresholds, [100 * r["block_fraction"] for r in rows], "s--", color="tab:red",
        label="mean blocks run (% of all)",
    )
    compute_axis.plot(
        thresholds, [100 * r["time_fraction"] for r in rows], "^-.", color="tab:orange",
        label="wall time (% of full network)",
    )
    compute_axis.set_ylabel("compute (% of the full network)", color="tab:red")
    compute_axis.set_ylim(0, max(105, *(100 * r["time_fraction"] for r in rows)))
    handles = accuracy_axis.get_legend_handles_labels()
    more = compute_axis.get_legend_handles_labels()
    if title:
        accuracy_axis.set_title(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.legend(
        handles[0] + more[0], handles[1] + more[1], loc="lower center", ncol=2, fontsize=8,
        frameon=False,
    )
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
