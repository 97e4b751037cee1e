"""Model builders: architectures only; the rule is passed in.

Every builder returns a compiled `LocalModel` (Adam with epsilon 1e-8, the
reference code's optimizer, and XLA compilation) so that

    keras_local.zoo.vgg11b(rule="predsim").fit(ds)

runs as written. Defaults are the reference script's (`anokland/local-loss`):
learning rate 5e-4, no dropout, `dim_in_decoder` 4096, beta 0.99; the
per-data-set recipes of the paper live in the top-level `zoo/` folder.

`mostafa_mlp`, `mostafa_cnn5` and `mostafa_cnn10` are the three networks of
Mostafa, Ramesh & Cauwenberghs (2018), "Deep supervised learning using local
errors"; `resnet20`, `resnet32` (He et al. 2016), `resnet18` and `presnet18`
the residual networks of the associated-learning and rec-LRA papers;
`al_mlp` and `al_cnn` the MNIST networks of Kao & Chen (2021); `lra_mlp` the
MLP of Ororbia et al. (2023). All are built with the same blocks and
compiled the same way.

Builders describe layers only, with no code per rule, and take the same
keywords. Two things a rule may use:

- `groups`: how consecutive blocks form the components of rules that train
  groups (`Rule.trains_groups`, associated learning): a ResNet's stem and
  stages, a VGG's stages, one block each in an MLP.
- architecture defaults of rule parameters (e.g. the associated-learning
  code width of each network): applied only to a rule given by name (or a
  `{"name", "config"}` dict) that takes the parameter and where the caller
  did not set it; a `Rule` instance keeps its own. `resolve_rule` is the one
  place that decides a builder's rule: every builder calls it, and
  `experiment.train` and `tuning.LocalHyperModel` pass the rule as a name
  with the user's options, so `keras-local train` and `keras-local tune`
  build the same network.
"""

import inspect

import keras

from keras_local import rules as rules_lib
from keras_local.layers import ConvBlock
from keras_local.layers import DenseBlock
from keras_local.layers import ResidualBlock
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

#: How `vgg8b` and `vgg11b` group their conv blocks into the components of
#: rules that train groups (each dense block is a group of its own). VGG8B
#: is the authors' VGG_AL (Kao & Chen): conv128+conv256+pool,
#: conv256+conv512+pool, conv512+pool+conv512+pool, then the dense block.
#: VGG11B is split the same way: its conv stages up to the first two pools,
#: then the last two pooled stages together.
VGG_CONV_GROUPS = {"vgg8b": (2, 2, 2), "vgg11b": (4, 2, 3)}

#: The default of the Mostafa builders: local errors from fixed random
#: classifiers, the paper's rule.
MOSTAFA_RULE = "random-classifier"

#: The default of `al_mlp` and `al_cnn`: the paper's rule.
AL_RULE = "associated"

#: The default of `lra_mlp`: the paper's rule.
LRA_RULE = "rec-lra"

#: The associated-learning code width (`code_units`, the authors'
#: `neuron_num`) of the VGGs and ResNets, in the authors' code.
AL_CODE_UNITS = 300

#: The hidden layer of an associated-learning bridge is this many times the
#: code width (the authors' code and the `associated` rule's default).
AL_BRIDGE_MULTIPLIER = 5


def _get_rule(rule, beta=None, dim_in_decoder=None, **architecture_defaults):
    """`_resolve(rule, {"beta": beta, "dim_in_decoder": dim_in_decoder},
    architecture_defaults)`: the rule with the architecture's defaults of
    rule parameters where the caller did not set them.

    >>> _get_rule("associated", code_units=1024).code_units
    1024
    >>> _get_rule("backprop", code_units=1024)
    Backprop()
    """
    return _resolve(
        rule, {"beta": beta, "dim_in_decoder": dim_in_decoder}, architecture_defaults
    )


