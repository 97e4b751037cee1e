"""Export a trained `LocalModel` for serving: SavedModel (with an early-exit
signature) and ONNX.

    keras-local export saved_models/vgg8b-predsim-fashion_mnist.keras
    # -> saved_models/vgg8b-predsim-fashion_mnist/       (SavedModel)
    keras-local export MODEL.keras --format onnx
    # -> saved_models/vgg8b-predsim-fashion_mnist.onnx

**SavedModel** (`export_saved_model`), two signatures, dynamic batch size:

- `serving_default`: input `inputs` (float32, `[None, H, W, C]`); output
  `probabilities` (float32, `[None, num_classes]`), the full network's
  softmax.
- `early_exit`: inputs `inputs` and `threshold` (float32 scalar); outputs
  `probabilities`, `exit_index` (int32, 0-based over the exits, the last
  being the full network) and `blocks_run` (int32, hidden blocks run for
  that example). See `keras_local.early_exit` for the exits, the
  confidence (max probability, or `criterion="entropy"` at export time) and
  what happens in a mixed batch; the later blocks really are skipped
  (`tf.cond` and dynamic-shape gathers in the graph).

The artifact needs TensorFlow only, not keras_local or Keras:

    import tensorflow as tf
    served = tf.saved_model.load("saved_models/NAME")
    served.signatures["serving_default"](inputs=x)["probabilities"]
    served.signatures["early_exit"](inputs=x, threshold=tf.constant(0.9))

A file `keras_local_export.json` beside it lists the exits (name, blocks
run), the criterion, the input shape and the number of classes.

Export runs on the TensorFlow backend. A model trained on JAX (or torch) is
exported from its `.keras` file on a machine with TensorFlow:
`export_file("model.keras")` (or `keras-local export model.keras`) loads it
on TensorFlow, in a child process with `KERAS_BACKEND=tensorflow` when the
current backend is another one.

**ONNX** (`export_onnx`): the full network only (ONNX has one endpoint), input
`inputs`, output `probabilities`, dynamic batch size; it needs `tf2onnx`
(TensorFlow backend) and runs in `onnxruntime`.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings

import keras
from keras import ops

from keras_local import early_exit as early_exit_lib
from keras_local import optional
from keras_local import rules as rules_lib
from keras_local.run_files import load_model_file
from keras_local.run_files import temporary_name
from keras_local.run_settings import SettingsError

#: Where exports go when no destination is given.
DEFAULT_DIR = "saved_models"
#: The metadata file written into a SavedModel directory.
METADATA_FILE = "keras_local_export.json"
FORMATS = ("saved_model", "onnx")


def _name_of(model_or_path):
    if isinstance(model_or_path, (str, os.PathLike)):
        return os.path.splitext(os.path.basename(os.fspath(model_or_path)))[0]
    return model_or_path.name


def default_destination(model_or_path, format="saved_model"):
    """`saved_models/NAME/` for a SavedModel, `saved_models/NAME.onnx` for
    ONNX, NAME being the `.keras` file's name without its extension, or the
    model's name."""
    _check_format(format)
    name = _name_of(model_or_path)
    if format == "onnx":
        return os.path.join(DEFAULT_DIR, f"{name}.onnx")
    return os.path.join(DEFAULT_DIR, name)


def _check_format(format):
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}.")


def _check_model(model):
    if not hasattr(model, "hidden_blocks") or not hasattr(model, "objectives"):
        raise ValueError(
            f"Export needs a keras_local LocalModel; got {type(model).__name__}."
        )
    if model.example_shape is None:
        raise ValueError(
            f"{model.name} is not built; build it (input_shape=...) or call it on a "
            "batch before exporting."
        )


def _require_tensorflow(what):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"{what} runs on the TensorFlow backend (this process uses "
            f"{keras.backend.backend()}). Save the model as .keras and export the "
            "file: keras_local.export.export_file(path) or `keras-local export "
            "MODEL.keras` (both switch to TensorFlow in a child process)."
        )
    return optional.require("tensorflow", extra="tf", feature=what)


def export_saved_model(
    model, path=None, criterion="max_probability", verbose=False, overwrite=False
):
    """Writes a SavedModel with the `serving_default` and `early_exit`
    signatures (see the module docstring); returns its directory.

    Args:
        model: a built `LocalModel` (TensorFlow backend).
        path: the directory to write; default `saved_models/<model name>/`.
        criterion: the early-exit confidence, `"max_probability"` or
            `"entropy"` (`keras_local.early_exit.confidence`).
        verbose: let Keras print what it wrote.
        overwrite: replace an existing non-empty `path` (else refused).
    """
    tf = _require_tensorflow("SavedModel export")
    _check_model(model)
    early_exit_lib.check_criterion(criterion)
    path = os.fspath(path) if path is not None else default_destination(model)
    check_destination(path, overwrite)
    signature = early_exit_lib.input_signature(model)
    threshold_spec = tf.TensorSpec((), tf.float32, name="threshold")

    def serving_default(inputs):
        return early_exit_lib.full_network_graph(model, inputs)

    def early_exit(inputs, threshold):
        return early_exit_lib.early_exit_graph(model, inputs, threshold, criterion)

    archive = keras.export.ExportArchive()
    archive.track(model)
    # Named endpoints: the first is also what TF-Serving calls by default.
    archive.add_endpoint("serving_default", serving_default, input_signature=signature)
    archive.add_endpoint(
        "early_exit", early_exit, input_signature=signature + [threshold_spec]
    )

    def write(directory):
        archive.write_out(directory, verbose=verbose)
        with open(os.path.join(directory, METADATA_FILE), "w") as f:
            json.dump(metadata(model, criterion), f, indent=2)

    _write_whole(path, write)
    return path


