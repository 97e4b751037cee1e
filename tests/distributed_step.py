"""One SGD step on two host devices against the same step on one device;
used by test_distribution.py, in a process of its own, because the number
of devices must be set before the framework starts.

    python tests/distributed_step.py tensorflow|jax OUT.json RULE [RULE ...]

For every rule it builds a tiny MLP from the zoo, copies its weights to a
single-device reference, takes one step on both and writes, per rule, the
largest difference between their trainable weights (`diff`) and how far
the distributed step moved them (`moved`); for the first rule also the
distributed model's evaluation loss (`eval_loss`).

- TensorFlow: two logical CPUs under `tf.distribute.MirroredStrategy`, the
  model compiled with XLA; `fit` splits the global batch, so each replica
  computes its batch statistics on its half. The reference: the gradients
  of each half on one device (`compute_gradients`, unscaled), averaged,
  applied by hand (`w - lr * g`).
- JAX: `keras.distribution.DataParallel` over two CPU devices, which runs
  the step on the global batch. The reference: the gradients of the whole
  batch on one device, applied by hand.
"""

import json
import os
import sys

BACKEND = sys.argv[1]
os.environ["KERAS_BACKEND"] = BACKEND
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
else:
    import tensorflow as tf

    # Before anything runs: the runtime fixes the devices when it starts.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_local import zoo  # noqa: E402

LEARNING_RATE = 0.1
BATCH = 32
STRATEGY = None


def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 6, 6, 1)).astype("float32")
    y = (np.arange(BATCH) % 5).astype("int32")
    return x, y


def tiny_mlp(rule):
    model = zoo.mlp(2, 12, rule=rule, num_classes=5, input_shape=(6, 6, 1))
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), jit_compile=True)
    return model


def reference_step(model, parts):
    """The trainable weights after SGD on the mean of the parts' gradients."""
    grads = [model.compute_gradients(x, model.labels_from(y))[0] for x, y in parts]
    return [
        np.asarray(v) - LEARNING_RATE * np.mean([np.asarray(g[i]) for g in grads], axis=0)
        for i, v in enumerate(model.trainable_variables)
    ]


def tensorflow_step(rule):
    global STRATEGY
    if STRATEGY is None:
        # One for the process: a second strategy's all-reduces would collide
        # with the first's (the same collective keys, other shapes).
        STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = batch()
    keras.utils.set_random_seed(0)
    with STRATEGY.scope():
        model = tiny_mlp(rule)
    reference = tiny_mlp(rule)  # one device
    reference.set_weights(model.get_weights())
    half = BATCH // 2
    expected = reference_step(reference, [(x[:half], y[:half]), (x[half:], y[half:])])
    # What one device's step on the whole batch would give: the test checks
    # that the distributed step is far from it (batch statistics per replica).
    reference.set_weights(model.get_weights())
    full_batch = reference_step(reference, [(x, y)])
    before = [np.asarray(v) for v in model.trainable_variables]
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    after = [np.asarray(v) for v in model.trainable_variables]
    extra = {
        "xla_per_replica": model._xla_per_replica,
        "full_batch_diff": max_difference(after, full_batch),
    }
    return model, before, after, expected, extra


def jax_step(rule):
    import jax

    x, y = batch()
    keras.utils.set_random_seed(0)
    keras.distribution.set_distribution(None)
    reference = tiny_mlp(rule)  # one device
    expected = reference_step(reference, [(x, y)])
    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    model = tiny_mlp(rule)
    model.set_weights(reference.get_weights())
    before = [np.asarray(v) for v in model.trainable_variables]
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    after = [np.asarray(v) for v in model.trainable_variables]
    kernel = model.trainable_variables[0].value
    return model, before, after, expected, {"devices": len(kernel.sharding.device_set)}


def max_difference(weights, others):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights, others))


def main(out, rules):
    report = {}
    step = tensorflow_step if BACKEND == "tensorflow" else jax_step
    for rule in rules:
        model, before, after, expected, extra = step(rule)
        report[rule] = {
            "diff": max_difference(after, expected),
            "moved": max_difference(after, before),
            **extra,
        }
        if rule == rules[0]:  # the distributed test step, once (it compiles)
            x, y = batch()
            logs = model.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
            report[rule]["eval_loss"] = float(logs["loss"])
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[2], sys.argv[3:])
