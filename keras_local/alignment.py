"""How well a rule's updates align with backprop.

For every hidden block (and the output layer) of a `LocalModel`, on one batch:

- the angle between the rule's update direction for the block's weights (the
  gradient the rule's training step hands the optimizer for them, before the
  optimizer) and the true backprop gradient of the output loss (the
  cross-entropy of the model's output on the labels, differentiated through
  the whole network with nothing detached and every feedback-alignment layer
  sending back its transposed forward weights) for the same weights;
- where the block has fixed feedback weights (feedback-alignment layers: a
  `feedback_kernel` of its kernel's shape), the angle between the feedback
  weights and the forward weights (`B` against `W`; the backward pass uses
  `B^T` where backprop uses `W^T`).

0 degrees is backprop's direction, 90 orthogonal (an update that neither
helps nor hurts the output loss, to first order), over 90 uphill.

Both gradients are computed in training mode (`training=True`: BatchNorm
normalises with the batch's statistics, as in a training step) with noise
off: every Keras dropout layer's `rate` and `GaussianNoise`'s `stddev` are
set to 0 for the duration of the call and then restored, so both gradients
see the same deterministic network (see `_noise_off`). The inputs are not
augmented. The model's state is unchanged afterwards: every non-trainable
variable (BatchNorm statistics, seed generators, feedback weights) is
restored.

>>> from keras_local.analysis import alignment
>>> result = alignment(model, x_test[:256], y_test[:256])  # doctest: +SKIP
>>> print(result.format())  # doctest: +SKIP
>>> result["block1"].angle_update_deg  # doctest: +SKIP
"""

import contextlib
import dataclasses
import math

import keras
import numpy as np
from keras import ops

from keras_local.ops import prediction_loss

__all__ = [
    "AlignmentResult",
    "BlockAlignment",
    "RowGradients",
    "alignment",
    "alignment_gradients",
    "angle_deg",
]

#: Keras' noise layers (every layer of its regularization package that adds
#: noise; SpatialDropout is a `Dropout`) and the attribute that sets their
#: strength: at 0 their `call` is the identity in training mode too.
_NOISE_LAYERS = tuple(
    (getattr(keras.layers, name), attribute)
    for name, attribute in (
        ("Dropout", "rate"),
        ("GaussianDropout", "rate"),
        ("AlphaDropout", "rate"),
        ("GaussianNoise", "stddev"),
    )
    if hasattr(keras.layers, name)
)


@dataclasses.dataclass(frozen=True)
class BlockAlignment:
    """One row of `alignment`.

    Attributes:
        name: `"block<i>"` (1-based), `"output"` (the output layer), or
            `"exit"` for rules without an output layer (the last objective's
            exit weights, which make the prediction).
        num_variables: the weight tensors compared (feedback weights
            excluded).
        angle_update_deg: the angle between the rule's update and the
            backprop gradient, in degrees; `nan` when either is zero.
        angle_feedback_deg: the angle between the block's feedback weights
            and its forward weights, in degrees; `None` for a block without
            feedback weights.
        update_norm, backprop_norm: the Euclidean norms of the two
            gradients over the block's weights.
    """

    name: str
    num_variables: int
    angle_update_deg: float
    angle_feedback_deg: float | None
    update_norm: float
    backprop_norm: float


@dataclasses.dataclass(frozen=True)
class AlignmentResult:
    """The rows of `alignment`, blocks in order then the output layer.

    Iterates over its `BlockAlignment` rows; `result["block2"]` or
    `result[1]` picks one.
    """

    rows: tuple
    rule: str
    model: str
    num_examples: int

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, str):
            for row in self.rows:
                if row.name == key:
                    return row
            raise KeyError(key)
        return self.rows[key]

    def as_logs(self):
        """`{"<name>_update_angle": deg, "<name>_feedback_angle": deg}` (the
        second only for rows with feedback weights), floats: what
        `AlignmentLogger` adds to the training logs."""
        logs = {}
        for row in self.rows:
            logs[f"{row.name}_update_angle"] = row.angle_update_deg
            if row.angle_feedback_deg is not None:
                logs[f"{row.name}_feedback_angle"] = row.angle_feedback_deg
        return logs

    def lines(self):
        """The table as a list of lines."""
        width = max([len("layer"), *(len(row.name) for row in self.rows)])
        lines = [
            f"{'layer':{width}s}  {'variables':>9s}  {'update angle':>12s}  "
            f"{'feedback angle':>14s}  {'|update|':>10s}  {'|backprop|':>10s}"
        ]
        for row in self.rows:
            lines.append(
                f"{row.name:{width}s}  {row.num_variables:9d}  "
                f"{_degrees(row.angle_update_deg):>12s}  "
                f"{_degrees(row.angle_feedback_deg):>14s}  "
                f"{row.update_norm:10.3g}  {row.backprop_norm:10.3g}"
            )
        return lines

    def format(self, examples="examples"):
        """A text table: a title line (`on <N> <examples>`: e.g. `"test examples
        of fashion_mnist"`), then one line per row."""
        title = (
            f"Alignment of {self.rule} ({self.model}) with backprop on "
            f"{self.num_examples} {examples}, in degrees (0 = backprop's direction, "
            "90 = orthogonal): the rule's update against the output loss's gradient, "
            "and feedback against forward weights"
        )
        lines = [title, *self.lines()]
        if any(math.isnan(row.angle_update_deg) for row in self.rows):
            lines.append(
                "nan: one of the two gradients is zero (a kernel still at zero, as local "
                "rules start their heads and output layer, sends no gradient down)"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.format()


def _degrees(value):
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.2f}"


