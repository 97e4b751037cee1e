"""Trains the tiny test model for a few steps on the backend this process
runs (KERAS_BACKEND) and saves its weights; used by test_cross_backend.py.

    python tests/cross_backend_train.py OUT_DIR [INIT_DIR]

For each optimizer (SGD, Adam) it writes OUT_DIR/<backend>-<optimizer>.npz.
Without INIT_DIR the initial weights are saved to OUT_DIR/init-<optimizer>.npz,
so another backend can start from exactly the same point.
"""

import sys

import keras
import numpy as np

from tests.conftest import random_batch
from tests.conftest import tiny_conv_model

STEPS = 5


def train(out_dir, optimizer, init_dir=None):
    keras.utils.set_random_seed(0)
    model = tiny_conv_model(rule="predsim")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1)
        if optimizer == "sgd"
        else keras.optimizers.Adam(1e-3, epsilon=1e-8)
    )
    if init_dir is None:
        np.savez(f"{out_dir}/init-{optimizer}.npz", *model.get_weights())
    else:
        saved = np.load(f"{init_dir}/init-{optimizer}.npz")
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    for step in range(STEPS):
        x, y = random_batch(n=32, seed=step)
        model.train_on_batch(x, y)
    paths = [v.path for v in model.weights]
    out = f"{out_dir}/{keras.backend.backend()}-{optimizer}.npz"
    np.savez(out, *model.get_weights(), paths=np.array(paths))


if __name__ == "__main__":
    out_dir = sys.argv[1]
    init_dir = sys.argv[2] if len(sys.argv) > 2 else None
    for name in ("sgd", "adam"):
        train(out_dir, name, init_dir)
