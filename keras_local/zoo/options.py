"""The options every zoo builder takes, and the compiled model it returns."""

import dataclasses

import keras

from keras_local import optimizers
from keras_local.model import LocalModel


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """The options every builder takes, declared once.

    A builder takes them as keywords after its own arguments (`register`
    adds them to its signature) and hands its architecture function one
    `BuildOptions` with `rule` resolved to a `Rule` (`resolve_rule`, which
    has applied `rule_options`) and `activation` resolved to a name.

    Args:
        rule: a rule name (`keras_local.rules.names()`), a
            `{"name", "config"}` dict or a `Rule` instance; `None`: the
            builder's default rule.
        rule_options: rule parameters, e.g. `{"beta": 0.9}`; they win over
            the architecture's defaults of rule parameters and over the
            config of a rule given as a dict.
        num_classes: number of classes.
        input_shape: shape of one example; `None` builds from the first batch.
        width: multiplies the architecture's widths (conv channels, or the
            units of an MLP).
        dropout: dropout rate of the hidden blocks.
        learning_rate: the optimizer's learning rate.
        optimizer: `"adam"` (Keras' Adam with epsilon 1e-8),
            `"pytorch-adam"` or `"pytorch-sgd"` (`keras_local.optimizers`).
        weight_decay: PyTorch's L2 weight decay (`pytorch-*` optimizers).
        momentum: momentum of `pytorch-sgd`.
        nesterov: Nesterov momentum for `pytorch-sgd`.
        pytorch_batch_norm: the blocks' batch norm updates its running
            variance with the unbiased batch variance, as PyTorch does
            (`TorchBatchNormalization`); Keras' uses the biased one.
        activation: the hidden activation; `None`: the builder's (most take
            the rule's default: ReLU for backprop and pred, leaky ReLU 0.01
            for sim and predsim).
        augmentation: a layer applied to training inputs only.
        name: the model's name; `None`: the builder's.

    Example:

    >>> from keras_local import rules
    >>> options = BuildOptions(rule=rules.get("backprop"), activation="relu")
    >>> options.width, options.learning_rate
    (1, 0.0005)
    """

    rule: object = "predsim"
    rule_options: dict | None = None
    num_classes: int = 10
    input_shape: tuple | None = None
    width: float = 1
    dropout: float = 0.0
    learning_rate: float = 5e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    pytorch_batch_norm: bool = False
    activation: str | None = None
    augmentation: keras.layers.Layer | None = None
    name: str | None = None

    def batch_norm(self, batch_norm):
        """A block's `batch_norm` argument under these options: `"pytorch"`
        for a normalising block when `pytorch_batch_norm` is set."""
        return "pytorch" if batch_norm and self.pytorch_batch_norm else batch_norm


def build_model(blocks, options, groups=None):
    """A compiled `LocalModel` of `blocks` with the resolved `options`.

    The options' optimizer (by default Keras' Adam with the reference
    code's epsilon, 1e-8) and XLA, so that a builder's model trains as
    returned.

    Args:
        blocks: the hidden blocks, in order.
        options: a `BuildOptions` whose `rule` is a `Rule`.
        groups: how many consecutive blocks form each group (the groups of
            rules that train groups); `None`: one block each.

    Example:

    >>> from keras_local import rules
    >>> from keras_local.layers import DenseBlock
    >>> options = BuildOptions(rule=rules.get("backprop"), name="tiny")
    >>> build_model([DenseBlock(8)], options, groups=[1]).name
    'tiny'
    """
    model = LocalModel(
        blocks,
        num_classes=options.num_classes,
        rule=options.rule,
        augmentation=options.augmentation,
        input_shape=options.input_shape,
        groups=groups,
        name=options.name,
    )
    model.compile(
        optimizer=optimizers.make(
            options.optimizer,
            options.learning_rate,
            weight_decay=options.weight_decay,
            momentum=options.momentum,
            nesterov=options.nesterov,
        ),
        jit_compile=compiles_with_xla(blocks),
    )
    return model


def compiles_with_xla(blocks):
    """Whether a zoo model of `blocks` compiles its steps with XLA: on JAX,
    on GPUs and for dense networks; not for convolutional ones on
    TensorFlow's CPU path.

    Keras' "auto" leaves XLA off on TensorFlow's CPU path, where XLA makes
    an MLP's local-loss step faster (3x1024 predsim: 38 ms against 47). For
    convolutions TensorFlow's own oneDNN kernels beat XLA's on the CPU: one
    VGG8B training step took about 0.8x the time without XLA, backprop and
    predsim alike (docs/training.md, "Step time and memory").
    """
    if keras.backend.backend() != "tensorflow":
        return True
    if not any(block.spec.feature_map for block in blocks):
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
