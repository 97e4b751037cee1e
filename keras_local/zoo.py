"""Model builders: architectures only; the rule is passed in.

Every builder returns a compiled `LocalModel` (Adam with epsilon 1e-8, the
reference code's optimizer, and XLA compilation) so that

    keras_local.zoo.vgg11b(rule="predsim").fit(ds)

runs as written. Defaults are the reference script's (`anokland/local-loss`):
learning rate 5e-4, no dropout, `dim_in_decoder` 4096, beta 0.99; the
per-data-set recipes of the paper live in the top-level `zoo/` folder.

`mostafa_mlp`, `mostafa_cnn5` and `mostafa_cnn10` are the three networks of
Mostafa, Ramesh & Cauwenberghs (2018), "Deep supervised learning using local
errors", built with the same blocks and compiled the same way.
"""

import keras

from keras_local import rules as rules_lib
from keras_local.layers import ConvBlock
from keras_local.layers import DenseBlock
from keras_local.model import LocalModel

#: The VGG variants of Nøkland & Eidnes (2019): conv channels, "M" = 2x2 max-pool.
VGG_CONFIGS = {
    "vgg8b": (128, 256, "M", 256, 512, "M", 512, "M", 512, "M"),
    "vgg11b": (128, 128, 128, 256, "M", 256, 512, "M", 512, 512, "M", 512, "M"),
}

#: The 10-layer network of Mostafa et al. (2018), section 5.2: 3x3 convs,
#: "M" = 2x2 max-pool.
MOSTAFA_CNN10_CONFIG = (
    64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M",
)

#: The default of the Mostafa builders: local errors from fixed random
#: classifiers, the paper's rule.
MOSTAFA_RULE = "random-classifier"


def _finish(blocks, *, rule, num_classes, input_shape, learning_rate, augmentation, name):
    model = LocalModel(
        blocks,
        num_classes=num_classes,
        rule=rule,
        augmentation=augmentation,
        input_shape=input_shape,
        name=name,
    )
    # XLA on every backend: on TensorFlow's CPU path Keras' "auto" leaves it
    # off, and it halves the local-loss step time there.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, epsilon=1e-8), jit_compile=True
    )
    return model


def _conv_stack(config, *, width, activation, dropout, stem, batch_norm=True):
    """3x3 stride-1 `ConvBlock`s from a config of channels and "M" (a 2x2
    max-pool on the preceding block's output); `stem` gives the first block
    the 7x7 stride-2 convolution on inputs larger than 64 px."""
    widths, pools = [], []
    for item in config:
        if item == "M":
            if not widths:
                raise ValueError("A VGG config cannot start with a pool ('M').")
            pools[-1] = 2
        else:
            widths.append(int(item * width))
            pools.append(None)
    return [
        ConvBlock(
            filters,
            activation=activation,
            dropout=dropout,
            pool_size=pool,
            batch_norm=batch_norm,
            large_input_stem=stem and i == 1,
            name=f"block{i}",
        )
        for i, (filters, pool) in enumerate(zip(widths, pools), start=1)
    ]


def mlp(
    layers=3,
    units=1024,
    *,
    rule="predsim",
    num_classes=10,
    input_shape=None,
    width=1,
    dropout=0.0,
    beta=None,
    learning_rate=5e-4,
    dim_in_decoder=None,
    activation=None,
    augmentation=None,
    name="mlp",
):
    """A multilayer perceptron of `layers` `DenseBlock`s and a linear output.

    The paper's "3x1024 MLP" (2.92M parameters on 28x28 inputs).

    Args:
        layers: number of hidden blocks.
        units: width of each hidden block.
        rule: a rule name or `Rule` (`keras_local.rules.names()`).
        num_classes: number of classes.
        input_shape: shape of one example; `None` builds from the first batch.
        width: multiplies `units` (an MLP has no filters to multiply).
        dropout: dropout rate after every hidden activation.
        beta: the predsim mixing weight (rule default when `None`).
        learning_rate: Adam's learning rate.
        dim_in_decoder: largest input of the local classifiers (rule
            default when `None`); irrelevant for dense blocks.
        activation: hidden activation; the rule's default when `None`
            (ReLU for backprop and pred, leaky ReLU 0.01 for sim and predsim).
        augmentation: a layer applied to training inputs only.
        name: the model's name.
    """
    rule = rules_lib.get(rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or rule.default_activation
    blocks = [
        DenseBlock(int(units * width), activation=activation, dropout=dropout, name=f"block{i}")
        for i in range(1, layers + 1)
    ]
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
    )


