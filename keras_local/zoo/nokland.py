"""The networks of Nøkland & Eidnes (2019): an MLP and VGG-like nets.

Their provenance (the paper's tables, the reference code) is in docs/zoo.md.
"""

from keras_local.zoo.associated import AL_CODE_UNITS
from keras_local.zoo.options import build_model
from keras_local.zoo.registry import builder
from keras_local.zoo.registry import register
from keras_local.zoo.stacks import conv_stack
from keras_local.zoo.stacks import dense_stack
from keras_local.zoo.stacks import pool_stages

#: The VGG variants of Nøkland & Eidnes (2019): conv channels, "M" = 2x2 max-pool.
VGG_CONFIGS = {
    "vgg8b": (128, 256, "M", 256, 512, "M", 512, "M", 512, "M"),
    "vgg11b": (128, 128, 128, 256, "M", 256, 512, "M", 512, 512, "M", 512, "M"),
}

#: How `vgg8b` and `vgg11b` group their conv blocks (each dense block is a
#: group of its own): VGG8B as Kao & Chen's VGG_AL, VGG11B split the same
#: way (its stages up to the first two pools, then the last two together).
VGG_CONV_GROUPS = {"vgg8b": (2, 2, 2), "vgg11b": (4, 2, 3)}


@register("mlp")
def mlp(layers=3, units=1024, *, options):
    """A multilayer perceptron of `layers` `DenseBlock`s and a linear output.

    Every block is a group of its own.

    Args:
        layers: number of hidden blocks.
        units: width of each hidden block (multiplied by `width`).
        **options: the options of every builder (`BuildOptions`).

    Example:

    >>> model = mlp(layers=2, units=16, rule="predsim", input_shape=(8, 8, 1))
    >>> [block.units for block in model.hidden_blocks]
    [16, 16]
    """
    blocks = dense_stack([int(units * options.width)] * layers, options)
    return build_model(blocks, options)


@builder(rule_defaults={"code_units": AL_CODE_UNITS})
def vgg(config, *, fc_layers=1, fc_units=1024, conv="standard", conv_groups=None, options):
    """A VGG-like network from a config of conv widths and "M" (max-pool).

    3x3 stride-1 `ConvBlock`s (the first one a 7x7 stride-2 stem on inputs
    larger than 64 px), each "M" a 2x2 max-pool on the preceding block's
    output, then `fc_layers` `DenseBlock`s of `fc_units` and a linear output.

    Args:
        config: a sequence of ints (conv channels before `width`) and "M".
        fc_layers, fc_units: the hidden dense blocks after the convolutions
            (`width` does not multiply `fc_units`).
        conv: `"standard"` or `"perturbative"` (see `ConvBlock`).
        conv_groups: how many consecutive conv blocks form each group, e.g.
            `(2, 2, 2)`; `None`: one group per pooled stage. Each dense block
            is a group of its own.
        **options: the options of every builder (`BuildOptions`).

    Example:

    >>> model = vgg((8, "M", 16, "M"), rule="backprop", input_shape=(8, 8, 1))
    >>> model.groups
    [1, 1, 1]
    """
    return _vgg(config, fc_layers, fc_units, conv, conv_groups, options)


@register("vgg8b", rule_defaults={"code_units": AL_CODE_UNITS})
def vgg8b(
    *, fc_layers=1, fc_units=1024, conv="standard", conv_groups=VGG_CONV_GROUPS["vgg8b"], options
):
    """VGG8B: conv128-conv256-pool-conv256-conv512-pool-conv512-pool-conv512-
    pool-fc1024-fc (8.90M parameters on CIFAR-10, 7.33M on MNIST).

    Groups: conv 2-2-2, then the dense block.

    Args:
        fc_layers, fc_units, conv, conv_groups: as in `vgg`.
        **options: the options of every builder (`BuildOptions`).

    Example:

    >>> vgg8b(rule="backprop", width=0.125, input_shape=(32, 32, 3)).groups
    [2, 2, 2, 1]
    """
    return _vgg(VGG_CONFIGS["vgg8b"], fc_layers, fc_units, conv, conv_groups, options)


@register("vgg11b", rule_defaults={"code_units": AL_CODE_UNITS})
def vgg11b(
    *, fc_layers=1, fc_units=1024, conv="standard", conv_groups=VGG_CONV_GROUPS["vgg11b"], options
):
    """VGG11B: conv128 x3-conv256-pool-conv256-conv512-pool-conv512 x2-pool-
    conv512-pool-fc1024-fc (11.56M parameters on CIFAR-10).

    Groups: conv 4-2-3, then the dense block.

    Args:
        fc_layers, fc_units, conv, conv_groups: as in `vgg`.
        **options: the options of every builder (`BuildOptions`).

    Example:

    >>> vgg11b(rule="predsim", width=0.125, input_shape=(32, 32, 3)).groups
    [4, 2, 3, 1]
    """
    return _vgg(VGG_CONFIGS["vgg11b"], fc_layers, fc_units, conv, conv_groups, options)


def _vgg(config, fc_layers, fc_units, conv, conv_groups, options):
    """The compiled VGG of `config` (see `vgg`)."""
    blocks = conv_stack(config, options, stem=True, conv=conv)
    groups = list(pool_stages(config) if conv_groups is None else conv_groups)
    if sum(groups) != len(blocks):
        raise ValueError(
            f"conv_groups must add up to the {len(blocks)} conv blocks; got "
            f"{list(conv_groups)!r}."
        )
    blocks += dense_stack([fc_units] * fc_layers, options, first=len(blocks) + 1)
    return build_model(blocks, options, groups=groups + [1] * fc_layers)
