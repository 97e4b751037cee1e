"""Export (`keras_local.export`): the SavedModel's two signatures, loaded in a
fresh Python that cannot import keras_local (or Keras); ONNX in onnxruntime;
a model trained on JAX exported on TensorFlow from its `.keras` file.

The fresh process is `python -I` (isolated: no PYTHONPATH, no user site, no
script directory or cwd on the path) started from a temporary directory, and
it puts `None` in `sys.modules` for `keras_local` and `keras` before
importing TensorFlow, so any import of them fails there: the venv has
keras_local installed (editable), so only blocking the import makes "not
installed" certain. The script checks that both imports do fail.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from keras_local import cli
from keras_local import early_exit
from keras_local import export
from keras_local import rules
from keras_local import zoo
from tests.conftest import random_batch
from tests.conftest import tiny_conv_model
from tests.test_early_exit import confident_heads
from tests.test_early_exit import mixed_threshold

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="export runs on the TensorFlow backend"
)
BIN = os.path.dirname(sys.executable)

SERVE = textwrap.dedent(
    """
    import sys
    sys.modules["keras_local"] = None  # as if not installed
    sys.modules["keras"] = None
    for name in ("keras_local", "keras"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(name + " is importable")
    import numpy as np
    import tensorflow as tf

    export_dir, data = sys.argv[1], np.load(sys.argv[2])
    served = tf.saved_model.load(export_dir)
    print(sorted(served.signatures))
    x = tf.constant(data["x"])
    out = {"serving_default": served.signatures["serving_default"](inputs=x)["probabilities"]}
    for name in data.files:
        if name.startswith("threshold_"):
            result = served.signatures["early_exit"](inputs=x, threshold=tf.constant(data[name]))
            for key, value in result.items():
                out[f"{name}/{key}"] = value
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
    assert "keras_local" not in [m for m, v in sys.modules.items() if v is not None]
    """
)


def serve_in_fresh_python(export_dir, x, thresholds, tmp_path):
    """Runs the SavedModel's signatures in `python -I` without keras_local;
    returns `(signature names, outputs)`."""
    data = tmp_path / "inputs.npz"
    np.savez(data, x=x, **{f"threshold_{i}": np.float32(t) for i, t in enumerate(thresholds)})
    out = tmp_path / "outputs.npz"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KERAS"))}
    done = subprocess.run(
        [sys.executable, "-I", "-c", SERVE, os.path.abspath(export_dir), str(data), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    names = eval(done.stdout.strip().splitlines()[-1])
    return names, dict(np.load(out))


@pytest.fixture(scope="module")
def model():
    return confident_heads(tiny_conv_model(rule="pred"))


def test_saved_model_signatures_from_a_fresh_python_without_keras_local(model, tmp_path):
    x, _ = random_batch(20, seed=5)
    mixed = mixed_threshold(model, x)
    path = export.export_saved_model(model, tmp_path / "export")
    names, out = serve_in_fresh_python(path, x, [0.0, 1.5, mixed], tmp_path)
    assert names == ["early_exit", "serving_default"]

    full = ops.convert_to_numpy(ops.softmax(model(x, training=False)))
    np.testing.assert_allclose(out["serving_default"], full, atol=1e-5)
    # Threshold 0: the first head answers every example.
    features, outputs = model.hidden_blocks[0](x, training=False)
    first = ops.convert_to_numpy(ops.softmax(model.objectives[0].predict(features, outputs)))
    np.testing.assert_allclose(out["threshold_0/probabilities"], first, atol=1e-5)
    assert np.all(out["threshold_0/exit_index"] == 0)
    assert np.all(out["threshold_0/blocks_run"] == 1)
    # Above 1: the full network, from the last exit.
    np.testing.assert_allclose(out["threshold_1/probabilities"], out["serving_default"], atol=1e-6)
    assert np.all(out["threshold_1/exit_index"] == 3)
    assert np.all(out["threshold_1/blocks_run"] == 3)
    # A mixed batch: what the Keras model answers.
    expected = early_exit.predict_early_exit(model, x, mixed, compiled=False)
    assert len(set(expected.exit_index.tolist())) >= 2
    np.testing.assert_array_equal(out["threshold_2/exit_index"], expected.exit_index)
    np.testing.assert_allclose(out["threshold_2/probabilities"], expected.probabilities, atol=1e-5)
    np.testing.assert_array_equal(
        out["threshold_2/blocks_run"], early_exit.blocks_run(model, expected.exit_index)
    )

    with open(os.path.join(path, export.METADATA_FILE)) as f:
        metadata = json.load(f)
    assert [e["name"] for e in metadata["exits"]] == ["block1", "block2", "block3", "output"]
    assert metadata["input_shape"] == [8, 8, 3] and metadata["num_classes"] == 5


def test_saved_model_cli_lists_both_signatures_with_named_dynamic_inputs(model, tmp_path):
    path = export.export_saved_model(model, tmp_path / "export")
    shown = subprocess.run(
        [os.path.join(BIN, "saved_model_cli"), "show", "--all", "--dir", str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    assert "signature_def['serving_default']" in text and "signature_def['early_exit']" in text
    early = text.split("signature_def['early_exit']")[1].split("signature_def[")[0]
    serving = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    for name in ("inputs['inputs']", "inputs['threshold']", "outputs['probabilities']",
                 "outputs['exit_index']", "outputs['blocks_run']", "shape: (-1, 8, 8, 3)"):  # fmt: skip
        assert name in early, name
    for name in ("inputs['inputs']", "outputs['probabilities']", "shape: (-1, 8, 8, 3)",
                 "shape: (-1, 5)"):  # fmt: skip
        assert name in serving, name


def test_default_destination(model):
    assert export.default_destination(model) == os.path.join("saved_models", model.name)
    assert export.default_destination("runs/mlp-pred-fashion_mnist.keras") == os.path.join(
        "saved_models", "mlp-pred-fashion_mnist"
    )
    assert export.default_destination("a/b.keras", "onnx") == os.path.join("saved_models", "b.onnx")


def test_onnx_equals_keras(model, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    path = export.export_onnx(model, str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["inputs"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    for n in (1, 7):  # a dynamic batch size
        x, _ = random_batch(n, seed=n)
        (got,) = session.run(None, {"inputs": x})
        expected = ops.convert_to_numpy(ops.softmax(model(x, training=False)))
        np.testing.assert_allclose(got, expected, atol=1e-4)


JAX_TRAIN = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    from keras_local import rules, zoo
    assert keras.backend.backend() == "jax"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 4
    model = zoo.mlp(layers=2, units=8, num_classes=4, input_shape=(8, 8, 1),
                    rule=rules.with_probes("backprop"))
    model.train_on_batch(x, y)
    model.save(sys.argv[1])
    np.savez(sys.argv[2], x=x, probabilities=keras.ops.convert_to_numpy(
        keras.ops.softmax(model(x, training=False))))
    """
)


