"""`keras_local.analysis`: class distances (Kao & Chen, Table 4), layer
activations, t-SNE plots and `keras-local analyze`."""

import json
import math

import keras
import numpy as np
import pytest

from keras_local import analysis
from keras_local import cli
from keras_local import zoo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _brute_force_distances(features, labels):
    """The paper's definitions with plain loops: (intra, inter, ratio)."""
    features = [np.asarray(f, np.float64).reshape(-1) for f in features]
    labels = list(labels)
    classes = sorted(set(labels))
    intra_per_class, centroids = [], []
    for label in classes:
        members = [f for f, y in zip(features, labels) if y == label]
        distances = [
            math.sqrt(sum((a - b) ** 2 for a, b in zip(members[i], members[j])))
            for i in range(len(members))
            for j in range(len(members))
            if i != j
        ]
        intra_per_class.append(sum(distances) / len(distances))
        centroids.append([sum(column) / len(members) for column in zip(*members)])
    between = [
        math.sqrt(sum((a - b) ** 2 for a, b in zip(centroids[i], centroids[j])))
        for i in range(len(centroids))
        for j in range(i + 1, len(centroids))
    ]
    intra = sum(intra_per_class) / len(intra_per_class)
    inter = sum(between) / len(between)
    return intra, inter, inter / intra


def _clusters(spread, separation, n_per_class=20, num_classes=3, dims=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = separation * np.eye(num_classes, dims)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    features = centers[labels] + spread * rng.normal(size=(len(labels), dims))
    return features.astype("float32"), labels


# ------------------------------------------------------------------ class_distances
def test_hand_computed_two_classes():
    # Class 0: (0,0), (0,2), (2,0): pair distances 2, 2, 2*sqrt(2), centroid (2/3, 2/3).
    # Class 1: (10,0), (10,4): distance 4, centroid (10, 2).
    features = np.array([[0, 0], [0, 2], [2, 0], [10, 0], [10, 4]], np.float32)
    labels = [0, 0, 0, 1, 1]
    distances = analysis.class_distances(features, labels)
    intra_0 = (2 + 2 + 2 * math.sqrt(2)) / 3
    expected_intra = (intra_0 + 4) / 2
    expected_inter = math.hypot(10 - 2 / 3, 2 - 2 / 3)
    assert distances.per_class_intra == pytest.approx({0: intra_0, 1: 4.0})
    assert distances.intra == pytest.approx(expected_intra, rel=1e-12)
    assert distances.inter == pytest.approx(expected_inter, rel=1e-12)
    assert distances.ratio == pytest.approx(expected_inter / expected_intra, rel=1e-12)
    assert distances.num_examples == 5


def test_matches_brute_force_and_flattens(monkeypatch):
    rng = np.random.default_rng(3)
    features = rng.normal(size=(23, 2, 3)).astype("float32") * 5 + 100  # far from 0
    labels = rng.permutation(np.arange(23) % 4)
    monkeypatch.setattr(analysis, "_CHUNK_ROWS", 2)  # several chunks per class
    distances = analysis.class_distances(features, labels, max_examples=None)
    intra, inter, ratio = _brute_force_distances(features, labels)
    assert distances.intra == pytest.approx(intra, rel=1e-9)
    assert distances.inter == pytest.approx(inter, rel=1e-9)
    assert distances.ratio == pytest.approx(ratio, rel=1e-9)
    # One-hot labels mean the same classes.
    one_hot = np.eye(4)[labels]
    assert analysis.class_distances(features, one_hot, max_examples=None) == distances


def test_separated_clusters_have_a_larger_ratio():
    separated = analysis.class_distances(*_clusters(spread=0.5, separation=10))
    overlapping = analysis.class_distances(*_clusters(spread=0.5, separation=0.5))
    assert separated.ratio > 5 * overlapping.ratio
    assert separated.intra == pytest.approx(overlapping.intra, rel=0.05)  # same spread


def test_subset_is_stratified_and_fixed():
    labels = np.repeat([0, 1, 2], [300, 100, 3])
    subset = analysis.stratified_subset(labels, max_examples=40, seed=1)
    assert np.array_equal(subset, analysis.stratified_subset(labels, 40, seed=1))
    assert np.bincount(labels[subset]).tolist() == [29, 9, 2]  # at least 2 per class
    assert len(analysis.stratified_subset(labels, None)) == len(labels)
    features, labels = _clusters(spread=1.0, separation=3, n_per_class=100)
    subsampled = analysis.class_distances(features, labels, max_examples=60)
    full = analysis.class_distances(features, labels, max_examples=None)
    assert subsampled.num_examples == 60 and full.num_examples == 300
    assert subsampled.inter == full.inter  # centroids use every example
    assert subsampled.intra == pytest.approx(full.intra, rel=0.1)


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 0, 1], "same length; got 4 features and 3 labels"),
        ([1, 1, 1, 1], "at least 2 classes; got 1"),
        ([0, 0, 0, 1], "class 1 has only 1"),
    ],
)
def test_bad_inputs_are_reported(labels, message):
    with pytest.raises(ValueError, match=message):
        analysis.class_distances(np.zeros((4, 3)), labels)


