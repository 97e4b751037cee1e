"""Backend-neutral operations of the local losses (`keras.ops` only).

Every loss and similarity matrix here is computed in float32 whatever the
dtype of its inputs: under a mixed precision policy (`mixed_bfloat16`,
`mixed_float16`) the blocks compute in 16 bits, but a mean over a batch, a
centred and normalised row, or a softmax lose too much in 16 bits, and the
losses of all blocks must share one dtype to be summed.
"""

from keras import ops

#: The dtype of every local loss and similarity matrix.
LOSS_DTYPE = "float32"


def to_loss_dtype(x):
    """`x` cast to `LOSS_DTYPE` (float32); the gradient is cast back to
    `x`'s dtype on the way down, so a 16-bit block still gets a 16-bit
    gradient."""
    return ops.cast(x, LOSS_DTYPE)


def safe_sqrt(x):
    """sqrt with a zero (not NaN) gradient at 0, as PyTorch's `std`/`norm`.

    A dead channel (constant over space) or a constant row is common with
    ReLU; `sqrt`'s infinite slope at 0 would turn its gradient into NaN.
    """
    positive = x > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, x, 1.0)), 0.0)


def similarity_matrix(x, epsilon=1e-8, spatial_std=True):
    """The adjusted cosine similarity (correlation) matrix of a batch.

    Follows Nøkland & Eidnes (2019), eq. 5, as the reference code computes it:
    a conv map `(N, H, W, C)` with `C > 3` and `H > 1` is first reduced to the
    per-channel spatial standard deviation `(N, C)`; anything else is flattened.
    Each row is centred, divided by `epsilon + ||row||`, and the Gram matrix is
    clipped to [-1, 1].

    Args:
        x: a batch of activations, rank 2 or 4 (channels last).
        epsilon: added to each row norm (not inside the square root).
        spatial_std: reduce conv maps by their spatial std (the paper) rather
            than flattening them.

    Returns:
        An `(N, N)` float32 matrix (computed in float32).
    """
    x = to_loss_dtype(x)
    shape = ops.shape(x)
    if len(shape) == 4 and spatial_std and shape[3] > 3 and shape[1] > 1:
        centred = x - ops.mean(x, axis=(1, 2), keepdims=True)
        x = safe_sqrt(ops.mean(ops.square(centred), axis=(1, 2)))
    else:
        x = ops.reshape(x, (shape[0], -1))
    x = x - ops.mean(x, axis=1, keepdims=True)
    norm = safe_sqrt(ops.sum(ops.square(x), axis=1, keepdims=True))
    x = x / (epsilon + norm)
    return ops.clip(ops.matmul(x, ops.transpose(x)), -1.0, 1.0)


def label_similarity(labels, num_classes):
    """`similarity_matrix` of the one-hot labels: 1 for pairs of the same
    class, -1/(K-1) otherwise. Never differentiated."""
    one_hot = ops.one_hot(ops.cast(labels, "int32"), num_classes)
    return ops.stop_gradient(similarity_matrix(one_hot))


def similarity_loss(similarity, labels, num_classes):
    """Mean squared difference, over all N^2 entries, between a similarity
    matrix and the labels' similarity matrix (the paper's sim loss), in
    float32."""
    return similarity_matching_loss(similarity, label_similarity(labels, num_classes))


def similarity_matching_loss(similarity, target):
    """Mean squared difference between two similarity matrices, in float32."""
    return ops.mean(ops.square(to_loss_dtype(similarity) - to_loss_dtype(target)))


def prediction_loss(logits, labels):
    """Mean cross-entropy of integer labels given logits (the pred loss),
    in float32."""
    return ops.mean(
        ops.sparse_categorical_crossentropy(
            ops.cast(labels, "int32"), to_loss_dtype(logits), from_logits=True
        )
    )


def binary_prediction_loss(targets, logits):
    """Mean binary cross-entropy of 0/1 targets given logits (the pred loss
    of the backprop-free rules), in float32."""
    return ops.mean(
        ops.binary_crossentropy(
            to_loss_dtype(targets), to_loss_dtype(logits), from_logits=True
        )
    )


def mean_squared_error(prediction, target):
    """Mean squared difference over all entries, in float32."""
    return ops.mean(ops.square(to_loss_dtype(prediction) - to_loss_dtype(target)))


def feedback_alignment(apply, x, kernel, feedback):
    """`apply(x, kernel)` whose input gradient goes through `feedback` instead.

    `apply` is linear in both arguments (a matmul, a convolution). The value
    is `apply(x, kernel)`; `x` receives the gradient `apply` would send it
    with `feedback` in place of `kernel` (a fixed random matrix or filters:
    feedback alignment, Lillicrap et al. 2016), and `kernel` its true
    gradient. No custom gradient is needed, so it works on every backend:
    `apply(sg(x), kernel) + apply(x, feedback) - sg(apply(x, feedback))`.
    """
    through_feedback = apply(x, feedback)
    return (
        apply(ops.stop_gradient(x), kernel)
        + through_feedback
        - ops.stop_gradient(through_feedback)
    )


def feedback_alignment_matmul(x, kernel, feedback):
    """`x @ kernel` sending `g @ feedback^T` to `x` and `x^T g` to `kernel`."""
    return feedback_alignment(ops.matmul, x, kernel, feedback)


def gradient_surrogate(x, gradient):
    """A scalar whose value is 0 and whose gradient with respect to `x` is
    `gradient` (held constant).

    Adding it to a loss injects a chosen error signal at `x` (the direct
    feedback of DFA, the targets of rec-LRA) without changing the loss's
    value, so logged losses stay the real ones. It is a float32 scalar
    (to be added to float32 losses); `x` receives `gradient` cast to its
    own dtype.
    """
    inner = ops.sum(to_loss_dtype(x) * ops.stop_gradient(to_loss_dtype(gradient)))
    return inner - ops.stop_gradient(inner)
