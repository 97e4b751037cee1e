"""Residual networks: ResNet-20 and -32 (He et al. 2016), the CIFAR
ResNet-18 and its perturbative variant pResNet-18.

Their provenance (He et al.'s Table 6, the associated-learning and rec-LRA
papers, what is assumed where the papers are silent) is in docs/zoo.md.
"""

from keras_local.layers import ConvBlock
from keras_local.layers import ResidualBlock
from keras_local.zoo.associated import AL_CODE_UNITS
from keras_local.zoo.options import build_model
from keras_local.zoo.registry import builder
from keras_local.zoo.registry import register
from keras_local.zoo.stacks import scaled

#: Residual blocks per stage and their channels (before `width`).
RESNET_STAGES = {
    "resnet20": ((3, 3, 3), (16, 32, 64)),
    "resnet32": ((5, 5, 5), (16, 32, 64)),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
}


@builder(rule_defaults={"code_units": AL_CODE_UNITS})
def resnet(stages, filters, *, shortcut="projection", conv="standard", options):
    """A residual network: a 3x3 stem, stages of `ResidualBlock`s, global
    average pooling and a linear output.

    The stem is a `ConvBlock` (3x3, stride 1, `filters[0]` channels); stage
    `i` has `stages[i]` basic blocks of `filters[i]` channels, the first
    block of every stage after the first with stride 2. The groups are the
    stem and each stage.

    Args:
        stages: residual blocks per stage, e.g. `(3, 3, 3)`.
        filters: channels per stage (before `width`, at least 1 channel),
            e.g. `(16, 32, 64)`.
        shortcut: `"projection"` (1x1 conv + BN where the shape changes) or
            `"identity"` (zero-padded, He et al.'s option A); see
            `ResidualBlock`.
        conv: `"standard"`, or `"perturbative"`: every residual block's two
            3x3 convolutions are `PerturbativeConv2D`s (the stem stays an
            ordinary convolution).
        **options: the options of every builder (`BuildOptions`); `dropout`
            is every block's `SpatialDropout2D`.

    Example:

    >>> resnet((1, 1), (8, 16), rule="backprop", input_shape=(8, 8, 3)).groups
    [1, 1, 1]
    """
    return _residual_network(stages, filters, shortcut, conv, options)


def _residual_network(stages, filters, shortcut, conv, options):
    """The compiled residual network (see `resnet`)."""
    stages, filters = tuple(stages), tuple(filters)
    if not stages or len(stages) != len(filters) or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in stages
    ):
        raise ValueError(
            "stages must be positive block counts, one per entry of filters; got "
            f"stages={stages!r}, filters={filters!r}."
        )
    channels = [scaled(f, options.width) for f in filters]
    blocks = [
        ConvBlock(
            channels[0],
            kernel_size=3,
            activation=options.activation,
            dropout=options.dropout,
            batch_norm=options.batch_norm(True),
            name="block1",
        )
    ]
    total = 1 + sum(stages)
    for stage, (count, stage_channels) in enumerate(zip(stages, channels)):
        for index in range(count):
            number = len(blocks) + 1
            blocks.append(
                ResidualBlock(
                    stage_channels,
                    strides=2 if stage > 0 and index == 0 else 1,
                    activation=options.activation,
                    dropout=options.dropout,
                    batch_norm=options.batch_norm(True),
                    shortcut=shortcut,
                    output_pooling="global_average" if number == total else None,
                    conv=conv,
                    name=f"block{number}",
                )
            )
    return build_model(blocks, options, groups=[1, *stages])


@register("resnet20", rule_defaults={"code_units": AL_CODE_UNITS})
def resnet20(*, shortcut="identity", conv="standard", options):
    """ResNet-20 (He et al. 2016): a 16-channel 3x3 stem, 3 stages of 3 basic
    blocks (16, 32, 64 channels), global average pool, linear.

    0.27M parameters on 32x32x3 with option-A shortcuts (the default).
    Groups: the stem and the three stages.

    Args:
        shortcut, conv: as in `resnet`.
        **options: the options of every builder (`BuildOptions`).

    Example:

    >>> resnet20(rule="backprop", width=0.25).groups
    [1, 3, 3, 3]
    """
    return _residual_network(*RESNET_STAGES["resnet20"], shortcut, conv, options)


@register("resnet32", rule_defaults={"code_units": AL_CODE_UNITS})
def resnet32(*, shortcut="identity", conv="standard", options):
    """ResNet-32 (He et al. 2016): as `resnet20` with 5 basic blocks per
    stage.

    0.46M parameters on 32x32x3. Groups: the stem and the three stages.

    Args:
        shortcut, conv: as in `resnet`.
        **options: the options of every builder (`BuildOptions`).

    Example:

    >>> resnet32(rule="backprop", width=0.25).groups
    [1, 5, 5, 5]
    """
    return _residual_network(*RESNET_STAGES["resnet32"], shortcut, conv, options)


@register("resnet18", rule_defaults={"code_units": AL_CODE_UNITS})
def resnet18(*, shortcut="projection", conv="standard", options):
    """ResNet-18, CIFAR variant: a 64-channel 3x3 stride-1 stem (no
    max-pool), 4 stages of 2 basic blocks (64, 128, 256, 512), global
    average pool, linear.

    11.17M parameters on 32x32x3, projection shortcuts. Groups: the stem and
    the four stages.

    Args:
        shortcut, conv: as in `resnet`.
        **options: the options of every builder (`BuildOptions`).

    Example:

    >>> resnet18(rule="backprop", width=0.125).groups
    [1, 2, 2, 2, 2]
    """
    return _residual_network(*RESNET_STAGES["resnet18"], shortcut, conv, options)


@register("presnet18", rule_defaults={"code_units": AL_CODE_UNITS})
def presnet18(*, shortcut="projection", conv="perturbative", options):
    """pResNet-18: `resnet18` with a `PerturbativeConv2D` (fixed noise masks
    and a learned 1x1 mixing) for every 3x3 convolution of its residual
    blocks.

    1.41M parameters on 32x32x3. Perturbative layers need the input's size
    when they are built (an `input_shape`, or the first batch).

    Args:
        shortcut, conv: as in `resnet`.
        **options: the options of every builder (`BuildOptions`).

    Example:

    >>> presnet18(rule="backprop", width=0.125).hidden_blocks[1].conv
    'perturbative'
    """
    return _residual_network(*RESNET_STAGES["resnet18"], shortcut, conv, options)

