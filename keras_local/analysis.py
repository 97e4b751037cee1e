"""Representation quality of a trained network's layers.

The measures of Kao & Chen, "Associated Learning" (section 3.2, Table 4 and
Figures 3-4): how well each layer's activations separate the classes,

- the intra-class distance: for every class k, `d_k^intra`, the average
  Euclidean distance between two distinct examples of class k, averaged over
  the classes;
- the inter-class distance: the average Euclidean distance between two
  distinct class centroids;
- their ratio `inter / intra` (the paper's "Inter:Intra ratio"; higher means
  better separated classes),

and a t-SNE picture of a layer's activations, one colour per class.

>>> from keras_local import analysis
>>> features = analysis.layer_activations(model, x_test, layer=2)  # doctest: +SKIP
>>> analysis.class_distances(features, y_test)  # doctest: +SKIP
ClassDistances(intra=..., inter=..., ratio=..., ...)
>>> analysis.tsne_plot(features, y_test, "docs/block2.png")  # doctest: +SKIP

The command line does the same for a saved model:

    keras-local analyze MODEL.keras --dataset fashion_mnist --layers 1 2 output \\
        --tsne-layer 2 --tsne-out docs/block2.png
"""

import dataclasses
import os

import numpy as np

from keras_local import optional
from keras_local.alignment import alignment  # noqa: F401 - re-exported

#: Default number of examples the measures are computed on (a fixed-seed,
#: stratified subset): pairwise distances cost O(n^2) per class.
DEFAULT_MAX_EXAMPLES = 2000

#: Class names of the data sets whose t-SNE legends can name their classes.
CLASS_NAMES = {
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "mnist": tuple(str(digit) for digit in range(10)),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
}  # fmt: skip

# Rows of one class's distance matrix computed at a time: at most
# _CHUNK_ROWS x (examples in the class) float64 values are held at once.
_CHUNK_ROWS = 256


@dataclasses.dataclass(frozen=True)
class ClassDistances:
    """Intra- and inter-class distances of a set of features.

    Attributes:
        intra: the mean over classes of `d_k^intra`, the average Euclidean
            distance between two distinct examples of class k.
        inter: the average Euclidean distance between two distinct class
            centroids.
        ratio: `inter / intra`, the paper's "Inter:Intra ratio" (higher means
            better separated classes); `inf` when every class is a single
            point, `nan` when all examples coincide.
        per_class_intra: `{class id: d_k^intra}`.
        num_examples: examples the intra-class distances were computed on
            (after subsampling to `max_examples`).
    """

    intra: float
    inter: float
    ratio: float
    per_class_intra: dict
    num_examples: int

    def as_dict(self):
        """`{"intra", "inter", "ratio"}` as plain floats."""
        return {"intra": self.intra, "inter": self.inter, "ratio": self.ratio}


def _flatten(features):
    features = np.asarray(features)
    if features.ndim == 0:
        raise ValueError("features must have a batch axis; got a scalar.")
    return features.reshape(len(features), -1)


