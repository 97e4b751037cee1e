"""Stacks of blocks the builders share: conv stacks from a VGG-style config,
dense stacks, and the pooled stages of a config."""

from keras_local.layers import ConvBlock
from keras_local.layers import DenseBlock


def scaled(filters, width):
    """`filters * width` channels, at least one.

    >>> scaled(64, 1 / 128)
    1
    """
    return max(1, int(filters * width))


def conv_stack(config, options, *, stem, batch_norm=True, conv="standard"):
    """3x3 stride-1 `ConvBlock`s from a config of channels and "M".

    Each "M" is a 2x2 max-pool on the preceding block's output; the channels
    are multiplied by `options.width`, and every block takes the options'
    activation and dropout.

    Args:
        config: a sequence of ints (conv channels before `width`) and "M".
        options: a resolved `BuildOptions`.
        stem: whether the first block gets the 7x7 stride-2 convolution on
            inputs larger than 64 px.
        batch_norm: whether every block normalises.
        conv: `"standard"` or `"perturbative"` (see `ConvBlock`).

    Example:

    >>> from keras_local.zoo.options import BuildOptions
    >>> blocks = conv_stack((8, "M", 16), BuildOptions(activation="relu"), stem=False)
    >>> [(b.filters, b.pool_size) for b in blocks]
    [(8, 2), (16, None)]
    """
    widths, pools = [], []
    for item in config:
        if item == "M":
            if not widths:
                raise ValueError("A VGG config cannot start with a pool ('M').")
            pools[-1] = 2
        else:
            widths.append(int(item * options.width))
            pools.append(None)
    return [
        ConvBlock(
            filters,
            activation=options.activation,
            dropout=options.dropout,
            pool_size=pool,
            batch_norm=options.batch_norm(batch_norm),
            large_input_stem=stem and i == 1,
            conv=conv,
            name=f"block{i}",
        )
        for i, (filters, pool) in enumerate(zip(widths, pools), start=1)
    ]


def dense_stack(widths, options, *, batch_norm=True, first=1):
    """`DenseBlock`s of the given widths with the options' activation and
    dropout, named `block<first>`, `block<first + 1>`, ...

    Args:
        widths: the blocks' units (not multiplied by `options.width`).
        options: a resolved `BuildOptions`.
        batch_norm: whether every block normalises.
        first: the number of the first block (after the blocks before it).

    Example:

    >>> from keras_local.zoo.options import BuildOptions
    >>> [b.name for b in dense_stack([8, 8], BuildOptions(activation="relu"), first=3)]
    ['block3', 'block4']
    """
    return [
        DenseBlock(
            units,
            activation=options.activation,
            dropout=options.dropout,
            batch_norm=options.batch_norm(batch_norm),
            name=f"block{i}",
        )
        for i, units in enumerate(widths, start=first)
    ]


def pool_stages(config):
    """The sizes of the stages of a VGG-style config: runs of conv blocks,
    each ending with a pooled one (trailing unpooled blocks form a last
    stage).

    >>> pool_stages((8, "M", 8, 8, "M", 16))
    [1, 2, 1]
    """
    stages, size = [], 0
    for item in config:
        if item == "M":
            stages.append(size)
            size = 0
        else:
            size += 1
    return stages + ([size] if size else [])
