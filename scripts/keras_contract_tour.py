"""A tour of the Keras contract on the current backend, as a user meets it.

Builds models from data and predicts, feeds a wrong input shape, uint8 images,
a bad label late in a tf.data pipeline and a PyDataset, monitors callbacks
without `mode=`, tries class_weight, and trains under both mixed precision
policies; prints one line per case (OK, or the error a user would see).

    KERAS_BACKEND=jax .venv/bin/python scripts/keras_contract_tour.py
"""

import keras
import numpy as np
import tensorflow as tf

from keras_local import data
from keras_local import zoo

BACKEND = keras.backend.backend()


def attempt(label, fn):
    """Runs `fn` and prints its result, or the error a user would see."""
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - the tour reports every error
        print(f"[{BACKEND}] {label}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    else:
        print(f"[{BACKEND}] {label}: OK {out if out is not None else ''}")


class BatchesWithABadLabel(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.x[i * 128 : (i + 1) * 128], self.y[i * 128 : (i + 1) * 128]


def building_from_data(x, y, xt):
    m = zoo.mlp(rule="predsim", units=64)
    m.fit(x, y, epochs=1, verbose=0)
    attempt("mlp predsim built from data: predict", lambda: m.predict(xt, verbose=0).shape)
    attempt("  __call__", lambda: tuple(m(xt[:4]).shape))
    attempt("  built", lambda: m.built)
    for name, kwargs in [("mlp", dict(units=64)), ("resnet20", dict(width=0.25))]:
        model = zoo.get(name)(rule="associated", **kwargs)
        images = x if name == "mlp" else np.repeat(x[:64], 3, -1)
        model.fit(images, y[: len(images)], epochs=1, verbose=0)
        attempt(
            f"{name} associated from data: predict",
            lambda model=model, images=images: model.predict(images[:8], verbose=0).shape,
        )
    return m


def inputs(m, x, y, xt):
    v = zoo.vgg11b(rule="predsim", width=1 / 16, fc_units=64)
    v.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(128), epochs=1, verbose=0)
    attempt("vgg11b predsim fit(ds) then predict", lambda: v.predict(xt, verbose=0).shape)
    attempt("mlp predict on flat (N, 784)", lambda: m.predict(xt.reshape(-1, 784), verbose=0))
    attempt("  then predict on images", lambda: m.predict(xt, verbose=0).shape)
    images = (xt * 50 + 100).clip(0, 255).astype("uint8")
    attempt("uint8 images into vgg11b predict", lambda: v.predict(images, verbose=0).dtype)


def bad_labels(m, x, y):
    bad = y.copy()
    bad[200] = 10
    pipeline = tf.data.Dataset.from_tensor_slices((x, bad)).batch(128)
    attempt(
        "bad label (10) in batch 2 of tf.data",
        lambda: zoo.mlp(rule="predsim", units=64).fit(pipeline, verbose=0),
    )
    attempt(
        "bad label in batch 2 of a PyDataset",
        lambda: zoo.mlp(rule="predsim", units=64).fit(BatchesWithABadLabel(x, bad), verbose=0),
    )
    labels = np.array([0, 1, 2, 3, 4, 5, 6, -1])
    attempt("train_on_batch with label -1", lambda: m.train_on_batch(x[:8], labels))


def callbacks(m, x, y, xt, yt):
    for callback in [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=1),
        keras.callbacks.ModelCheckpoint(
            "/tmp/kl/why_best.keras", monitor="val_accuracy", save_best_only=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy"),
    ]:

        def fit(callback=callback):
            m.fit(x, y, epochs=1, validation_data=(xt, yt), callbacks=[callback], verbose=0)
            return callback.mode

        attempt(f"{type(callback).__name__}(monitor='val_accuracy') without mode", fit)
    attempt("class_weight", lambda: m.fit(x, y, class_weight={0: 2.0}, verbose=0))


def mixed_precision(x, y, xt):
    for policy in ["mixed_bfloat16", "mixed_float16"]:
        keras.mixed_precision.set_global_policy(policy)
        for rule in ["predsim", "sim", "direct-feedback-alignment"]:
            model = zoo.mlp(rule=rule, units=64, input_shape=(28, 28, 1))

            def run(model=model):
                loss = model.fit(x, y, epochs=1, verbose=0).history["loss"][0]
                dtype = model.predict(xt, verbose=0).dtype
                return f"loss {loss:.3f}, predict {dtype}, {type(model.optimizer).__name__}"

            attempt(f"{policy} {rule}", run)
        keras.mixed_precision.set_global_policy("float32")


def main():
    (x, y), (xt, yt) = data.load("fashion_mnist")
    x, y, xt, yt = x[:512], y[:512], xt[:64], yt[:64]
    m = building_from_data(x, y, xt)
    inputs(m, x, y, xt)
    bad_labels(m, x, y)
    callbacks(m, x, y, xt, yt)
    mixed_precision(x, y, xt)


if __name__ == "__main__":
    main()
