"""A tour of the Keras contract on the current backend, as a user meets it.

Builds models from data and predicts, feeds a wrong input shape, uint8 images,
a bad label late in a tf.data pipeline and a PyDataset, monitors callbacks
without `mode=`, tries class_weight, and trains under both mixed precision
policies; prints one line per case (OK, or the error a user would see).

    KERAS_BACKEND=jax .venv/bin/python scripts/keras_contract_tour.py
"""
import os, numpy as np, keras, keras_local
from keras_local import zoo, data
(x, y), (xt, yt) = data.load("fashion_mnist")
x, y, xt, yt = x[:512], y[:512], xt[:64], yt[:64]
B = keras.backend.backend()
def attempt(label, fn):
    try:
        out = fn(); print(f"[{B}] {label}: OK {out if out is not None else ''}")
    except Exception as e:
        print(f"[{B}] {label}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
m = zoo.mlp(rule="predsim", units=64)
m.fit(x, y, epochs=1, verbose=0)
attempt("mlp predsim built from data: predict", lambda: m.predict(xt, verbose=0).shape)
attempt("  __call__", lambda: tuple(m(xt[:4]).shape))
attempt("  built", lambda: m.built)
for name, kw in [("mlp", dict(units=64)), ("resnet20", dict(width=0.25))]:
    mm = zoo.get(name)(rule="associated", **kw)
    xx = x if name == "mlp" else np.repeat(x[:64], 3, -1)
    mm.fit(xx, y[:len(xx)], epochs=1, verbose=0)
    attempt(f"{name} associated from data: predict", lambda: mm.predict(xx[:8], verbose=0).shape)
import tensorflow as tf
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(128)
v = zoo.vgg11b(rule="predsim", width=1/16, fc_units=64)
v.fit(ds, epochs=1, verbose=0)
attempt("vgg11b predsim fit(ds) then predict", lambda: v.predict(xt, verbose=0).shape)
attempt("mlp predict on flat (N, 784)", lambda: m.predict(xt.reshape(-1, 784), verbose=0))
attempt("  then predict on images", lambda: m.predict(xt, verbose=0).shape)
attempt("uint8 images into vgg11b predict", lambda: v.predict((xt * 50 + 100).clip(0, 255).astype("uint8"), verbose=0).dtype)
yb = y.copy(); yb[200] = 10
attempt("bad label (10) in batch 2 of tf.data", lambda: zoo.mlp(rule="predsim", units=64).fit(tf.data.Dataset.from_tensor_slices((x, yb)).batch(128), verbose=0))
class P(keras.utils.PyDataset):
    def __len__(self): return 4
    def __getitem__(self, i): return x[i*128:(i+1)*128], yb[i*128:(i+1)*128]
attempt("bad label in batch 2 of a PyDataset", lambda: zoo.mlp(rule="predsim", units=64).fit(P(), verbose=0))
attempt("train_on_batch with label -1", lambda: m.train_on_batch(x[:8], np.array([0,1,2,3,4,5,6,-1])))
for cb in [keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=1),
           keras.callbacks.ModelCheckpoint("/tmp/kl/why_best.keras", monitor="val_accuracy", save_best_only=True),
           keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy")]:
    attempt(f"{type(cb).__name__}(monitor='val_accuracy') without mode", lambda: m.fit(x, y, epochs=1, validation_data=(xt, yt), callbacks=[cb], verbose=0) and cb.mode)
attempt("class_weight", lambda: m.fit(x, y, class_weight={0: 2.0}, verbose=0))
for policy in ["mixed_bfloat16", "mixed_float16"]:
    keras.mixed_precision.set_global_policy(policy)
    for rule in ["predsim", "sim", "direct-feedback-alignment"]:
        mp = zoo.mlp(rule=rule, units=64, input_shape=(28, 28, 1))
        def run():
            logs = mp.fit(x, y, epochs=1, verbose=0).history
            return f"loss {logs['loss'][0]:.3f}, predict {mp.predict(xt, verbose=0).dtype}, {type(mp.optimizer).__name__}"
        attempt(f"{policy} {rule}", run)
    keras.mixed_precision.set_global_policy("float32")