def vgg(
    config,
    *,
    rule="predsim",
    num_classes=10,
    input_shape=None,
    width=1,
    dropout=0.0,
    beta=None,
    learning_rate=5e-4,
    dim_in_decoder=None,
    activation=None,
    fc_layers=1,
    fc_units=1024,
    augmentation=None,
    name="vgg",
):
    """A VGG-like network from a config of conv widths and "M" (max-pool).

    3x3 stride-1 `ConvBlock`s (the first one a 7x7 stride-2 stem on inputs
    larger than 64 px), each "M" a 2x2 max-pool on the preceding block's
    output, then `fc_layers` `DenseBlock`s of `fc_units` and a linear output.

    Args:
        config: a sequence of ints (conv channels before `width`) and "M".
        width: multiplies the conv channels (the paper's "(2x)", "(3x)");
            the dense width is not multiplied, as in the reference code.
        fc_layers, fc_units: the hidden dense blocks after the convolutions.
        The other arguments are as in `mlp`.
    """
    rule = rules_lib.get(rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or rule.default_activation
    blocks = _conv_stack(
        config, width=width, activation=activation, dropout=dropout, stem=True
    )
    blocks += [
        DenseBlock(fc_units, activation=activation, dropout=dropout, name=f"block{i}")
        for i in range(len(blocks) + 1, len(blocks) + 1 + fc_layers)
    ]
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
    )


def vgg8b(**kwargs):
    """VGG8B: conv128-conv256-pool-conv256-conv512-pool-conv512-pool-conv512-
    pool-fc1024-fc (8.90M parameters on CIFAR-10, 7.33M on MNIST).

    Takes the keyword arguments of `vgg`.
    """
    return vgg(VGG_CONFIGS["vgg8b"], **{"name": "vgg8b", **kwargs})


def vgg11b(**kwargs):
    """VGG11B: conv128 x3-conv256-pool-conv256-conv512-pool-conv512 x2-pool-
    conv512-pool-fc1024-fc (11.56M parameters on CIFAR-10).

    Takes the keyword arguments of `vgg`.
    """
    return vgg(VGG_CONFIGS["vgg11b"], **{"name": "vgg11b", **kwargs})


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


def mostafa_mlp(
    layers=3,
    units=1000,
    *,
    rule=MOSTAFA_RULE,
    num_classes=10,
    input_shape=None,
    width=1,
    dropout=0.0,
    beta=None,
    learning_rate=5e-4,
    dim_in_decoder=None,
    activation=None,
    batch_norm=False,
    augmentation=None,
    name="mostafa_mlp",
):
    """Mostafa et al. (2018)'s MNIST network: 3 fully connected hidden layers
    of 1000 ReLU units and a linear output.

    Section 5.1 of the paper; on 28x28 inputs the hidden kernels hold the
    |P| = 2,784,000 weights of its Figure 6 (biases and the output layer not
    counted).

    Differences from the paper: a block's local head reads its activation
    before dropout, where the paper's local classifier reads it after the
    dropout mask; and the paper trains with SGD and Nesterov momentum (0.9,
    learning rate 0.1 divided by 5 every 25 of 100 epochs), where every
    builder compiles Adam (recompile to change it).

    Args:
        layers, units: the hidden `DenseBlock`s (the paper's 3 x 1000).
        batch_norm: off by default: the paper batch-normalises only "some
            networks" (section 3.1) and says so for the CIFAR-10 ones, but
            not for this one.
        activation: ReLU, the paper's for every network and rule, when
            `None` (not the rule's default, unlike `mlp`).
        dropout: dropout rate after every hidden activation ("DO" in the
            paper's tables; it gives no rate).
        rule: default `"random-classifier"`, the paper's fixed random local
            classifiers.
        The other arguments are as in `mlp`.
    """
    rule = rules_lib.get(rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or "relu"
    blocks = [
        DenseBlock(
            int(units * width),
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            name=f"block{i}",
        )
        for i in range(1, layers + 1)
    ]
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
    )


