"""Associated learning on a network not built for it: `zoo.mlp`.

On `zoo.mlp(width=0.25, rule="associated")` after one epoch of 20,000
Fashion-MNIST examples at batch 128 (157 steps), zoo/alignment.md records
chance. That is AL's label autoencoder warming up, not a fault of the rule
on this model: the first exits already classify (71% and 56%) while the
last one, which decodes through three sigmoid decoders, waits for the codes
of the upper groups to become distinct (their spread across classes starts
at about a third of the level below's). With about 300 steps it reaches the
other rules' accuracy (82% after two epochs, 83% after one epoch at batch
32). This test holds the same behaviour on a small scale: with enough steps
the rule learns on the plain MLP at the builder's defaults, and `predict`
answers with the last exit that `evaluate` scores.
"""

import keras
import numpy as np

from keras_local import zoo


def test_associated_learns_on_the_plain_mlp_given_enough_steps(fashion_subset):
    (x, y), (xt, yt) = fashion_subset
    keras.utils.set_random_seed(1)
    model = zoo.mlp(units=64, rule="associated", input_shape=(28, 28, 1))
    # 512 examples, batch 32: 400 steps, past the label autoencoder's warm-up.
    model.fit(x, y, batch_size=32, epochs=25, verbose=0)
    logs = model.evaluate(xt, yt, batch_size=256, verbose=0, return_dict=True)
    assert logs["accuracy"] >= 0.5, logs
    # `evaluate`'s accuracy is the last objective's exit, and so is `predict`.
    assert logs["accuracy"] == logs["block3_pred_accuracy"], logs
    predicted = np.argmax(model.predict(xt, batch_size=256, verbose=0), axis=-1)
    np.testing.assert_allclose(np.mean(predicted == yt), logs["accuracy"], atol=1 / len(yt))