def _resolve(rule, options, architecture_defaults):
    """The `Rule` for `rule` (a name, a `{"name", "config"}` dict or a `Rule`)
    with the caller's `options` (rule parameters; `None` values are unset)
    and, for a rule given by name or dict, each architecture default the
    rule takes and neither the dict's config nor `options` sets. A `Rule`
    instance keeps its own values (only `options` override them)."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    name, given = rule, {}
    if isinstance(rule, dict):
        name, given = rule.get("name"), dict(rule.get("config") or {})
    if isinstance(name, str) and name in rules_lib.names():
        accepted = rules_lib.parameters(name)
        applied = {
            key: value
            for key, value in architecture_defaults.items()
            if key in accepted and key not in given and key not in options
        }
        return rules_lib.get(name, **{**given, **applied, **options})
    return rules_lib.get(rule, **options)


def _al_mlp_code_units(units, width, code_units):
    """`al_mlp`'s associated-learning code width: `code_units`, or the
    hidden width `units * width` when `None`."""
    return int(units * width) if code_units is None else code_units


#: Per builder family, its architecture defaults of rule parameters as a
#: function of the builder's arguments (the defaults `_resolve` applies).
_RULE_DEFAULTS = {
    "vgg": lambda a: {"code_units": AL_CODE_UNITS},
    "resnet": lambda a: {"code_units": AL_CODE_UNITS},
    "al_mlp": lambda a: {
        "code_units": _al_mlp_code_units(a["units"], a["width"], a["code_units"])
    },
    "al_cnn": lambda a: {"code_units": a["code_units"]},
}

#: The zoo models built by a shared builder (whose defaults they share).
_FAMILIES = {
    "vgg8b": "vgg",
    "vgg11b": "vgg",
    "resnet20": "resnet",
    "resnet32": "resnet",
    "resnet18": "resnet",
    "presnet18": "resnet",
}


def _family_rule(family, rule, options=None, /, **arguments):
    """The rule a builder of `family` uses: its architecture defaults (from
    the builder's `arguments`) where the caller did not set the parameter;
    `beta` and `dim_in_decoder` among `arguments` are the caller's."""
    options = dict(options or {})
    for key in ("beta", "dim_in_decoder"):
        if arguments.get(key) is not None:
            options[key] = arguments[key]
    defaults = _RULE_DEFAULTS.get(family, lambda a: {})(arguments)
    return _resolve(rule, options, defaults)


def resolve_rule(model, rule=None, options=None, **arguments):
    """The `Rule` that `zoo.get(model)(rule=rule, **arguments)` trains with,
    with the rule parameters in `options` set.

    The one place that turns a model, a rule and the user's settings into
    the rule: the builders call it, and the command line's `train` and
    `tune` (`experiment.train`, `tuning.LocalHyperModel`) pass the rule to
    the builders by name with the user's options, so both get the network's
    own defaults of the parameters the user did not set, e.g. `al_mlp`'s
    1024-unit code under `associated`:

    >>> resolve_rule("al_mlp", "associated").code_units
    1024
    >>> resolve_rule("al_mlp", "associated", {"code_units": 64}).code_units
    64
    >>> resolve_rule("al_cnn").code_units
    256

    Args:
        model: a zoo model name (`names()`).
        rule: a rule name, a `{"name", "config"}` dict or a `Rule`
            instance (which keeps its own values); `None`: the model's
            default rule.
        options: rule parameters the user set, e.g. `{"code_units": 64}` or
            `{"beta": 0.9}`; they win over the architecture's defaults.
        **arguments: the builder's arguments (others are ignored): `beta`
            and `dim_in_decoder` (rule parameters the builders take; `None`
            is unset) and those the architecture defaults depend on (e.g.
            `al_mlp`'s `units`, `width` and `code_units`). Missing ones take
            the builder's defaults.

    Raises:
        ValueError: for an unknown model or rule, or an option the rule does
            not take.
    """
    get(model)
    family = _FAMILIES.get(model, model)
    bound = {
        name: parameter.default
        for name, parameter in inspect.signature(_BUILDERS.get(family) or _BASES[family])
        .parameters.items()
        if parameter.default is not parameter.empty
    }
    bound.update(arguments)
    default_rule = bound.pop("rule")
    return _family_rule(family, default_rule if rule is None else rule, options, **bound)


def _scaled(filters, width):
    """`filters * width` channels, at least one."""
    return max(1, int(filters * width))


def _finish(
    blocks, *, rule, num_classes, input_shape, learning_rate, augmentation, name, groups=None
):
    model = LocalModel(
        blocks,
        num_classes=num_classes,
        rule=rule,
        augmentation=augmentation,
        input_shape=input_shape,
        groups=groups,
        name=name,
    )
    # XLA on every backend: on TensorFlow's CPU path Keras' "auto" leaves it
    # off, and it halves the local-loss step time there.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, epsilon=1e-8), jit_compile=True
    )
    return model