def angle_deg(a, b):
    """The angle in degrees between two arrays (or lists of arrays, flattened
    and concatenated); `nan` when either is zero or not finite.

    Computed as `2 atan2(|a' - b'|, |a' + b'|)` on the unit vectors, which
    stays accurate near 0 and 180 degrees (`arccos` of the cosine loses half
    the digits there)."""
    a, b = _flat(a), _flat(b)
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if not (norm_a > 0 and norm_b > 0 and np.isfinite(norm_a) and np.isfinite(norm_b)):
        return math.nan
    a, b = a / norm_a, b / norm_b
    return math.degrees(2 * math.atan2(np.linalg.norm(a - b), np.linalg.norm(a + b)))


def _flat(arrays):
    if isinstance(arrays, (list, tuple)):
        if not arrays:
            return np.zeros(0)
        return np.concatenate([np.ravel(np.asarray(a, dtype="float64")) for a in arrays])
    return np.ravel(np.asarray(arrays, dtype="float64"))


# ------------------------------------------------------------------- layers
def _sublayers(layers):
    for layer in layers:
        yield from layer._flatten_layers(include_self=True, recursive=True)


def _feedback_layers(layers):
    """The feedback-alignment layers in `layers` (and their sublayers): a
    `kernel` and either a `feedback_weights(training)` method (the matrix
    `B` its input gradient goes through, in the kernel's shape) or a
    `feedback_kernel` variable of the kernel's shape used as `B`."""
    found, seen = [], set()
    for layer in _sublayers(layers):
        if id(layer) in seen or getattr(layer, "kernel", None) is None:
            continue
        feedback = getattr(layer, "feedback_kernel", None)
        if callable(getattr(layer, "feedback_weights", None)) or (
            feedback is not None and tuple(feedback.shape) == tuple(layer.kernel.shape)
        ):
            seen.add(id(layer))
            found.append(layer)
    return found


def _feedback_matrix(layer):
    """The layer's feedback matrix `B` as a NumPy array (for a feedback
    drawn every step, its expected value: `feedback_weights(training=False)`)."""
    if callable(getattr(layer, "feedback_weights", None)):
        return ops.convert_to_numpy(layer.feedback_weights(training=False))
    return ops.convert_to_numpy(layer.feedback_kernel.value)


def _feedback_variables(layers):
    """The ids of the layers' `feedback_kernel` variables (trained ones too,
    as Kolen-Pollack's): they are not forward weights."""
    return {
        id(layer.feedback_kernel)
        for layer in _feedback_layers(layers)
        if getattr(layer, "feedback_kernel", None) is not None
    }


def _rows(model):
    """`(name, layers, variables)` of every row: the hidden blocks, then
    the output layer (or the last objective's exit). A row's variables are
    its trainable weights without feedback weights."""
    rows = [
        (f"block{index}", [block], block.trainable_variables)
        for index, block in enumerate(model.hidden_blocks, start=1)
    ]
    if model.output_layer is not None:
        rows.append(("output", [model.output_layer], model.output_layer.trainable_variables))
    else:
        objective = model.objectives[-1]
        rows.append(("exit", [objective], objective.exit_weights()))
    result = []
    for name, layers, variables in rows:
        feedback = _feedback_variables(layers)
        result.append((name, layers, [v for v in variables if id(v) not in feedback]))
    return result


# -------------------------------------------------------------------- state
@contextlib.contextmanager
def _preserved_state(model):
    """Restores every non-trainable variable (BatchNorm statistics, seed
    generators, feedback weights) on exit."""
    saved = [(v, ops.convert_to_numpy(v.value)) for v in model.non_trainable_variables]
    try:
        yield
    finally:
        for variable, value in saved:
            variable.assign(value)


