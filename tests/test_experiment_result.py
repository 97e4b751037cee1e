"""`train`'s test metrics are the last epoch's validation pass over the test
set (the weights it evaluated are the ones saved), not a second pass."""

import numpy as np

from keras_local import data
from keras_local import experiment
from keras_local.run_files import load_model_file


def test_the_reported_test_metrics_equal_evaluating_the_saved_model(tmp_path):
    output = str(tmp_path / "m.keras")
    result = experiment.train(
        model="mlp", width=0.0625, rule="predsim", dataset="fashion_mnist", epochs=2,
        train_examples=256, test_examples=200, seed=4, output=output, verbose=0,
        layer_report=False,
    )  # fmt: skip
    assert result.history["val_accuracy"][-1] == result.test_metrics["accuracy"]

    model = load_model_file(output, compile=True)
    _, (x_test, y_test) = data.load("fashion_mnist")
    again = model.evaluate(x_test[:200], y_test[:200], batch_size=128, return_dict=True, verbose=0)
    assert set(again) == set(result.test_metrics)
    for name, value in again.items():
        np.testing.assert_allclose(result.test_metrics[name], value, rtol=1e-5, atol=1e-6)
    assert abs(result.test_error - 100 * (1 - again["accuracy"])) < 1e-3