def _class_ids(labels, num_examples):
    """Integer class ids of shape `(N,)`; one-hot labels are argmax-ed."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1)
    if len(labels) != num_examples:
        raise ValueError(
            f"features and labels must have the same length; got {num_examples} "
            f"features and {len(labels)} labels."
        )
    return labels


def stratified_subset(labels, max_examples=DEFAULT_MAX_EXAMPLES, seed=0):
    """Indices of a fixed-seed random subset with every class in proportion.

    Each class keeps `floor(max_examples * n_k / N)` of its `n_k` examples,
    but at least 2 (all of them when it has fewer), so small classes stay
    measurable. The indices are sorted.

    Args:
        labels: integer class ids, shape `(N,)` (one-hot labels are
            argmax-ed).
        max_examples: about how many examples to keep; `None` or at least
            `N` keeps all.
        seed: seed of the random choice.

    Returns:
        A sorted int64 array of indices into `labels`.

    Example:

    >>> stratified_subset(np.repeat([0, 1], 50), max_examples=10)
    array([13, 15, 24, 29, 39, 74, 80, 87, 93, 99])
    """
    labels = _class_ids(labels, len(np.asarray(labels)))
    total = len(labels)
    if max_examples is None or max_examples >= total:
        return np.arange(total)
    if max_examples < 1:
        raise ValueError(f"max_examples must be a positive integer, got {max_examples}.")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(len(members), max(2, (max_examples * len(members)) // total))
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def _mean_pairwise_distance(points):
    """Average Euclidean distance between two distinct rows of `points`
    (float64), the distance matrix computed `_CHUNK_ROWS` rows at a time."""
    points = points - points.mean(axis=0)  # distances unchanged, less rounding
    squared_norms = np.einsum("ij,ij->i", points, points)
    total = 0.0
    count = len(points)
    for start in range(0, count, _CHUNK_ROWS):
        rows = points[start : start + _CHUNK_ROWS]
        squared = (
            squared_norms[start : start + len(rows), None]
            + squared_norms[None, :]
            - 2.0 * rows @ points.T
        )
        np.maximum(squared, 0.0, out=squared)
        # The diagonal is exactly zero; rounding would otherwise leave sqrt(eps).
        squared[np.arange(len(rows)), np.arange(start, start + len(rows))] = 0.0
        total += np.sqrt(squared).sum()
    return total / (count * (count - 1))


def class_distances(features, labels, max_examples=DEFAULT_MAX_EXAMPLES, seed=0):
    """Intra-class and inter-class distances and their ratio.

    As in Kao & Chen's Table 4: `intra` is the mean over classes k of
    `d_k^intra`, the average Euclidean distance between two distinct examples
    of class k; `inter` is the average Euclidean distance between two
    distinct class centroids; `ratio = inter / intra` (higher is better).
    Features of any rank are flattened per example.

    The intra-class distances cost O(n_k^2) per class, so they are computed
    on a fixed-seed stratified subset of at most about `max_examples`
    examples (`stratified_subset`), in float64, a block of rows of the
    distance matrix at a time. The centroids are cheap and use every example.

    Args:
        features: array `(N, ...)`, e.g. from `layer_activations`.
        labels: integer class ids `(N,)` (one-hot labels are argmax-ed).
        max_examples: subsample to about this many examples for the
            intra-class distances; `None` uses all of them.
        seed: seed of the subsample.

    Returns:
        A `ClassDistances` with `intra`, `inter`, `ratio`,
        `per_class_intra` and `num_examples`.

    Raises:
        ValueError: if `features` and `labels` differ in length, there are
            fewer than 2 classes, or a class has fewer than 2 examples.

    Example:

    >>> features = np.array([[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0]])
    >>> distances = class_distances(features, [0, 0, 1, 1])
    >>> distances.intra, distances.inter, distances.ratio
    (2.0, 4.0, 2.0)
    """
    features = _flatten(features)
    labels = _class_ids(labels, len(features))
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"class_distances needs at least 2 classes; got {len(classes)} "
            f"({', '.join(map(str, classes)) or 'no labels'})."
        )
    if counts.min() < 2:
        lonely = [str(c) for c, n in zip(classes, counts) if n < 2]
        raise ValueError(
            "Every class needs at least 2 examples for an intra-class distance; "
            f"class {', '.join(lonely)} has only 1."
        )

    centroids = np.stack(
        [features[labels == label].mean(axis=0, dtype=np.float64) for label in classes]
    )
    centroid_distances = [
        np.linalg.norm(centroids[i + 1 :] - centroids[i], axis=1)
        for i in range(len(classes) - 1)
    ]
    inter = float(np.concatenate(centroid_distances).mean())

    subset = stratified_subset(labels, max_examples, seed)
    sub_features, sub_labels = features[subset], labels[subset]
    per_class_intra = {
        label.item(): float(
            _mean_pairwise_distance(sub_features[sub_labels == label].astype(np.float64))
        )
        for label in classes
    }
    intra = float(np.mean(list(per_class_intra.values())))
    if intra > 0:
        ratio = inter / intra
    else:  # every class collapsed to a point: perfectly separated, or all alike
        ratio = float("inf") if inter > 0 else float("nan")
    return ClassDistances(intra, inter, ratio, per_class_intra, len(subset))


# --------------------------------------------------------------------------------------
# Activations


def resolve_layer(model, layer):
    """A layer of a `LocalModel` in canonical form.

    Args:
        model: a `keras_local.LocalModel`.
        layer: `"input"`, `"output"`, a 1-based block index (an int or its
            text, `2` or `"2"`) or a block name (`"block2"`).

    Returns:
        `"input"`, `"output"` or the block index as an int.

    Raises:
        ValueError: for a layer the model does not have; the message lists
            the valid choices.
    """
    _check_model(model)
    num_blocks = len(model.hidden_blocks)
    resolved = layer
    if isinstance(layer, str):
        text = layer.strip().lower()
        if text.startswith("block"):
            text = text[len("block") :]
        if text.isdigit():
            resolved = int(text)
        elif text in ("input", "output"):
            resolved = text
    if isinstance(resolved, (int, np.integer)) and not isinstance(resolved, bool):
        if 1 <= resolved <= num_blocks:
            return int(resolved)
    elif resolved in ("input", "output"):
        return resolved
    raise ValueError(
        f"Unknown layer {layer!r} for {model.name}, which has {num_blocks} hidden "
        f"blocks. Valid choices: 'input', 1 to {num_blocks} (or 'block1' to "
        f"'block{num_blocks}'), 'output'."
    )


def layer_name(layer):
    """A resolved layer's display name: `"block2"`, `"input"`, `"output"`."""
    return f"block{layer}" if isinstance(layer, int) else layer


