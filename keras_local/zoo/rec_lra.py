"""The MNIST / Fashion-MNIST MLP of Ororbia et al. (2023), rec-LRA.

Its provenance (Table 1 of the paper, the LRA-E code) is in docs/zoo.md.
"""

from keras_local.zoo.options import build_model
from keras_local.zoo.registry import register
from keras_local.zoo.stacks import dense_stack

#: The default of `lra_mlp`: the paper's rule.
LRA_RULE = "rec-lra"


@register("lra_mlp", rule=LRA_RULE)
def lra_mlp(layers=5, units=256, *, batch_norm=False, options):
    """The MLP of Ororbia et al. (2023, rec-LRA): 5 hidden layers of 256
    units and a linear output.

    Every block is a group of its own. The activation is the rule's default
    (tanh for rec-LRA, the paper's first variant).

    Args:
        layers, units: the hidden `DenseBlock`s (`width` multiplies `units`).
        batch_norm: off by default, as the paper and the LRA-E code.
        **options: the options of every builder (`BuildOptions`); the
            default rule is `"rec-lra"`, the paper's.

    Example:

    >>> lra_mlp(units=16).hidden_blocks[0].activation
    'tanh'
    """
    blocks = dense_stack(
        [int(units * options.width)] * layers, options, batch_norm=batch_norm
    )
    return build_model(blocks, options)