def _conv_stack(config, *, width, activation, dropout, stem, batch_norm=True, conv="standard"):
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
            conv=conv,
            name=f"block{i}",
        )
        for i, (filters, pool) in enumerate(zip(widths, pools), start=1)
    ]


def _dense_stack(widths, *, activation, dropout, batch_norm=True, first=1):
    """`DenseBlock`s of the given widths, named `block<first>`, `block<first+1>`,
    ... (after the blocks that come before them)."""
    return [
        DenseBlock(
            units,
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            name=f"block{i}",
        )
        for i, units in enumerate(widths, start=first)
    ]


def _pool_stages(config):
    """The conv blocks of a VGG config grouped into stages, each ending with
    a pooled block (trailing unpooled blocks form a last stage)."""
    stages, size = [], 0
    for item in config:
        if item == "M":
            stages.append(size)
            size = 0
        else:
            size += 1
    return stages + ([size] if size else [])


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

    Every block is a group of its own (the components of rules that train
    groups).
    """
    rule = _family_rule("mlp", rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or rule.default_activation
    blocks = _dense_stack([int(units * width)] * layers, activation=activation, dropout=dropout)
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
    conv="standard",
    conv_groups=None,
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
        conv: `"standard"` or `"perturbative"` (every conv block's
            convolution is a `PerturbativeConv2D`; see `ConvBlock`).
        conv_groups: how many consecutive conv blocks form each group (the
            components of rules that train groups, e.g. `(2, 2, 2)`); `None`
            makes every pooled stage a group (the blocks up to and including
            each pooled one). Each dense block is a group of its own.
        The other arguments are as in `mlp`. The associated-learning code
        width is 300 (the authors' `neuron_num` for VGG) unless the rule
        says otherwise.
    """
    rule = _family_rule("vgg", rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or rule.default_activation
    blocks = _conv_stack(
        config, width=width, activation=activation, dropout=dropout, stem=True, conv=conv
    )
    groups = list(_pool_stages(config) if conv_groups is None else conv_groups)
    if sum(groups) != len(blocks):
        raise ValueError(
            f"conv_groups must add up to the {len(blocks)} conv blocks; got "
            f"{list(conv_groups)!r}."
        )
    blocks += _dense_stack(
        [fc_units] * fc_layers, activation=activation, dropout=dropout, first=len(blocks) + 1
    )
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
        groups=groups + [1] * fc_layers,
    )


def vgg8b(**kwargs):
    """VGG8B: conv128-conv256-pool-conv256-conv512-pool-conv512-pool-conv512-
    pool-fc1024-fc (8.90M parameters on CIFAR-10, 7.33M on MNIST).

    Takes the keyword arguments of `vgg`. Groups: conv 2-2-2, then the dense
    block (`VGG_CONV_GROUPS`, the authors' VGG_AL components).
    """
    defaults = {"name": "vgg8b", "conv_groups": VGG_CONV_GROUPS["vgg8b"]}
    return vgg(VGG_CONFIGS["vgg8b"], **{**defaults, **kwargs})