def mostafa_cnn5(
    *,
    rule=MOSTAFA_RULE,
    num_classes=10,
    input_shape=None,
    width=1,
    dropout=0.0,
    input_dropout=0.0,
    beta=None,
    learning_rate=5e-4,
    dim_in_decoder=None,
    activation=None,
    batch_norm=True,
    fc_units=2048,
    augmentation=None,
    name="mostafa_cnn5",
):
    """Mostafa et al. (2018)'s 5-layer CIFAR-10 network: conv96-conv128-
    conv256, each 5x5 followed by a 3x3 stride-2 max-pool, then fc2048-fc2048.

    Section 5.2 of the paper (after Srivastava et al. 2014); every layer is
    batch-normalised, ReLU. On 32x32x3 inputs the pooled maps are 16x16x96,
    8x8x128 and 4x4x256, the block outputs hold the 40,960 activations per
    example and the kernels the |P| = 13,716,512 weights of its Figure 6.

    The pools are `"same"`-padded: the sizes of PyTorch's
    `MaxPool2d(3, 2, padding=1)`, with the padding at the bottom and right
    (see `ConvBlock`). The paper drops out "after the input layer, after each
    max-pooling layer and after each fully connected layer": the input
    dropout is `input_dropout` (a training-only layer in the model's
    augmentation slot, after `augmentation`), the others `dropout`.

    Differences from the paper: a `ConvBlock` drops out before its max-pool,
    and whole channels (`SpatialDropout2D`), where the paper pools, then drops
    out; the block's local head reads the activation before dropout and
    pooling, where the paper's local classifier reads it after both; and the
    paper trains with SGD and Nesterov momentum (see `mostafa_mlp`).

    Args:
        width: multiplies the conv maps (96, 128, 256); not `fc_units`.
        dropout: the rate after each max-pooled conv block and each fully
            connected block.
        input_dropout: the rate of element-wise dropout on the (augmented)
            training inputs.
        batch_norm: whether every block normalises (the paper's do).
        fc_units: width of the two fully connected blocks.
        activation: ReLU when `None`, as in `mostafa_mlp`.
        The other arguments are as in `mostafa_mlp`.
    """
    rule = rules_lib.get(rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or "relu"
    augmentation = _with_input_dropout(augmentation, input_dropout)
    blocks = [
        ConvBlock(
            int(filters * width),
            kernel_size=5,
            activation=activation,
            dropout=dropout,
            pool_size=3,
            pool_strides=2,
            pool_padding="same",
            batch_norm=batch_norm,
            name=f"block{i}",
        )
        for i, filters in enumerate((96, 128, 256), start=1)
    ]
    blocks += [
        DenseBlock(
            fc_units,
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            name=f"block{i}",
        )
        for i in (4, 5)
    ]
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
    )


def mostafa_cnn10(
    *,
    rule=MOSTAFA_RULE,
    num_classes=10,
    input_shape=None,
    width=1,
    dropout=0.0,
    beta=None,
    learning_rate=5e-4,
    dim_in_decoder=None,
    activation=None,
    batch_norm=True,
    augmentation=None,
    name="mostafa_cnn10",
):
    """Mostafa et al. (2018)'s 10-layer CIFAR-10 network: C64-C64-MP-C128-
    C128-MP-C256-C256-MP-C512-C512-MP-C512-C512-MP and a linear output.

    Section 5.2 of the paper: 3x3 stride-1 convolutions, 2x2 max-pools,
    batch norm, ReLU, no hidden fully connected layer. On 32x32x3 inputs the
    ten kernels hold the |P| = 9,402,048 weights of its Figure 6 and the
    block outputs the 156,160 activations per example; the last pool leaves
    1x1x512 for the output layer. No 7x7 stem on large inputs (unlike `vgg`).

    Differences from the paper: a `ConvBlock` drops out (whole channels)
    before its max-pool, and its local head reads the activation before
    dropout and pooling; the paper trains with SGD and Nesterov momentum (see
    `mostafa_mlp`).

    Args:
        width: multiplies the conv channels.
        dropout: the rate of every block's `SpatialDropout2D`.
        batch_norm: whether every block normalises.
        activation: ReLU when `None`, as in `mostafa_mlp`.
        The other arguments are as in `mostafa_mlp`.
    """
    rule = rules_lib.get(rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or "relu"
    blocks = _conv_stack(
        MOSTAFA_CNN10_CONFIG,
        width=width,
        activation=activation,
        dropout=dropout,
        stem=False,
        batch_norm=batch_norm,
    )
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
    )


_BUILDERS = {
    "mlp": mlp,
    "vgg8b": vgg8b,
    "vgg11b": vgg11b,
    "mostafa_mlp": mostafa_mlp,
    "mostafa_cnn5": mostafa_cnn5,
    "mostafa_cnn10": mostafa_cnn10,
}


def names():
    """The model names `get` knows."""
    return sorted(_BUILDERS)


def get(name):
    """The builder called `name`; `ValueError` listing the valid names."""
    try:
        return _BUILDERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}. Valid models: {', '.join(names())}."
        ) from None
