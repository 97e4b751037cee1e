"""Model builders: architectures only; the rule is passed in.

Every builder takes its own arguments (`layers`, `units`, ...) and the
options of every builder (`BuildOptions`: `rule`, `rule_options`,
`num_classes`, `input_shape`, `width`, ...), and returns a compiled
`LocalModel` (Keras' Adam with the reference code's epsilon, 1e-8, or the
`optimizer` option's, e.g. `"pytorch-adam"`, PyTorch's exact update; and
XLA). Rule parameters travel as `rule_options` or inside the rule; a
builder's architecture defaults of rule parameters (e.g. `al_mlp`'s
1024-unit associated-learning code) fill in what the user did not set
(`resolve_rule`). Where each network comes from: docs/zoo.md.

>>> from keras_local import zoo
>>> model = zoo.vgg11b(rule="predsim", width=0.25, dropout=0.1,
...                    input_shape=(32, 32, 3), num_classes=10)
>>> model.groups
[4, 2, 3, 1]
>>> zoo.mlp(rule="predsim", rule_options={"beta": 0.9}).rule.beta
0.9
"""

import importlib
import pkgutil

from keras_local.zoo.associated import AL_BRIDGE_MULTIPLIER
from keras_local.zoo.associated import AL_CNN_FILTERS
from keras_local.zoo.associated import AL_CODE_UNITS
from keras_local.zoo.associated import AL_RULE
from keras_local.zoo.associated import al_cnn
from keras_local.zoo.associated import al_mlp
from keras_local.zoo.mostafa import MOSTAFA_CNN10_CONFIG
from keras_local.zoo.mostafa import MOSTAFA_RULE
from keras_local.zoo.mostafa import mostafa_cnn5
from keras_local.zoo.mostafa import mostafa_cnn10
from keras_local.zoo.mostafa import mostafa_mlp
from keras_local.zoo.nokland import VGG_CONFIGS
from keras_local.zoo.nokland import VGG_CONV_GROUPS
from keras_local.zoo.nokland import mlp
from keras_local.zoo.nokland import vgg
from keras_local.zoo.nokland import vgg8b
from keras_local.zoo.nokland import vgg11b
from keras_local.zoo.options import BuildOptions
from keras_local.zoo.options import build_model
from keras_local.zoo.rec_lra import LRA_RULE
from keras_local.zoo.rec_lra import lra_mlp
from keras_local.zoo.registry import builder
from keras_local.zoo.registry import get
from keras_local.zoo.registry import names
from keras_local.zoo.registry import register
from keras_local.zoo.registry import resolve_rule
from keras_local.zoo.registry import unregister
from keras_local.zoo.residual import RESNET_STAGES
from keras_local.zoo.residual import presnet18
from keras_local.zoo.residual import resnet
from keras_local.zoo.residual import resnet18
from keras_local.zoo.residual import resnet20
from keras_local.zoo.residual import resnet32

__all__ = [
    "AL_BRIDGE_MULTIPLIER",
    "AL_CNN_FILTERS",
    "AL_CODE_UNITS",
    "AL_RULE",
    "BuildOptions",
    "LRA_RULE",
    "MOSTAFA_CNN10_CONFIG",
    "MOSTAFA_RULE",
    "RESNET_STAGES",
    "VGG_CONFIGS",
    "VGG_CONV_GROUPS",
    "al_cnn",
    "al_mlp",
    "build_model",
    "builder",
    "get",
    "lra_mlp",
    "mlp",
    "mostafa_cnn10",
    "mostafa_cnn5",
    "mostafa_mlp",
    "names",
    "presnet18",
    "register",
    "resnet",
    "resnet18",
    "resnet20",
    "resnet32",
    "resolve_rule",
    "unregister",
    "vgg",
    "vgg11b",
    "vgg8b",
]

# Every module of this package, so that a new model file registers its
# builders (`@register`) without being named here; its builders become
# attributes of the package too (`zoo.<name>`).
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
for _name in names():
    globals()[_name] = get(_name)
    if _name not in __all__:
        __all__.append(_name)