def vgg11b(**kwargs):
    """VGG11B: conv128 x3-conv256-pool-conv256-conv512-pool-conv512 x2-pool-
    conv512-pool-fc1024-fc (11.56M parameters on CIFAR-10).

    Takes the keyword arguments of `vgg`. Groups: conv 4-2-3, then the dense
    block (`VGG_CONV_GROUPS`: split as VGG8B's VGG_AL components, the last
    two pooled stages together).
    """
    defaults = {"name": "vgg11b", "conv_groups": VGG_CONV_GROUPS["vgg11b"]}
    return vgg(VGG_CONFIGS["vgg11b"], **{**defaults, **kwargs})


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
        The other arguments are as in `mlp` (every block a group of its own).
    """
    rule = _family_rule("mostafa_mlp", rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or "relu"
    blocks = _dense_stack(
        [int(units * width)] * layers,
        activation=activation,
        dropout=dropout,
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
    conv="standard",
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
        conv: `"standard"` or `"perturbative"` (the conv blocks'
            convolutions; see `ConvBlock`).
        The other arguments are as in `mostafa_mlp`. Every block, each
        pooled, is a group of its own.
    """
    rule = _family_rule("mostafa_cnn5", rule, beta=beta, dim_in_decoder=dim_in_decoder)
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
            conv=conv,
            name=f"block{i}",
        )
        for i, filters in enumerate((96, 128, 256), start=1)
    ]
    blocks += _dense_stack(
        [fc_units] * 2,
        activation=activation,
        dropout=dropout,
        batch_norm=batch_norm,
        first=len(blocks) + 1,
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
    conv="standard",
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
        conv: `"standard"` or `"perturbative"` (see `ConvBlock`).
        The other arguments are as in `mostafa_mlp`. Groups: the five pooled
        stages of two convolutions each.
    """
    rule = _family_rule("mostafa_cnn10", rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or "relu"
    blocks = _conv_stack(
        MOSTAFA_CNN10_CONFIG,
        width=width,
        activation=activation,
        dropout=dropout,
        stem=False,
        batch_norm=batch_norm,
        conv=conv,
    )
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
        groups=_pool_stages(MOSTAFA_CNN10_CONFIG),
    )


#: Residual blocks per stage and their channels (before `width`).
RESNET_STAGES = {
    "resnet20": ((3, 3, 3), (16, 32, 64)),
    "resnet32": ((5, 5, 5), (16, 32, 64)),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
}


def resnet(
    stages,
    filters,
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
    shortcut="projection",
    conv="standard",
    augmentation=None,
    name="resnet",
):
    """A residual network: a 3x3 stem, stages of `ResidualBlock`s, global
    average pooling and a linear output.

    The stem is a `ConvBlock` (3x3, stride 1, `filters[0]` channels, with
    bias, BatchNorm and the activation); stage `i` has `stages[i]` basic
    blocks of `filters[i]` channels, the first block of every stage after
    the first with stride 2. The last block averages its output over the
    map, so the output layer reads a vector. The stem and each stage are the
    groups (the components of rules that train groups; associated learning's
    for the ResNets of Kao & Chen).

    Args:
        stages: residual blocks per stage, e.g. `(3, 3, 3)`.
        filters: channels per stage (before `width`), e.g. `(16, 32, 64)`.
        width: multiplies every channel count (at least 1 channel).
        shortcut: `"projection"` (1x1 conv + BN where the shape changes) or
            `"identity"` (zero-padded, He et al.'s option A); see
            `ResidualBlock`.
        conv: `"standard"`, or `"perturbative"`: every residual block's two
            3x3 convolutions are `PerturbativeConv2D`s. The stem stays an
            ordinary, learned convolution (a perturbative first layer sees
            only the 3 input channels; see `presnet18`).
        dropout: rate of every block's `SpatialDropout2D`.
        The other arguments are as in `mlp`. The associated-learning code
        width is 300 (the authors' `neuron_num` for ResNets) unless the rule
        says otherwise.
    """
    stages, filters = tuple(stages), tuple(filters)
    if not stages or len(stages) != len(filters) or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in stages
    ):
        raise ValueError(
            "stages must be positive block counts, one per entry of filters; got "
            f"stages={stages!r}, filters={filters!r}."
        )
    rule = _family_rule("resnet", rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or rule.default_activation
    channels = [_scaled(f, width) for f in filters]
    blocks = [
        ConvBlock(channels[0], kernel_size=3, activation=activation, dropout=dropout, name="block1")
    ]
    total = 1 + sum(stages)
    for stage, (count, stage_channels) in enumerate(zip(stages, channels)):
        for index in range(count):
            number = len(blocks) + 1
            blocks.append(
                ResidualBlock(
                    stage_channels,
                    strides=2 if stage > 0 and index == 0 else 1,
                    activation=activation,
                    dropout=dropout,
                    shortcut=shortcut,
                    output_pooling="global_average" if number == total else None,
                    conv=conv,
                    name=f"block{number}",
                )
            )
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
        groups=[1, *stages],
    )


def resnet20(**kwargs):
    """ResNet-20 (He et al. 2016, section 4.2): 16-channel 3x3 stem, 3 stages
    of 3 basic blocks (16, 32, 64 channels), global average pool, linear.

    0.27M parameters, as He et al.'s Table 6 (269,738 on 32x32x3: their
    269,722 and the stem's 16 biases), with their option-A shortcuts
    (`shortcut="identity"`, the default here: subsampling and zero
    channels); `shortcut="projection"` adds the two 1x1 projections and
    their BatchNorms (272,490). Groups: the stem and the three stages, the
    four components of Kao & Chen's ResNet_20_AL (whose code projects with
    a 1x1 convolution without BatchNorm). Differences from their code:
    their last bridge reads the flattened 8x8x64 map, here the pooled
    64-vector the block outputs; and their backprop baseline adds dense
    layers (1500, then 4 x 300) before the output to match the associated
    network's parameters, which this builder does not (`al_mlp` and
    `al_cnn` do).

    Takes the keyword arguments of `resnet` (not `stages` or `filters`).
    """
    return _resnet_named("resnet20", kwargs, shortcut="identity")


def resnet32(**kwargs):
    """ResNet-32 (He et al. 2016, section 4.2): as `resnet20` with 5 basic
    blocks per stage.

    0.46M parameters (464,170 on 32x32x3 with the default option-A
    shortcuts; He et al.'s 464,154 and the stem's biases; 466,922 with
    `shortcut="projection"`). Groups: the stem and the three stages.

    Takes the keyword arguments of `resnet`.
    """
    return _resnet_named("resnet32", kwargs, shortcut="identity")


def resnet18(**kwargs):
    """ResNet-18, CIFAR variant: 64-channel 3x3 stride-1 stem (no max-pool),
    4 stages of 2 basic blocks (64, 128, 256, 512), global average pool,
    linear.

    11.17M parameters on 32x32x3 (11,174,026: the usual CIFAR ResNet-18's
    11,173,962 and the stem's 64 biases), projection shortcuts. Groups: the
    stem and the four stages.

    The rec-LRA paper (Ororbia et al. 2023) trains "ResNet-18 ... 64
    filters" on CIFAR-10 with "skip g = 2" and leaves the block to its
    appendix, which its text does not include. Assumed here: the CIFAR-style
    ResNet-18 of most CIFAR code and of the perturbative networks' updated
    reference (`first_filter_size 3`): a 3x3 stride-1 stem of 64 channels
    and no max-pool, basic blocks of two 3x3 convolutions (the skip of 2
    layers), 64 as the first stage's width, projection shortcuts (1x1 conv
    + BN), global average pooling. The stem is the same on every input size
    (no 7x7 ImageNet stem).

    Takes the keyword arguments of `resnet`.
    """
    return _resnet_named("resnet18", kwargs, shortcut="projection")


def presnet18(**kwargs):
    """pResNet-18: `resnet18` with perturbative layers (`PerturbativeConv2D`:
    fixed noise masks and a learned 1x1 mixing) for every 3x3 convolution of
    its residual blocks.

    The rec-LRA paper's pResNet (after Juefei-Xu et al. 2018). 1.41M
    parameters on 32x32x3 (1,409,162). Assumed: one noise mask per input
    channel (the reference code's default; the paper's "64 perturbation
    masks" is read as the 64 channels of the first stage, as "64 filters"
    for its cResNet); strided blocks downsample by max-pooling after the
    mixing, as the reference NoiseBasicBlock; projection shortcuts are
    ordinary 1x1 convolutions + BN, as there. The stem is an ordinary
    learned 3x3 convolution: the updated reference keeps a 3x3 first
    convolution but freezes it at its random initialisation, the original
    uses a learned 7x7 stride-2 one with a max-pool. Perturbative layers
    need the input's size when they are built (an `input_shape`, or the
    first batch).

    Takes the keyword arguments of `resnet`.
    """
    return resnet18(**{"name": "presnet18", "conv": "perturbative", **kwargs})


def _resnet_named(name, kwargs, **defaults):
    """`resnet` with `name`'s stages and filters; `kwargs` override the
    builder's `defaults`."""
    stages, filters = RESNET_STAGES[name]
    return resnet(stages, filters, **{"name": name, **defaults, **kwargs})


