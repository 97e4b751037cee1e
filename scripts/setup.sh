#!/usr/bin/env bash
# Sets up keras_local on a fresh Debian/Ubuntu machine, idempotently:
#   - the real Fashion-MNIST files (Debian package dataset-fashion-mnist), so
#     nothing has to be downloaded; without them Keras downloads the data set;
#   - a virtual environment .venv/ with the package (editable), TensorFlow,
#     JAX (CPU) and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

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
.venv/bin/python -m pip install -q -e ".[jax,test]"
.venv/bin/python -c "import keras, keras_local; print('keras_local', keras_local.__version__, 'on keras', keras.__version__)"
