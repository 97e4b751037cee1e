"""Blocks with attached local heads, the heads, and augmentation layers."""

from keras_local.layers.block import Block
from keras_local.layers.block import BlockOutput
from keras_local.layers.block import BlockSpec
from keras_local.layers.conv_block import ConvBlock
from keras_local.layers.cutout import Cutout
from keras_local.layers.decoder_pooling import DecoderPooling
from keras_local.layers.decoder_pooling import decoder_pooling
from keras_local.layers.dense_block import DenseBlock
from keras_local.layers.feedback_alignment_conv2d import FeedbackAlignmentConv2D
from keras_local.layers.feedback_alignment_dense import FeedbackAlignmentDense
from keras_local.layers.keras_block import KerasBlock
from keras_local.layers.perturbative_conv2d import PerturbativeConv2D
from keras_local.layers.prediction_head import PredictionHead
from keras_local.layers.random_jitter import RandomJitter
from keras_local.layers.residual_block import ResidualBlock
from keras_local.layers.scaled_dense import ScaledDense
from keras_local.layers.similarity_head import SimilarityHead
from keras_local.layers.torch_batch_normalization import TorchBatchNormalization

__all__ = [
    "Block",
    "BlockOutput",
    "BlockSpec",
    "ConvBlock",
    "Cutout",
    "DecoderPooling",
    "DenseBlock",
    "FeedbackAlignmentConv2D",
    "FeedbackAlignmentDense",
    "KerasBlock",
    "PerturbativeConv2D",
    "PredictionHead",
    "RandomJitter",
    "ResidualBlock",
    "ScaledDense",
    "SimilarityHead",
    "TorchBatchNormalization",
    "decoder_pooling",
]