def _associated_counterpart(components, code_units):
    """Widths of the dense blocks that stand in, for rules with an output
    layer, for associated learning's last bridge and its decoders: the
    bridge's two layers (`5 * code_units`, `code_units`), then one block per
    decoder but the first, whose place the output layer takes."""
    return [AL_BRIDGE_MULTIPLIER * code_units, code_units] + [code_units] * (components - 1)


def al_mlp(
    layers=2,
    units=1024,
    *,
    code_units=None,
    rule=AL_RULE,
    num_classes=10,
    input_shape=None,
    width=1,
    dropout=0.0,
    beta=None,
    learning_rate=1e-4,
    dim_in_decoder=None,
    activation=None,
    batch_norm=False,
    augmentation=None,
    name="al_mlp",
):
    """Kao & Chen (2021)'s MNIST MLP: layers of 1024, 1024, 5120, 1024, 1024
    and 10 units.

    Section 3.1 of the paper. With associated learning (a rule without an
    output layer) the network is `layers` components `f_i`, each a
    `DenseBlock` of `units` (its own group); the last bridge `b_2` (5120,
    then 1024 sigmoid units) and the decoders `h_2` (1024 -> 1024) and `h_1`
    (1024 -> 10) belong to the rule, so the network is 1024, 1024, 5120,
    1024, 1024, 10. Rules with an output layer get those layers as blocks:
    `DenseBlock`s of 5120, 1024, 1024 after the two components, then the
    output layer, "so that the models trained by Associated Learning and
    trained by backpropagation have identical parameters" (the paper, and
    the authors' MNIST code). Without batch norm (the default) the two
    networks have exactly the same inference parameters: 13,405,194 on
    28x28 inputs.

    Args:
        layers: the components (hidden `DenseBlock`s of the network proper).
        units: their width.
        code_units: the associated-learning code width (default `units *
            width`, the authors' `neuron_num` 1024): the rule's `code_units`
            when it takes one and is given by name, otherwise the width of
            the blocks that stand in for the bridge and decoders (the bridge's
            hidden layer is 5 times wider).
        rule: default `"associated"`, the paper's.
        batch_norm: off by default, as the authors' MNIST code.
        activation: the rule's default when `None` (ELU for associated
            learning, ReLU for backprop: the paper's choices).
        learning_rate: Adam's; the paper's 1e-4 by default.
        The other arguments are as in `mlp`.
    """
    hidden = int(units * width)
    code = _al_mlp_code_units(units, width, code_units)
    rule = _family_rule(
        "al_mlp", rule, beta=beta, dim_in_decoder=dim_in_decoder, units=units, width=width,
        code_units=code_units,
    )
    activation = activation or rule.default_activation
    widths = [hidden] * layers
    if rule.has_output_layer:
        widths += _associated_counterpart(layers, code)
    blocks = _dense_stack(
        widths, activation=activation, dropout=dropout, batch_norm=batch_norm
    )
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
        groups=[1] * len(blocks),
    )


