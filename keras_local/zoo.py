"""Model builders: architectures only; the rule is passed in.

Every builder returns a compiled `LocalModel` (Adam with epsilon 1e-8, the
reference code's optimizer, and XLA compilation) so that

    keras_local.zoo.vgg11b(rule="predsim").fit(ds)

runs as written. Defaults are the reference script's (`anokland/local-loss`):
learning rate 5e-4, no dropout, `dim_in_decoder` 4096, beta 0.99; the
per-data-set recipes of the paper live in the top-level `zoo/` folder.
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
    widths, pools = [], []
    for item in config:
        if item == "M":
            if not widths:
                raise ValueError("A VGG config cannot start with a pool ('M').")
            pools[-1] = 2
        else:
            widths.append(int(item * width))
            pools.append(None)
    blocks = [
        ConvBlock(
            filters,
            activation=activation,
            dropout=dropout,
            pool_size=pool,
            large_input_stem=(i == 1),
            name=f"block{i}",
        )
        for i, (filters, pool) in enumerate(zip(widths, pools), start=1)
    ]
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


_BUILDERS = {"mlp": mlp, "vgg8b": vgg8b, "vgg11b": vgg11b}


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
