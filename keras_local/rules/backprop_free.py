"""The backprop-free local losses of Nøkland & Eidnes (2019), section 3.3:
pred-bpf, sim-bpf and predsim-bpf.

Every block predicts its own fixed random binary code of the label through
a feedback-alignment classifier, and/or matches its pooled activation's
similarity to that of the codes; no weight transpose is used. The details
of the reference code's `--bio` mode: `docs/rules.md`, section
"pred-bpf, sim-bpf, predsim-bpf".
"""

import math

import keras
from keras import ops

from keras_local.layers.decoder_pooling import DecoderPooling
from keras_local.layers.feedback_alignment_dense import FeedbackAlignmentDense
from keras_local.layers.initializers import torch_kernel_initializer
from keras_local.layers.prediction_head import HEAD_DTYPE
from keras_local.ops import binary_prediction_loss
from keras_local.ops import similarity_matching_loss
from keras_local.ops import similarity_matrix
from keras_local.rules.base import Rule
from keras_local.rules.base import check_count
from keras_local.rules.base import check_fraction
from keras_local.rules.base import renamed_from
from keras_local.rules.local_losses import WeightedLossObjective
from keras_local.rules.registry import register


@keras.saving.register_keras_serializable(package="keras_local")
@renamed_from("BackpropFreeHeads")
class BackpropFreeObjective(WeightedLossObjective):
    """A block's fixed class codes, feedback-alignment classifier of the
    binarised code, and/or the similarity of its pooled activation.

    `"logits"` are class scores decoded from the predicted code: for class
    `c`, `bits @ code_c`, the log-likelihood of its binary code under the
    predicted bits up to a constant. The rules create it with
    `dtype=HEAD_DTYPE` (float32).

    Args:
        num_classes: number of classes.
        pred_weight: weight of the binary cross-entropy, or `None` for no
            classifier.
        sim_weight: weight of the similarity loss, or `None`.
        target_dim: length of the random class codes.
        dim_in_decoder: largest flattened input of the classifier and of the
            similarity (conv maps are average-pooled to it).
    """

    def __init__(
        self,
        num_classes,
        pred_weight=None,
        sim_weight=None,
        target_dim=128,
        dim_in_decoder=4096,
        **kwargs,
    ):
        super().__init__(num_classes, pred_weight, sim_weight, dim_in_decoder, **kwargs)
        self.target_dim = target_dim
        # Sublayers take the global policy unless told, so pass ours on.
        self.pooling = DecoderPooling(dim_in_decoder, dtype=self.dtype_policy, name="pooling")
        self.decoder = None
        if pred_weight is not None:
            self.decoder = FeedbackAlignmentDense(
                target_dim,
                kernel_initializer="zeros",
                bias_initializer="zeros",
                feedback_initializer="torch",
                dtype=self.dtype_policy,
                name="decoder",
            )

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        self.pooling.build(features_shape)
        pooled = self.pooling.compute_output_shape(features_shape)
        if self.decoder is not None:
            self.decoder.build((None, math.prod(pooled[1:])))
        # PyTorch's default for a Linear(num_classes -> target_dim): U(+-1/sqrt(K)).
        self.projection = self.add_weight(
            shape=(self.num_classes, self.target_dim),
            initializer=torch_kernel_initializer(),
            trainable=False,
            name="projection",
        )
        self.built = True

    def class_codes(self):
        """The binary code of every class, `(num_classes, target_dim)`."""
        return ops.cast(self.projection > 0, self.compute_dtype)

    def _bits(self, pooled):
        return self.decoder(ops.reshape(pooled, (ops.shape(pooled)[0], -1)))

    def _decode(self, bits):
        return ops.matmul(bits, ops.transpose(self.class_codes()))

    def predict(self, features, outputs):
        if self.decoder is None:
            return super().predict(features, outputs)
        return self._decode(self._bits(self.pooling(features)))

    def call(self, features, outputs, labels, training=None):
        pooled = self.pooling(features)
        codes = ops.take(self.projection, ops.cast(labels, "int32"), axis=0)
        result = {}
        loss = 0.0
        if self.decoder is not None:
            bits = self._bits(pooled)
            result["pred_loss"] = binary_prediction_loss(codes > 0, bits)
            result["logits"] = self._decode(bits)
            loss = loss + self.pred_weight * result["pred_loss"]
        if self.sim_weight is not None:
            target = ops.stop_gradient(similarity_matrix(codes))
            result["sim_loss"] = similarity_matching_loss(similarity_matrix(pooled), target)
            loss = loss + self.sim_weight * result["sim_loss"]
        result["loss"] = loss
        return result

    def get_config(self):
        return {**super().get_config(), "target_dim": self.target_dim}


#: Former name.
BackpropFreeHeads = BackpropFreeObjective


class _BackpropFreeRule(Rule):
    pred_weight = None
    sim_weight = None

    def __init__(self, target_dim=128, dim_in_decoder=4096):
        self.target_dim = check_count("target_dim", target_dim)
        self.dim_in_decoder = check_count("dim_in_decoder", dim_in_decoder)

    def make_objective(self, block, num_classes):
        return BackpropFreeObjective(
            num_classes,
            pred_weight=self.pred_weight,
            sim_weight=self.sim_weight,
            target_dim=self.target_dim,
            dim_in_decoder=self.dim_in_decoder,
            dtype=HEAD_DTYPE,
            name=f"{block.name}_heads",
        )

    def get_config(self):
        return {"target_dim": self.target_dim, "dim_in_decoder": self.dim_in_decoder}


@register
class PredBPF(_BackpropFreeRule):
    """Each block predicts its random binary class code (BCE) through a
    feedback-alignment classifier.

    Args:
        target_dim: length of the random class codes (128 in the paper).
        dim_in_decoder: largest input of the local classifiers.
    """

    name = "pred-bpf"
    default_activation = "relu"
    pred_weight = 1.0


@register
class SimBPF(_BackpropFreeRule):
    """Each block matches its pooled activation's similarity matrix to that
    of its random class codes; no learned head.

    Args:
        target_dim: length of the random class codes.
        dim_in_decoder: conv maps are average-pooled to at most this size
            before the similarity, as the reference code does.
    """

    name = "sim-bpf"
    default_activation = "leaky_relu"
    sim_weight = 1.0


@register
class PredSimBPF(_BackpropFreeRule):
    """`(1 - beta) * pred-bpf + beta * sim-bpf`; the output layer's
    cross-entropy is scaled by `1 - beta`.

    Args:
        beta: weight of the sim loss; 0.01 in the published recipes (the
            pred term dominates), not predsim's 0.99.
        target_dim: length of the random class codes.
        dim_in_decoder: largest input of the local classifiers.
    """

    name = "predsim-bpf"
    default_activation = "leaky_relu"

    def __init__(self, beta=0.01, target_dim=128, dim_in_decoder=4096):
        beta = check_fraction("beta", beta)
        super().__init__(target_dim=target_dim, dim_in_decoder=dim_in_decoder)
        self.beta = beta
        self.pred_weight = 1.0 - beta
        self.sim_weight = beta

    @property
    def output_loss_weight(self):
        return 1.0 - self.beta

    def get_config(self):
        return {"beta": self.beta, **super().get_config()}