#: `al_cnn`'s conv channels (before `width`); the 4th and 8th downsample.
AL_CNN_FILTERS = (32, 32, 32, 32, 64, 64, 64, 64)


def al_cnn(
    *,
    code_units=256,
    rule=AL_RULE,
    num_classes=10,
    input_shape=None,
    width=1,
    dropout=0.0,
    beta=None,
    learning_rate=1e-4,
    dim_in_decoder=None,
    activation=None,
    batch_norm=False,
    downsample="stride",
    conv="standard",
    augmentation=None,
    name="al_cnn",
):
    """Kao & Chen (2021)'s 14-layer MNIST CNN: 4 conv 3x3x32, 4 conv 3x3x64,
    fc1280, 4 fc256, output 10.

    Section 3.1 of the paper. With associated learning the network is 4
    components of 2 convolutions each (32, 32 | 32, 32 | 64, 64 | 64, 64;
    groups 2-2-2-2) with code width 256; the last bridge (1280, then 256
    units) and the decoders (256 -> 256 three times, 256 -> 10) belong to
    the rule. Rules with an output layer get those layers as blocks: a
    `DenseBlock` of 1280 and four of 256 after the convolutions (each its
    own group), then the output layer, so both networks have the same
    layers and, without batch norm (the default), exactly the same
    inference parameters: 4,700,586 on 28x28x1 inputs.

    The paper does not say where the network downsamples. The authors' code
    does it with a stride-2 convolution in the 4th and 8th layers (the last
    of the 2nd and 4th components): 28 -> 14 -> 7, so the 1280-unit layer
    reads 7x7x64. That is `downsample="stride"` (the default; symmetric
    padding as PyTorch's); `downsample="pool"` keeps those convolutions at
    stride 1 and max-pools their outputs 2x2 instead.

    Args:
        code_units: the associated-learning code width (the authors' 256),
            as in `al_mlp`; also the width of the 256-unit blocks for rules
            with an output layer (not multiplied by `width`).
        width: multiplies the conv channels.
        batch_norm: off by default, as the authors' MNIST code.
        downsample: `"stride"` or `"pool"` (see above).
        conv: `"standard"` or `"perturbative"` (see `ConvBlock`).
        The other arguments are as in `al_mlp`.
    """
    if downsample not in ("stride", "pool"):
        raise ValueError(f"downsample must be 'stride' or 'pool', got {downsample!r}.")
    rule = _family_rule(
        "al_cnn", rule, beta=beta, dim_in_decoder=dim_in_decoder, code_units=code_units
    )
    activation = activation or rule.default_activation
    blocks = []
    for i, filters in enumerate(AL_CNN_FILTERS, start=1):
        reduces = i in (4, 8)
        blocks.append(
            ConvBlock(
                _scaled(filters, width),
                strides=2 if reduces and downsample == "stride" else 1,
                pool_size=2 if reduces and downsample == "pool" else None,
                activation=activation,
                dropout=dropout,
                batch_norm=batch_norm,
                conv=conv,
                name=f"block{i}",
            )
        )
    groups = [2, 2, 2, 2]
    if rule.has_output_layer:
        counterpart = _dense_stack(
            _associated_counterpart(len(groups), code_units),
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            first=len(blocks) + 1,
        )
        blocks += counterpart
        groups += [1] * len(counterpart)
    return _finish(
        blocks,
        rule=rule,
        num_classes=num_classes,
        input_shape=input_shape,
        learning_rate=learning_rate,
        augmentation=augmentation,
        name=name,
        groups=groups,
    )


