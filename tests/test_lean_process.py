"""A run on the JAX backend never imports TensorFlow.

Keras imports TensorFlow wherever it is installed to seed it
(`keras.utils.set_random_seed`) and to ask whether an object is a
`tf.TensorShape` (saving); on JAX that import alone is about 400 MB of a run's
peak memory. `train` seeds and saves without it.
"""

import os
import subprocess
import sys

SCRIPT = """
import sys
from keras.src.utils import module_utils
from keras_local import experiment
result = experiment.train(
    model="mlp", width=0.0625, rule="predsim", dataset="fashion_mnist", epochs=1,
    train_examples=256, test_examples=64, seed=3, output=sys.argv[1], verbose=0,
)
assert result.test_error < 100
print("tensorflow imported:", "tensorflow" in sys.modules)
print("lazy module reset:", module_utils.tensorflow._available is None)
"""


def test_a_seeded_run_on_jax_trains_and_saves_without_importing_tensorflow(tmp_path):
    output = str(tmp_path / "m.keras")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, output],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tensorflow imported: False" in done.stdout
    assert "lazy module reset: True" in done.stdout
    assert os.path.getsize(output) > 0
