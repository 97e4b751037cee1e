#!/usr/bin/env bash
# Sets up keras_local on a fresh Debian/Ubuntu machine, idempotently:
#   - the real Fashion-MNIST files (Debian package dataset-fashion-mnist), so
#     nothing has to be downloaded; without them Keras downloads the data set;
#   - a virtual environment .venv/ with the package (editable) and every extra
#     the tests need: tf (TensorFlow, tensorflow-datasets), jax (CPU), export
#     (tf2onnx, onnx, onnxruntime), tune (keras-tuner), analysis (scikit-learn,
#     matplotlib) and test (pytest, pytest-xdist, ruff). On Linux x86_64 it
#     installs `tensorflow-cpu` in place of the `tf` extra's `tensorflow` (the
#     GPU build, a far larger download): it takes the `tf` extra's other
#     requirements from pyproject.toml and leaves the extra itself out, because
#     `tensorflow-cpu` does not satisfy a requirement on `tensorflow` and pip
#     would install both. A .venv that already has `tensorflow` keeps it;
#   - with --with-torch, also PyTorch (the `torch` extra) for KERAS_BACKEND=torch.
#     It is optional because PyPI's Linux torch brings about 3 GB of CUDA
#     libraries (over a minute to install), which the TensorFlow and JAX
#     backends never need.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="jax,export,tune,analysis,test"
for arg in "$@"; do
  case "$arg" in
    --with-torch) extras="$extras,torch" ;;
    *) echo "usage: bash scripts/setup.sh [--with-torch]" >&2; exit 2 ;;
  esac
done

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist; }; then
    echo "setup: could not install dataset-fashion-mnist; Keras will download Fashion-MNIST instead." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip

# The `tf` extra, with tensorflow-cpu for tensorflow on x86_64 (see above).
tf_requirements=()
if [ "$(uname -m)" = x86_64 ] && ! .venv/bin/python -m pip show -q tensorflow >/dev/null 2>&1; then
  mapfile -t tf_requirements < <(.venv/bin/python -c '
import re, tomllib
with open("pyproject.toml", "rb") as f:
    extra = tomllib.load(f)["project"]["optional-dependencies"]["tf"]
for requirement in extra:
    print(re.sub(r"^tensorflow(?![-\w.])", "tensorflow-cpu", requirement))
')
  if [ "${#tf_requirements[@]}" -eq 0 ]; then
    echo "setup: could not read the tf extra from pyproject.toml" >&2
    exit 1
  fi
else
  extras="$extras,tf"
fi
.venv/bin/python -m pip install -q -e ".[$extras]" "${tf_requirements[@]}"
.venv/bin/python -c "import keras, keras_local; print('keras_local', keras_local.__version__, 'on keras', keras.__version__)"
