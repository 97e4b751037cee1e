"""Local errors from fixed random classifiers (Mostafa, Ramesh &
Cauwenberghs 2018): every block learns from the cross-entropy of its own
fixed random classifier on its outputs, the error coming back through
`M^T`, sign-concordant or random feedback. Details: `docs/rules.md`,
section "random-classifier".
"""

import math

import keras
from keras import ops

from keras_local.layers.prediction_head import HEAD_DTYPE
from keras_local.ops import feedback_alignment_matmul
from keras_local.ops import prediction_loss
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.base import renamed_from
from keras_local.rules.registry import register

FEEDBACKS = ("sym", "scfb", "random")
DISTRIBUTIONS = ("uniform", "normal")


def random_classifier_initializer(fan_in, fan_out, distribution):
    """Zero mean, std `sqrt(2 / (n_in + n_out))` (the paper's eq. 7)."""
    std = math.sqrt(2.0 / (fan_in + fan_out))
    if distribution == "uniform":
        limit = std * math.sqrt(3.0)
        return keras.initializers.RandomUniform(-limit, limit)
    return keras.initializers.RandomNormal(0.0, std)


@keras.saving.register_keras_serializable(package="keras_local")
@renamed_from("RandomClassifierHead")
class RandomClassifierObjective(LocalObjective):
    """A block's fixed random classifier `M` and feedback `K`.

    Args:
        num_classes: number of classes.
        feedback: `"sym"` (`M^T`), `"scfb"` (sign-concordant) or
            `"random"` (independent).
        trainable_classifier: train `M` too (TLC).
        distribution: `"uniform"` or `"normal"` initialisation of `M` (and of
            `K`'s magnitudes).

    Example:

    >>> head = RandomClassifierObjective(10, feedback="scfb")
    >>> x = keras.ops.ones((4, 32))
    >>> sorted(head(x, x, keras.ops.array([0, 1, 2, 3])))
    ['logits', 'loss', 'pred_loss']
    """

    loss_names = ("pred",)
    has_local_classifier = True

    def __init__(
        self,
        num_classes,
        feedback="sym",
        trainable_classifier=False,
        distribution="uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_choice("feedback", feedback, FEEDBACKS)
        _check_choice("distribution", distribution, DISTRIBUTIONS)
        self.num_classes = num_classes
        self.feedback = feedback
        self.trainable_classifier = trainable_classifier
        self.distribution = distribution

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        shape = outputs_shape if outputs_shape is not None else features_shape
        width = math.prod(shape[1:])
        initializer = random_classifier_initializer(
            self.num_classes, width, self.distribution
        )
        self.classifier_matrix = self.add_weight(
            shape=(width, self.num_classes),
            initializer=initializer,
            trainable=self.trainable_classifier,
            name="classifier_matrix",
        )
        # `feedback_matrix` is K^T, stored in M's layout (width, classes).
        self.feedback_matrix = None
        if self.feedback != "sym":
            self.feedback_matrix = self.add_weight(
                shape=(width, self.num_classes),
                initializer=random_classifier_initializer(
                    self.num_classes, width, self.distribution
                ),
                trainable=False,
                name="feedback_matrix",
            )
            if self.feedback == "scfb":
                self.feedback_matrix.assign(
                    ops.abs(self.feedback_matrix) * ops.sign(self.classifier_matrix)
                )
        self.built = True

    def predict(self, features, outputs):
        # Its value is `flat @ M` for every feedback; only the gradient differs.
        # Cast explicitly: early exits call `predict` outside `__call__`,
        # where nothing casts the block's (maybe 16-bit) outputs.
        flat = ops.cast(ops.reshape(outputs, (ops.shape(outputs)[0], -1)), self.compute_dtype)
        classifier = ops.cast(self.classifier_matrix, self.compute_dtype)
        if self.feedback_matrix is None:
            return ops.matmul(flat, classifier)
        feedback = ops.cast(self.feedback_matrix, self.compute_dtype)
        return feedback_alignment_matmul(flat, classifier, feedback)

    def call(self, features, outputs, labels, training=None):
        logits = self.predict(features, outputs)
        pred_loss = prediction_loss(logits, labels)
        return {"loss": pred_loss, "pred_loss": pred_loss, "logits": logits}

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "feedback": self.feedback,
            "trainable_classifier": self.trainable_classifier,
            "distribution": self.distribution,
        }


#: Former name.
RandomClassifierHead = RandomClassifierObjective


@register
class RandomClassifier(Rule):
    """Every block learns from the cross-entropy of a fixed random classifier
    on its output (Mostafa et al. 2018).

    Args:
        feedback: `"sym"` (exact local gradient), `"scfb"` (sign-concordant)
            or `"random"` (independent).
        trainable: train the local classifiers too (TLC).
        distribution: `"uniform"` (the paper's default) or `"normal"` (GI).
    """

    name = "random-classifier"
    default_activation = "relu"

    def __init__(self, feedback="sym", trainable=False, distribution="uniform"):
        _check_choice("feedback", feedback, FEEDBACKS)
        _check_choice("distribution", distribution, DISTRIBUTIONS)
        self.feedback = feedback
        self.trainable = trainable
        self.distribution = distribution

    def make_objective(self, block, num_classes):
        return RandomClassifierObjective(
            num_classes,
            feedback=self.feedback,
            trainable_classifier=self.trainable,
            distribution=self.distribution,
            dtype=HEAD_DTYPE,  # float32 logits under a mixed policy
            name=f"{block.name}_classifier",
        )

    def get_config(self):
        return {
            "feedback": self.feedback,
            "trainable": self.trainable,
            "distribution": self.distribution,
        }


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}."
        )