def _check_model(model):
    if not hasattr(model, "hidden_blocks"):
        raise ValueError(
            "Layer activations need a keras_local LocalModel (with `hidden_blocks`); "
            f"got {type(model).__name__}."
        )


def activations(model, x, layers, batch_size=256):
    """Several layers' activations from one inference pass over `x`.

    Args:
        model: a `keras_local.LocalModel`.
        x: inputs, an array `(N, ...)`.
        layers: a list of layers, as for `layer_activations`.
        batch_size: examples per forward pass.

    Returns:
        `{layer: numpy array (N, ...)}`, keyed by the layers as given.
    """
    from keras import ops

    _check_model(model)
    resolved = {layer: resolve_layer(model, layer) for layer in layers}
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    x = np.asarray(x)
    wanted = set(resolved.values())
    deepest = len(model.hidden_blocks) if "output" in wanted else max(
        [index for index in wanted if isinstance(index, int)], default=0
    )
    pieces = {index: [] for index in wanted if index != "input"}
    for start in range(0, len(x), batch_size):
        outputs = x[start : start + batch_size]
        for index, block in enumerate(model.hidden_blocks[:deepest], start=1):
            features, outputs = block(outputs, training=False)
            if index in pieces:
                pieces[index].append(ops.convert_to_numpy(features))
        if "output" in pieces:
            pieces["output"].append(
                ops.convert_to_numpy(model.predict_from_last_block(features, outputs))
            )
    results = {}
    for layer, index in resolved.items():
        if index == "input":
            results[layer] = x
        elif pieces[index]:
            results[layer] = np.concatenate(pieces[index])
        else:  # no examples
            results[layer] = np.zeros((0,), np.float32)
    return results


def layer_activations(model, x, layer, batch_size=256):
    """The activations of one layer of a `LocalModel`, in inference mode.

    For hidden block `i` (1-based, the block named `block<i>`) these are the
    features the block's local heads read: the first element of
    `block(inputs, training=False)`, which returns `(features, outputs)`
    (before dropout and pooling). `"output"` gives the logits, as
    `model(x, training=False)`; `"input"` gives `x` itself.

    Args:
        model: a `keras_local.LocalModel`.
        x: inputs, an array `(N, ...)`.
        layer: `"input"`, a block index `1..len(model.hidden_blocks)` (or
            `"block<i>"`), or `"output"`.
        batch_size: examples per forward pass.

    Returns:
        A numpy array `(N, ...)`.

    Raises:
        ValueError: for a layer the model does not have; the message lists
            the valid choices.

    Example:

    >>> model = keras_local.zoo.mlp(layers=2, units=8, input_shape=(28, 28, 1))
    >>> layer_activations(model, x_test[:100], layer=2).shape  # doctest: +SKIP
    (100, 8)
    >>> layer_activations(model, x_test[:100], "output").shape  # doctest: +SKIP
    (100, 10)
    """
    return activations(model, x, [layer], batch_size)[layer]


# --------------------------------------------------------------------------------------
# t-SNE


def _require(module):
    """Imports an optional package of the t-SNE plots, or says to install
    `keras-local[analysis]`."""
    return optional.require(module, extra="analysis", feature="t-SNE plots (keras_local.analysis)")


def _class_colors(num_classes):
    _require("matplotlib")
    from matplotlib import colormaps

    if num_classes <= 10:
        return [colormaps["tab10"](i) for i in range(num_classes)]
    if num_classes <= 20:
        return [colormaps["tab20"](i) for i in range(num_classes)]
    return [colormaps["turbo"](i / (num_classes - 1)) for i in range(num_classes)]