def lra_mlp(
    layers=5,
    units=256,
    *,
    rule=LRA_RULE,
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
    name="lra_mlp",
):
    """The MNIST / Fashion-MNIST MLP of Ororbia et al. (2023, rec-LRA): 5
    hidden layers of 256 units and a linear output.

    "All had 5 layers, 256 units each" (Table 1's rec-LRA networks), read as
    5 hidden layers (the LRA-E code it builds on has 3 hidden layers of 256,
    tanh). The activation is the rule's default (tanh for rec-LRA, the
    paper's first variant; ReLU, ELU and sign are its others); no batch
    norm, as the paper and the LRA-E code.

    Args:
        rule: default `"rec-lra"`, the paper's.
        batch_norm: off by default.
        The other arguments are as in `mlp` (every block a group of its own).
    """
    rule = _family_rule("lra_mlp", rule, beta=beta, dim_in_decoder=dim_in_decoder)
    activation = activation or rule.default_activation
    blocks = _dense_stack(
        [int(units * width)] * layers,
        activation=activation,
        dropout=dropout,
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
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet18": resnet18,
    "presnet18": presnet18,
    "al_mlp": al_mlp,
    "al_cnn": al_cnn,
    "lra_mlp": lra_mlp,
}


#: The shared builders of `_FAMILIES`.
_BASES = {"vgg": vgg, "resnet": resnet}


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
