"""The networks of Mostafa, Ramesh & Cauwenberghs (2018), "Deep supervised
learning using local errors".

Their provenance (the paper's sections 5.1 and 5.2, its Figure 6, where the
blocks differ from the paper's layers) is in docs/zoo.md.
"""

import dataclasses

import keras

from keras_local.layers import ConvBlock
from keras_local.zoo.options import build_model
from keras_local.zoo.registry import register
from keras_local.zoo.stacks import conv_stack
from keras_local.zoo.stacks import dense_stack
from keras_local.zoo.stacks import pool_stages

#: The default of the Mostafa builders: local errors from fixed random
#: classifiers, the paper's rule.
MOSTAFA_RULE = "random-classifier"

#: The 10-layer network of Mostafa et al. (2018), section 5.2: 3x3 convs,
#: "M" = 2x2 max-pool.
MOSTAFA_CNN10_CONFIG = (
    64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M",
)


@register("mostafa_mlp", rule=MOSTAFA_RULE, default_activation="relu")
def mostafa_mlp(layers=3, units=1000, *, batch_norm=False, options):
    """Mostafa et al. (2018)'s MNIST network: 3 fully connected hidden layers
    of 1000 ReLU units and a linear output.

    Every block is a group of its own. The activation is ReLU, the paper's,
    unless given (not the rule's default, unlike `mlp`).

    Args:
        layers, units: the hidden `DenseBlock`s (the paper's 3 x 1000;
            `width` multiplies `units`).
        batch_norm: off by default (the paper does not normalise this one).
        **options: the options of every builder (`BuildOptions`); the
            default rule is `"random-classifier"`, the paper's.

    Example:

    >>> [b.units for b in mostafa_mlp(units=16, input_shape=(8, 8, 1)).hidden_blocks]
    [16, 16, 16]
    """
    blocks = dense_stack(
        [int(units * options.width)] * layers, options, batch_norm=batch_norm
    )
    return build_model(blocks, options)


@register("mostafa_cnn5", rule=MOSTAFA_RULE, default_activation="relu")
def mostafa_cnn5(
    *, input_dropout=0.0, batch_norm=True, fc_units=2048, conv="standard", options
):
    """Mostafa et al. (2018)'s 5-layer CIFAR-10 network: conv96-conv128-
    conv256, each 5x5 followed by a 3x3 stride-2 max-pool, then fc2048-fc2048.

    Every block is a group of its own; the pools are `"same"`-padded. ReLU
    unless given, as in `mostafa_mlp`.

    Args:
        input_dropout: the rate of element-wise dropout on the (augmented)
            training inputs, a training-only layer after `augmentation`.
        batch_norm: whether every block normalises (the paper's do).
        fc_units: width of the two fully connected blocks (`width`
            multiplies only the conv maps).
        conv: `"standard"` or `"perturbative"` (see `ConvBlock`).
        **options: the options of every builder (`BuildOptions`), as in
            `mostafa_mlp`; `dropout` is the rate after each max-pooled conv
            block and each fully connected block.

    Example:

    >>> mostafa_cnn5(width=0.25, fc_units=16, input_dropout=0.2).augmentation.rate
    0.2
    """
    options = dataclasses.replace(
        options, augmentation=_with_input_dropout(options.augmentation, input_dropout)
    )
    blocks = [
        ConvBlock(
            int(filters * options.width),
            kernel_size=5,
            activation=options.activation,
            dropout=options.dropout,
            pool_size=3,
            pool_strides=2,
            pool_padding="same",
            batch_norm=options.batch_norm(batch_norm),
            conv=conv,
            name=f"block{i}",
        )
        for i, filters in enumerate((96, 128, 256), start=1)
    ]
    blocks += dense_stack(
        [fc_units] * 2, options, batch_norm=batch_norm, first=len(blocks) + 1
    )
    return build_model(blocks, options)


@register("mostafa_cnn10", rule=MOSTAFA_RULE, default_activation="relu")
def mostafa_cnn10(*, batch_norm=True, conv="standard", options):
    """Mostafa et al. (2018)'s 10-layer CIFAR-10 network: C64-C64-MP-C128-
    C128-MP-C256-C256-MP-C512-C512-MP-C512-C512-MP and a linear output.

    3x3 stride-1 convolutions, 2x2 max-pools, no 7x7 stem on large inputs
    (unlike `vgg`). Groups: the five pooled stages of two convolutions each.
    ReLU unless given, as in `mostafa_mlp`.

    Args:
        batch_norm: whether every block normalises.
        conv: `"standard"` or `"perturbative"` (see `ConvBlock`).
        **options: the options of every builder (`BuildOptions`), as in
            `mostafa_mlp`; `dropout` is every block's `SpatialDropout2D`.

    Example:

    >>> mostafa_cnn10(width=0.125, input_shape=(32, 32, 3)).groups
    [2, 2, 2, 2, 2]
    """
    blocks = conv_stack(
        MOSTAFA_CNN10_CONFIG, options, stem=False, batch_norm=batch_norm, conv=conv
    )
    return build_model(blocks, options, groups=pool_stages(MOSTAFA_CNN10_CONFIG))


def _with_input_dropout(augmentation, rate):
    """`augmentation`, then element-wise dropout of the inputs at `rate`; both
    run in training steps only (the model's augmentation slot)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"input_dropout must be in [0, 1), got {rate}.")
    if rate == 0:
        return augmentation
    dropout = keras.layers.Dropout(rate, name="input_dropout")
    if augmentation is None:
        return dropout
    return keras.Sequential([augmentation, dropout], name="augmentation_then_dropout")