def tsne_embedding(features, seed=0, perplexity=30.0):
    """A 2-D t-SNE embedding (scikit-learn, PCA initialisation, fixed seed).

    Args:
        features: array `(N, ...)`, flattened per example.
        seed: `random_state` of the t-SNE.
        perplexity: t-SNE perplexity; lowered to `N - 1` for fewer examples.

    Returns:
        A float array `(N, 2)`.
    """
    _require("sklearn")
    from sklearn.manifold import TSNE

    features = _flatten(features).astype(np.float32)
    if len(features) < 3:
        raise ValueError(f"t-SNE needs at least 3 examples, got {len(features)}.")
    tsne = TSNE(
        n_components=2,
        perplexity=min(float(perplexity), len(features) - 1.0),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    return tsne.fit_transform(features)


def tsne_plot(
    features,
    labels,
    path,
    *,
    title=None,
    max_examples=DEFAULT_MAX_EXAMPLES,
    seed=0,
    perplexity=30,
    class_names=None,
):
    """Saves a t-SNE scatter plot of features, one colour per class, as a PNG.

    As the paper's Figures 3 and 4. At most about `max_examples` examples are
    embedded (a fixed-seed stratified subset, `stratified_subset`). Drawn
    with matplotlib's Agg canvas, so no display is needed and pyplot's state
    is left alone.

    Args:
        features: array `(N, ...)`, flattened per example.
        labels: integer class ids `(N,)` (one-hot labels are argmax-ed).
        path: where to write the PNG; missing parent directories are made.
        title: the plot's title.
        max_examples: embed about this many examples; `None` embeds all.
        seed: seed of the subset and of the t-SNE.
        perplexity: t-SNE perplexity (lowered for tiny sets).
        class_names: legend labels indexed by class id (default: the ids).

    Returns:
        `path`.

    Example:

    >>> features = layer_activations(model, x_test, layer=2)  # doctest: +SKIP
    >>> tsne_plot(features, y_test, "docs/block2.png", title="block2",
    ...           class_names=CLASS_NAMES["fashion_mnist"])  # doctest: +SKIP
    'docs/block2.png'
    """
    _require("matplotlib")
    _require("sklearn")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    features = _flatten(features)
    labels = _class_ids(labels, len(features))
    subset = stratified_subset(labels, max_examples, seed)
    features, labels = features[subset], labels[subset]
    embedding = tsne_embedding(features, seed=seed, perplexity=perplexity)

    classes = np.unique(labels)
    colors = _class_colors(len(classes))
    figure = Figure(figsize=(7, 6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for color, label in zip(colors, classes):
        points = embedding[labels == label]
        name = str(label)
        if class_names is not None and 0 <= label < len(class_names):
            name = str(class_names[label])
        axes.scatter(points[:, 0], points[:, 1], s=6, color=color, label=name, alpha=0.8)
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title)
    axes.legend(
        loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False,
        fontsize="small",
    )  # fmt: skip
    figure.tight_layout()
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path


# --------------------------------------------------------------------------------------
# Report


def report(
    model,
    x,
    y,
    layers=None,
    *,
    batch_size=256,
    max_examples=DEFAULT_MAX_EXAMPLES,
    seed=0,
):
    """Class distances of several layers of a model, one row per layer.

    The inputs are first cut to a fixed-seed stratified subset of about
    `max_examples` examples (so the network runs on those only), then every
    layer's activations are measured with `class_distances`.

    Args:
        model: a `keras_local.LocalModel`.
        x: inputs `(N, ...)`.
        y: integer class ids `(N,)`.
        layers: layers as for `layer_activations`; default every hidden
            block and the output.
        batch_size: examples per forward pass.
        max_examples: about how many examples to use; `None` uses all.
        seed: seed of the subset.

    Returns:
        A list of dicts `{"layer", "intra", "inter", "ratio"}`, `"layer"`
        being `"input"`, `"block<i>"` or `"output"`.

    Example:

    >>> for row in report(model, x_test, y_test, [1, 2, "output"]):  # doctest: +SKIP
    ...     print(row["layer"], row["ratio"])
    """
    _check_model(model)
    if layers is None:
        layers = [*range(1, len(model.hidden_blocks) + 1), "output"]
    labels = _class_ids(y, len(x))
    subset = stratified_subset(labels, max_examples, seed)
    x, labels = np.asarray(x)[subset], labels[subset]
    features = activations(model, x, layers, batch_size)
    rows = []
    for layer in layers:
        distances = class_distances(features[layer], labels, max_examples=None)
        rows.append(
            {"layer": layer_name(resolve_layer(model, layer)), **distances.as_dict()}
        )
    return rows


def format_report(rows):
    """The rows of `report` as a text table (a list of lines)."""
    width = max([len("layer"), *(len(row["layer"]) for row in rows)])
    lines = [f"{'layer':{width}s}  {'inter':>10s}  {'intra':>10s}  {'inter:intra':>11s}"]
    for row in rows:
        lines.append(
            f"{row['layer']:{width}s}  {row['inter']:10.4g}  {row['intra']:10.4g}  "
            f"{row['ratio']:11.3f}"
        )
    return lines
