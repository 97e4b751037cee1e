"""The local-loss rules of Nøkland & Eidnes (2019): pred, sim and predsim.

Each hidden block carries a local classifier (`PredictionHead`, trained with
cross-entropy: the *pred* loss) and/or a similarity head (`SimilarityHead`,
matching the batch's similarity matrix to the labels': the *sim* loss).
predsim mixes them, `(1 - beta) * pred + beta * sim`, and scales the output
layer's cross-entropy by `1 - beta` as the reference code does.
"""

import keras

from keras_local.layers.prediction_head import HEAD_DTYPE
from keras_local.layers.prediction_head import PredictionHead
from keras_local.layers.similarity_head import SimilarityHead
from keras_local.ops import prediction_loss
from keras_local.ops import similarity_loss
from keras_local.rules.base import LocalObjective
from keras_local.rules.base import Rule
from keras_local.rules.base import check_count
from keras_local.rules.base import check_fraction
from keras_local.rules.base import renamed_from
from keras_local.rules.registry import register


class WeightedLossObjective(LocalObjective):
    """Base of the objectives that mix a pred and a sim loss: validates the
    weights and names the parts (`loss_names`, `has_local_classifier`).

    Args:
        num_classes: number of classes.
        pred_weight: weight of the classifier's loss, or `None` for none.
        sim_weight: weight of the similarity loss, or `None` for none.
        dim_in_decoder: largest flattened input of the heads.
    """

    def __init__(
        self, num_classes, pred_weight=None, sim_weight=None, dim_in_decoder=4096, **kwargs
    ):
        super().__init__(**kwargs)
        if pred_weight is None and sim_weight is None:
            raise ValueError(f"{type(self).__name__} needs a pred or a sim loss (or both).")
        self.num_classes = num_classes
        self.pred_weight = pred_weight
        self.sim_weight = sim_weight
        self.dim_in_decoder = dim_in_decoder
        self.has_local_classifier = pred_weight is not None
        self.loss_names = tuple(
            name
            for name, weight in (("pred", pred_weight), ("sim", sim_weight))
            if weight is not None
        )


@keras.saving.register_keras_serializable(package="keras_local")
@renamed_from("LocalLossHeads")
class LocalLossObjective(WeightedLossObjective):
    """A block's pred and/or sim heads and their weighted local loss.

    Args:
        num_classes: number of classes.
        pred_weight: weight of the cross-entropy of the local classifier, or
            `None` for no classifier head.
        sim_weight: weight of the similarity-matching loss, or `None` for no
            similarity head.
        dim_in_decoder: largest input of the local classifier; conv maps are
            average-pooled down to it (`decoder_pooling`).

    Example:

    >>> heads = LocalLossObjective(10, pred_weight=0.01, sim_weight=0.99)
    >>> x = keras.ops.ones((4, 8, 8, 16))
    >>> out = heads(x, x, keras.ops.array([0, 1, 2, 3]))
    >>> sorted(out)
    ['logits', 'loss', 'pred_loss', 'sim_loss']
    """

    def __init__(
        self,
        num_classes,
        pred_weight=None,
        sim_weight=None,
        dim_in_decoder=4096,
        **kwargs,
    ):
        super().__init__(num_classes, pred_weight, sim_weight, dim_in_decoder, **kwargs)
        self.prediction_head = None
        self.similarity_head = None
        if pred_weight is not None:
            self.prediction_head = PredictionHead(
                num_classes,
                dim_in_decoder=dim_in_decoder,
                dtype=HEAD_DTYPE,
                name="prediction_head",
            )
        if sim_weight is not None:
            self.similarity_head = SimilarityHead(name="similarity_head")

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        for head in (self.prediction_head, self.similarity_head):
            if head is not None:
                head.build(features_shape)
        self.built = True

    def predict(self, features, outputs):
        if self.prediction_head is None:
            return super().predict(features, outputs)
        return self.prediction_head(features)

    def call(self, features, outputs, labels, training=None):
        result = {}
        loss = 0.0
        if self.prediction_head is not None:
            logits = self.predict(features, outputs)
            result["logits"] = logits
            result["pred_loss"] = prediction_loss(logits, labels)
            loss = loss + self.pred_weight * result["pred_loss"]
        if self.similarity_head is not None:
            similarity = self.similarity_head(features)
            result["sim_loss"] = similarity_loss(similarity, labels, self.num_classes)
            loss = loss + self.sim_weight * result["sim_loss"]
        result["loss"] = loss
        return result


#: Former names.
WeightedLossParts = WeightedLossObjective
LocalLossHeads = LocalLossObjective


@register
class Pred(Rule):
    """Each block trains a local linear classifier with cross-entropy.

    Args:
        dim_in_decoder: largest input of the local classifiers (conv maps are
            average-pooled down to it).
    """

    name = "pred"
    default_activation = "relu"

    def __init__(self, dim_in_decoder=4096):
        self.dim_in_decoder = check_count("dim_in_decoder", dim_in_decoder)

    def make_objective(self, block, num_classes):
        return LocalLossObjective(
            num_classes, pred_weight=1.0, dim_in_decoder=self.dim_in_decoder,
            name=f"{block.name}_heads",
        )

    def get_config(self):
        return {"dim_in_decoder": self.dim_in_decoder}


@register
class Sim(Rule):
    """Each block matches its similarity matrix to the labels'."""

    name = "sim"
    default_activation = "leaky_relu"

    def make_objective(self, block, num_classes):
        return LocalLossObjective(num_classes, sim_weight=1.0, name=f"{block.name}_heads")


@register
class PredSim(Rule):
    """`(1 - beta) * pred + beta * sim` in every block; the output layer's
    cross-entropy is scaled by `1 - beta`.

    Args:
        beta: weight of the sim loss, 0.99 in the paper.
        dim_in_decoder: largest input of the local classifiers.
    """

    name = "predsim"
    default_activation = "leaky_relu"

    def __init__(self, beta=0.99, dim_in_decoder=4096):
        self.beta = check_fraction("beta", beta)
        self.dim_in_decoder = check_count("dim_in_decoder", dim_in_decoder)

    def make_objective(self, block, num_classes):
        return LocalLossObjective(
            num_classes,
            pred_weight=1.0 - self.beta,
            sim_weight=self.beta,
            dim_in_decoder=self.dim_in_decoder,
            name=f"{block.name}_heads",
        )

    @property
    def output_loss_weight(self):
        return 1.0 - self.beta

    def get_config(self):
        return {"beta": self.beta, "dim_in_decoder": self.dim_in_decoder}
