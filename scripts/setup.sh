#!/usr/bin/env bash
# Sets up keras_local on a fresh Debian/Ubuntu machine, idempotently:
#   - the real Fashion-MNIST files (Debian package dataset-fashion-mnist), so
#     nothing has to be downloaded; without them Keras downloads the data set;
#   - a virtual environment .venv/ with the package (editable), TensorFlow,
#     JAX (CPU) and the test tools;
#   - with --with-torch, also PyTorch (the `torch` extra) for KERAS_BACKEND=torch.
#     It is optional because PyPI's Linux torch brings about 3 GB of CUDA
#     libraries (over a minute to install), which the TensorFlow and JAX
#     backends never need.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="jax,test"
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
.venv/bin/python -m pip install -q -e ".[$extras]"
.venv/bin/python -c "import keras, keras_local; print('keras_local', keras_local.__version__, 'on keras', keras.__version__)"