# ----------------------------------------------------------------- layer activations
@pytest.fixture(scope="module")
def tiny_mlp():
    return zoo.mlp(layers=2, units=8, input_shape=(28, 28, 1), dropout=0.5)


def test_layer_activations_shapes_and_values(tiny_mlp):
    x = np.random.default_rng(0).normal(size=(10, 28, 28, 1)).astype("float32")
    block1 = analysis.layer_activations(tiny_mlp, x, 1, batch_size=4)
    assert block1.shape == (10, 8) and isinstance(block1, np.ndarray)
    manual = np.asarray(tiny_mlp.hidden_blocks[0](x, training=False)[0])
    np.testing.assert_allclose(block1, manual, rtol=1e-5, atol=1e-6)
    assert analysis.layer_activations(tiny_mlp, x, "block2", batch_size=4).shape == (10, 8)
    logits = analysis.layer_activations(tiny_mlp, x, "output", batch_size=3)
    np.testing.assert_allclose(
        logits, np.asarray(tiny_mlp(x, training=False)), rtol=1e-5, atol=1e-6
    )
    assert analysis.layer_activations(tiny_mlp, x, "input") is not None
    np.testing.assert_array_equal(analysis.layer_activations(tiny_mlp, x, "input"), x)
    both = analysis.activations(tiny_mlp, x, [2, "output"])
    np.testing.assert_allclose(both["output"], logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 3, "block7", "logits", True])
def test_bad_layer_lists_the_choices(tiny_mlp, layer):
    with pytest.raises(ValueError, match=r"Valid choices: 'input', 1 to 2 .*'output'"):
        analysis.layer_activations(tiny_mlp, np.zeros((2, 28, 28, 1)), layer)


# ----------------------------------------------------------------------------- t-SNE
def test_tsne_plot_writes_a_png(tmp_path):
    import matplotlib.image

    features, labels = _clusters(spread=0.5, separation=5, n_per_class=20)
    path = tmp_path / "plots" / "tsne.png"
    result = analysis.tsne_plot(
        features, labels, path, title="clusters", class_names=["a", "b", "c"]
    )
    assert result == path
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


# ------------------------------------------------------------------------------- CLI
def _main(capsys, *argv):
    try:
        status = cli.main(list(argv))
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_analyze(tmp_path, capsys, fashion_mnist):
    model_path = tmp_path / "tiny.keras"
    zoo.mlp(layers=2, units=8, input_shape=(28, 28, 1)).save(model_path)
    # The data set comes from the summary `train` writes beside the model.
    (tmp_path / "tiny.keras.json").write_text(
        json.dumps({"parameters": {"dataset": "fashion_mnist"}})
    )
    tsne_path = tmp_path / "docs" / "block2.png"
    status, out, err = _main(
        capsys, "analyze", str(model_path), "--layers", "input", "1", "block2", "output",
        "--examples", "120", "--tsne-layer", "2", "--tsne-out", str(tsne_path),
    )  # fmt: skip
    assert status in (0, None), err
    assert "on 120 test examples of fashion_mnist" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:6]}
    assert list(rows) == ["input", "block1", "block2", "output"]
    for layer in ("input", "block1", "block2"):
        assert all(float(value) > 0 for value in rows[layer])
    # Untrained, the output layer's kernel is zero (local rules): all logits equal.
    assert [float(value) for value in rows["output"][:2]] == [0, 0]
    assert rows["output"][2] == "nan"
    # The printed numbers are those of `analysis.report` on the same subset.
    model = keras.saving.load_model(model_path, compile=False)
    _, (x_test, y_test) = fashion_mnist
    [row] = analysis.report(model, x_test, y_test, ["block2"], max_examples=120)
    assert row["layer"] == "block2"
    assert rows["block2"] == f"{row['inter']:.4g} {row['intra']:.4g} {row['ratio']:.3f}".split()
    assert tsne_path.read_bytes()[:8] == PNG_MAGIC
    assert f"t-SNE of block2 written to {tsne_path}" in out

    status, _, err = _main(capsys, "analyze", str(model_path), "--layers", "5")
    assert status == 2
    assert "Unknown layer '5'" in err and "Valid choices" in err
