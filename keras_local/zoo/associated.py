"""The MNIST networks of Kao & Chen (2021), associated learning.

Their provenance (the paper's section 3.1, the authors' code) is in
docs/zoo.md.
"""

from keras_local.layers import ConvBlock
from keras_local.zoo.options import build_model
from keras_local.zoo.registry import register
from keras_local.zoo.stacks import dense_stack
from keras_local.zoo.stacks import scaled

#: The default of `al_mlp` and `al_cnn`: the paper's rule.
AL_RULE = "associated"

#: The associated-learning code width (`code_units`, the authors'
#: `neuron_num`) of the VGGs and ResNets, in the authors' code.
AL_CODE_UNITS = 300

#: The hidden layer of an associated-learning bridge is this many times the
#: code width (the authors' code and the `associated` rule's default).
AL_BRIDGE_MULTIPLIER = 5

#: `al_cnn`'s conv channels (before `width`); the 4th and 8th downsample.
AL_CNN_FILTERS = (32, 32, 32, 32, 64, 64, 64, 64)


def _al_mlp_code_units(arguments):
    """`al_mlp`'s code width: its `code_units`, or the hidden width
    `units * width` when `None`."""
    code_units = arguments["code_units"]
    return int(arguments["units"] * arguments["width"]) if code_units is None else code_units


def _associated_counterpart(groups, code_units):
    """Widths of the dense blocks that stand in, for rules with an output
    layer, for associated learning's last bridge and its decoders: the
    bridge's two layers (`5 * code_units`, `code_units`), then one block per
    decoder but the first, whose place the output layer takes."""
    return [AL_BRIDGE_MULTIPLIER * code_units, code_units] + [code_units] * (groups - 1)


@register(
    "al_mlp",
    rule=AL_RULE,
    learning_rate=1e-4,
    rule_defaults=lambda arguments: {"code_units": _al_mlp_code_units(arguments)},
)
def al_mlp(layers=2, units=1024, *, code_units=None, batch_norm=False, options):
    """Kao & Chen (2021)'s MNIST MLP: layers of 1024, 1024, 5120, 1024, 1024
    and 10 units.

    Under associated learning the network is `layers` `DenseBlock`s (a group
    each) and the rule holds the last bridge and the decoders; rules with an
    output layer get those layers as `DenseBlock`s, so both networks have
    the same inference parameters (13,405,194 on 28x28 inputs).

    Args:
        layers: the hidden `DenseBlock`s of the network proper.
        units: their width (multiplied by `width`).
        code_units: the associated-learning code width (default: the hidden
            width, 1024): the rule's `code_units` when it takes one and is
            given by name, otherwise the width of the blocks that stand in
            for the bridge and decoders.
        batch_norm: off by default, as the authors' MNIST code.
        **options: the options of every builder (`BuildOptions`); the
            default rule is `"associated"`, the learning rate 1e-4.

    Example:

    >>> al_mlp(units=16, rule="backprop").groups
    [1, 1, 1, 1, 1]
    >>> al_mlp(units=16).rule.code_units
    16
    """
    code = _al_mlp_code_units({"units": units, "width": options.width, "code_units": code_units})
    widths = [int(units * options.width)] * layers
    if options.rule.has_output_layer:
        widths += _associated_counterpart(layers, code)
    blocks = dense_stack(widths, options, batch_norm=batch_norm)
    return build_model(blocks, options, groups=[1] * len(blocks))


@register(
    "al_cnn",
    rule=AL_RULE,
    learning_rate=1e-4,
    rule_defaults=lambda arguments: {"code_units": arguments["code_units"]},
)
def al_cnn(*, code_units=256, batch_norm=False, downsample="stride", conv="standard", options):
    """Kao & Chen (2021)'s 14-layer MNIST CNN: 4 conv 3x3x32, 4 conv 3x3x64,
    fc1280, 4 fc256, output 10.

    Under associated learning the network is 4 groups of 2 convolutions
    and the rule holds the last bridge and the decoders; rules with an
    output layer get those layers as `DenseBlock`s (a group each), so both
    networks have the same inference parameters (4,700,586 on 28x28x1).

    Args:
        code_units: the associated-learning code width (the authors' 256),
            as in `al_mlp`; not multiplied by `width`.
        batch_norm: off by default, as the authors' MNIST code.
        downsample: `"stride"`: the 4th and 8th convolutions have stride 2
            (the authors' code); `"pool"`: they keep stride 1 and are
            followed by a 2x2 max-pool.
        conv: `"standard"` or `"perturbative"` (see `ConvBlock`).
        **options: the options of every builder (`BuildOptions`), as in
            `al_mlp`; `width` multiplies the conv channels.

    Example:

    >>> al_cnn(width=0.25).groups
    [2, 2, 2, 2]
    """
    if downsample not in ("stride", "pool"):
        raise ValueError(f"downsample must be 'stride' or 'pool', got {downsample!r}.")
    blocks = []
    for i, filters in enumerate(AL_CNN_FILTERS, start=1):
        reduces = i in (4, 8)
        blocks.append(
            ConvBlock(
                scaled(filters, options.width),
                strides=2 if reduces and downsample == "stride" else 1,
                pool_size=2 if reduces and downsample == "pool" else None,
                activation=options.activation,
                dropout=options.dropout,
                batch_norm=options.batch_norm(batch_norm),
                conv=conv,
                name=f"block{i}",
            )
        )
    groups = [2, 2, 2, 2]
    if options.rule.has_output_layer:
        counterpart = dense_stack(
            _associated_counterpart(len(groups), code_units),
            options,
            batch_norm=options.batch_norm(batch_norm),
            first=len(blocks) + 1,
        )
        blocks += counterpart
        groups += [1] * len(counterpart)
    return build_model(blocks, options, groups=groups)