def _noise_attribute(layer):
    """The attribute that sets `layer`'s noise (`"rate"`, `"stddev"`), or
    `None` for a layer that adds none."""
    for kind, attribute in _NOISE_LAYERS:
        if isinstance(layer, kind):
            return attribute
    return None


@contextlib.contextmanager
def _noise_off(model):
    """Every Keras noise layer (dropout of every kind, Gaussian noise) set to
    strength 0, restored on exit.

    Why off rather than the same noise in both passes: the rule's update
    and the backprop gradient come from two separate forward passes (the
    rule's own `compute_gradients`, then a plain differentiation), each
    drawing from the layers' seed generators in its own order, so their
    draws cannot be matched in general; and an angle between two noisy
    gradients measures the noise as much as the rule (backprop itself
    would be off 0 degrees). With the noise off both differentiate the
    same deterministic network, in training mode otherwise (BatchNorm on
    the batch's statistics)."""
    changed = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        attribute = _noise_attribute(layer)
        if attribute is not None and getattr(layer, attribute) > 0:
            changed.append((layer, attribute, getattr(layer, attribute)))
            setattr(layer, attribute, 0.0)
    try:
        yield
    finally:
        for layer, attribute, value in changed:
            setattr(layer, attribute, value)


@contextlib.contextmanager
def _true_feedback(model):
    """Every feedback-alignment layer sends back its forward weights (`g @
    W^T`), so that the network is differentiated as by backprop; undone on
    exit. A layer with `feedback_weights` gets an instance override
    returning `stop_gradient(kernel)` (the value `B = W`; without the stop
    the kernel would also be reached through the feedback path); a layer
    with only a `feedback_kernel` gets the kernel's values assigned to it
    (its value is unchanged, and its kernel's gradient is the true one
    anyway)."""
    overridden, assigned = [], []
    try:
        for layer in _feedback_layers([model]):
            if callable(getattr(layer, "feedback_weights", None)):
                # Past Keras' attribute tracking: a function is no state.
                object.__setattr__(layer, "feedback_weights", _kernel_as_feedback(layer))
                overridden.append(layer)
            else:
                feedback = layer.feedback_kernel
                assigned.append((feedback, ops.convert_to_numpy(feedback.value)))
                feedback.assign(ops.convert_to_numpy(layer.kernel.value))
        yield
    finally:
        for layer in overridden:
            object.__delattr__(layer, "feedback_weights")
        for feedback, value in assigned:
            feedback.assign(value)


def _kernel_as_feedback(layer):
    def feedback_weights(training=None):
        return ops.stop_gradient(layer.kernel)

    return feedback_weights


# ---------------------------------------------------------------- gradients
def _backprop_gradients(model, x, y, variables):
    """d cross-entropy(model(x, training=True), y) / d `variables` through
    the whole network, on the active backend; the only backend switch of
    this module. Unreached variables get zeros."""
    backend = keras.backend.backend()

    def loss_fn():
        return prediction_loss(model(x, training=True), y)

    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
    elif backend == "jax":
        import jax

        def wrapped(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()

        grads = jax.grad(wrapped)([v.value for v in variables])
    elif backend == "torch":
        import torch

        with torch.enable_grad():
            loss = loss_fn()
            grads = [None] * len(variables)
            if loss.requires_grad:
                grads = torch.autograd.grad(
                    loss, [v.value for v in variables], allow_unused=True
                )
    else:
        raise NotImplementedError(f"alignment does not support the {backend!r} backend.")
    return [
        np.zeros(v.shape) if g is None else ops.convert_to_numpy(g)
        for g, v in zip(grads, variables)
    ]


def _rule_gradients(model, x, y):
    """The rule's gradient of every trainable variable, from the model's own
    per-backend `compute_gradients` (unscaled, before the optimizer), by
    variable id."""
    context = contextlib.nullcontext()
    if keras.backend.backend() == "torch":
        import torch

        context = torch.enable_grad()
    with context:
        grads, _, _ = model.compute_gradients(x, y, training=True)
    return {
        id(v): np.zeros(v.shape) if g is None else ops.convert_to_numpy(g)
        for v, g in zip(model.trainable_variables, grads)
    }


@dataclasses.dataclass(frozen=True)
class RowGradients:
    """The two gradients of one row of `alignment`, as NumPy arrays aligned
    with `variables`."""

    name: str
    variables: list
    update: list
    backprop: list


def _batches(x, y, batch_size):
    n = len(x)
    size = n if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    for start in range(0, n, size):
        yield x[start : start + size], y[start : start + size]


def _class_ids(y):
    """Integer class ids `(N,)` from `y`: class ids as they are (also as a
    column `(N, 1)`), one-hot rows as their argmax. Anything else raises a
    `ValueError` saying what is expected."""
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim == 2 and y.shape[1] > 1:
        one_hot = np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)
        if one_hot:
            return np.argmax(y, axis=1)
        raise ValueError(
            f"alignment takes integer class ids (N,) or one-hot labels (N, classes); got "
            f"labels of shape {y.shape} whose rows are not one-hot (soft labels have no "
            "single class to take the cross-entropy on)."
        )
    if y.ndim != 1:
        raise ValueError(
            "alignment takes integer class ids (N,) or one-hot labels (N, classes); got "
            f"labels of shape {y.shape}."
        )
    return y