def metadata(model, criterion="max_probability"):
    """What `export_saved_model` writes to `keras_local_export.json`."""
    return {
        "model": model.name,
        "rule": rules_lib.serialize(model.rule),
        "num_classes": model.num_classes,
        "input_shape": list(model.example_shape),
        "num_blocks": len(model.hidden_blocks),
        "criterion": criterion,
        "exits": [
            {"index": e.index, "name": e.name, "blocks_run": e.blocks_run}
            for e in early_exit_lib.exits(model)
        ],
        "signatures": {
            "serving_default": {"inputs": ["inputs"], "outputs": ["probabilities"]},
            "early_exit": {
                "inputs": ["inputs", "threshold"],
                "outputs": ["probabilities", "exit_index", "blocks_run"],
            },
        },
    }


class _Probabilities(keras.Model):
    """The network's softmax, as one output named `probabilities`."""

    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network

    def call(self, inputs):
        return {"probabilities": ops.softmax(self.network(inputs, training=False))}


def export_onnx(model, path=None, opset=None, verbose=False, overwrite=False):
    """Writes the full network (input `inputs`, output `probabilities`, the
    softmax; dynamic batch size) as ONNX; returns the file's path.

    Needs the `tf2onnx` package and the TensorFlow backend. Default path:
    `saved_models/<model name>.onnx`.
    """
    _require_tensorflow("ONNX export")
    optional.require("tf2onnx", extra="export", feature="ONNX export")
    _check_model(model)
    path = os.fspath(path) if path is not None else default_destination(model, "onnx")
    check_destination(path, overwrite)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    wrapper = _Probabilities(model, name=f"{model.name}_probabilities")
    shape = model.example_shape
    wrapper(ops.zeros((1, *shape)))
    with warnings.catch_warnings():
        # Keras' numpy-2 patch of tf2onnx probes `np.object`.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*np.object.*")
        signature = [keras.InputSpec(shape=(None, *shape), dtype="float32", name="inputs")]
        _write_whole(
            path,
            lambda temporary: wrapper.export(
                temporary,
                format="onnx",
                input_signature=signature,
                opset_version=opset,
                verbose=verbose,
            ),
        )
    return path


def load(path):
    """Loads a `.keras` LocalModel for export (without its optimizer); a
    missing, damaged or foreign file is named as such."""
    model = load_model_file(path)
    _check_model(model)
    return model


def check_destination(path, overwrite=False, source=None):
    """Refuses (`SettingsError`) to export onto the `.keras` file being
    exported or a directory holding it, and onto an existing file or
    non-empty directory unless `overwrite`."""
    path = os.fspath(path)
    if source is not None:
        source, target = os.path.realpath(source), os.path.realpath(path)
        if source == target or source.startswith(target + os.sep):
            raise SettingsError(
                f"The export destination {path} would destroy the model it exports, "
                f"{source}; choose another destination."
            )
    if not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path)):
        return
    if not overwrite:
        raise SettingsError(
            f"{path} exists; the export would replace it. Choose another destination, "
            "or pass overwrite=True (--overwrite) to replace it."
        )


def _write_whole(path, write):
    """`write(temporary)`, then the temporary file or directory moved to
    `path` (replacing what was there): the destination holds the old export
    or the new one, never files of both."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = temporary_name(path)
    try:
        write(temporary)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        os.replace(temporary, path)
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary)
        elif os.path.exists(temporary):
            os.remove(temporary)


def export_file(
    keras_path,
    path=None,
    format="saved_model",
    criterion="max_probability",
    opset=None,
    subprocess_backend=True,
    overwrite=False,
):
    """Exports a `.keras` file; returns the destination.

    On the TensorFlow backend it loads and exports the model here. On another
    backend (a model trained on JAX), with `subprocess_backend`, it runs the
    export in a child Python with `KERAS_BACKEND=tensorflow` (TensorFlow must
    be installed), since the SavedModel is a TensorFlow graph.
    """
    _check_format(format)
    early_exit_lib.check_criterion(criterion)
    if not os.path.isfile(keras_path):
        raise SettingsError(f"No saved model at {keras_path!r}.")
    path = os.fspath(path) if path is not None else default_destination(keras_path, format)
    check_destination(path, overwrite, source=keras_path)
    if keras.backend.backend() != "tensorflow" and subprocess_backend:
        if not optional.available("tensorflow"):
            raise optional.MissingOptionalDependency(
                f"Export runs on TensorFlow, which is not installed: "
                f"{optional.install_command('tf')}",
                name="tensorflow",
                extra="tf",
            )
        arguments = dict(
            keras_path=os.fspath(keras_path), path=path, format=format,
            criterion=criterion, opset=opset, subprocess_backend=False,
            overwrite=overwrite,
        )
        code = (
            "import json, sys; from keras_local import export; "
            "print(export.export_file(**json.loads(sys.argv[1])))"
        )
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(arguments)],
            env=env, capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(
                "The export on the TensorFlow backend failed:\n" + done.stderr[-4000:]
            )
        return path
    model = load(keras_path)
    if format == "onnx":
        return export_onnx(model, path, opset=opset, overwrite=overwrite)
    return export_saved_model(model, path, criterion=criterion, overwrite=overwrite)