def test_a_model_trained_on_jax_exports_on_tensorflow_from_its_keras_file(tmp_path):
    pytest.importorskip("jax")
    keras_file, reference = tmp_path / "jax.keras", tmp_path / "jax.npz"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", JAX_TRAIN, str(keras_file), str(reference)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    path = export.export_file(str(keras_file), str(tmp_path / "export"))
    data = np.load(reference)
    names, out = serve_in_fresh_python(path, data["x"], [0.0, 2.0], tmp_path)
    assert names == ["early_exit", "serving_default"]
    np.testing.assert_allclose(out["serving_default"], data["probabilities"], atol=1e-5)
    np.testing.assert_allclose(out["threshold_1/probabilities"], data["probabilities"], atol=1e-5)
    assert np.all(out["threshold_0/exit_index"] == 0)


def test_export_needs_a_built_local_model(tmp_path):
    with pytest.raises(ValueError, match="needs a keras_local LocalModel"):
        export.export_saved_model(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "x")
    unbuilt = zoo.mlp(layers=1, units=4, rule=rules.with_probes("backprop"))
    with pytest.raises(ValueError, match="is not built"):
        export.export_saved_model(unbuilt, tmp_path / "x")
    with pytest.raises(ValueError, match="No saved model"):
        export.export_file(str(tmp_path / "missing.keras"))


def test_cli_export_both_formats(model, tmp_path, capsys):
    pytest.importorskip("tf2onnx")
    keras_file = str(tmp_path / "tiny.keras")
    model.save(keras_file)
    status = cli.main(["export", keras_file, "--format", "all", "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert status == 0
    assert os.path.exists(tmp_path / "out" / "saved_model.pb")
    assert os.path.exists(tmp_path / "out.onnx")
    assert "saved_model written to" in out and "onnx written to" in out