def alignment_gradients(model, x, y, batch_size=None):
    """The rule's update and the backprop gradient of every row's weights.

    Args, and how both are computed: as `alignment`.

    Returns:
        A list of `RowGradients`, the hidden blocks then the output layer
        (`"exit"` for rules without one).
    """
    if not hasattr(model, "compute_gradients") or not hasattr(model, "hidden_blocks"):
        raise ValueError(
            f"alignment needs a keras_local LocalModel; got {type(model).__name__}."
        )
    x, y = np.asarray(x), _class_ids(np.asarray(y))
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"alignment needs as many labels as inputs (>0); got {len(x)}, {len(y)}.")
    if getattr(model, "jax_state_sync", None) is not None:
        model.jax_state_sync()  # inside `fit` on JAX the variables lag the state
    if not model.built:
        model.build((None, *x.shape[1:]))
    rows = _rows(model)
    variables = [v for _, _, row_variables in rows for v in row_variables]
    update = {id(v): np.zeros(v.shape) for v in variables}
    backprop = {id(v): np.zeros(v.shape) for v in variables}
    with _preserved_state(model), _noise_off(model):
        for x_batch, y_batch in _batches(x, y, batch_size):
            weight = len(x_batch) / len(x)
            x_batch = ops.convert_to_tensor(x_batch)
            y_batch = ops.convert_to_tensor(y_batch.astype("int32"))
            rule = _rule_gradients(model, x_batch, y_batch)
            for variable in variables:
                update[id(variable)] += weight * rule[id(variable)]
            with _true_feedback(model):
                grads = _backprop_gradients(model, x_batch, y_batch, variables)
            for variable, grad in zip(variables, grads):
                backprop[id(variable)] += weight * grad
    return [
        RowGradients(
            name,
            list(row_variables),
            [update[id(v)] for v in row_variables],
            [backprop[id(v)] for v in row_variables],
        )
        for name, _, row_variables in rows
    ]


def alignment(model, x, y, batch_size=None):
    """Angles between a rule's updates and backprop, per block.

    Works for every rule and backend: the rule's update is what the model's
    own `compute_gradients` (the training step's gradient computation,
    without augmentation and without the optimizer's loss scaling) gives
    each weight; the backprop gradient is that of the output cross-entropy
    through the whole network, nothing detached, each feedback-alignment
    layer sending back its forward weights. Both in training mode with
    noise off (see the module docstring); the model's state is restored.

    Args:
        model: a `keras_local.LocalModel`.
        x: inputs `(N, ...)`, one batch (e.g. 256 test examples).
        y: integer class ids `(N,)`, or one-hot labels `(N, classes)`
            (their argmax is taken).
        batch_size: `None` differentiates all of `x` as one batch;
            otherwise both gradients are averaged (weighted by batch size)
            over consecutive batches of `batch_size` (for memory; batch
            statistics, as BatchNorm's or a similarity matrix, are then each
            batch's own).

    Returns:
        An `AlignmentResult`: one `BlockAlignment` per hidden block, then
        the output layer (`"exit"` for rules without one); `format()`
        prints it as a table.
    """
    gradients = alignment_gradients(model, x, y, batch_size)
    layers = {name: row_layers for name, row_layers, _ in _rows(model)}
    rows = []
    for row in gradients:
        feedback_layers = _feedback_layers(layers[row.name])
        feedback = None
        if feedback_layers:
            feedback = angle_deg(
                [_feedback_matrix(layer) for layer in feedback_layers],
                [ops.convert_to_numpy(layer.kernel.value) for layer in feedback_layers],
            )
        rows.append(
            BlockAlignment(
                name=row.name,
                num_variables=len(row.variables),
                angle_update_deg=angle_deg(row.update, row.backprop),
                angle_feedback_deg=feedback,
                update_norm=float(np.linalg.norm(_flat(row.update))),
                backprop_norm=float(np.linalg.norm(_flat(row.backprop))),
            )
        )
    return AlignmentResult(tuple(rows), model.rule.name, model.name, len(x))
