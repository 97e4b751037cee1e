"""The registry of model builders: `@register(name, ...)` on an architecture
function makes it a builder and adds it.

An architecture function takes its own arguments and `options` (a
`BuildOptions`) and returns `build_model(blocks, options, groups)`. The
decorator turns it into the builder users call: its own arguments, then the
options of every builder as keywords (`rule=`, `width=`, ...). The builder
resolves the rule (`resolve_rule`) and the activation, then calls the
architecture. A model module of this package registers its builders by
decorating them and the package imports every module in it, so adding a
model is adding one file.
"""

import dataclasses
import functools
import inspect

from keras_local import rules as rules_lib
from keras_local.zoo.options import BuildOptions

_REGISTRY = {}

#: The options every builder takes, in `BuildOptions`' order.
_OPTIONS = tuple(field.name for field in dataclasses.fields(BuildOptions))

#: The options `resolve_rule` takes as its own arguments, not as `arguments`.
_RULE_OPTIONS = ("rule", "rule_options")


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What a builder adds to its architecture function."""

    name: str
    architecture: object
    signature: inspect.Signature
    default_activation: str | None
    rule_defaults: object

    def defaults_of_rule_parameters(self, arguments):
        """The architecture's defaults of rule parameters for `arguments`."""
        if callable(self.rule_defaults):
            return dict(self.rule_defaults(arguments))
        return dict(self.rule_defaults or {})


def builder(
    *,
    name=None,
    rule="predsim",
    learning_rate=5e-4,
    default_activation=None,
    rule_defaults=None,
):
    """Makes a builder of an architecture function, without registering it.

    Args:
        name: the default model name; `None`: the function's name.
        rule: the default rule (e.g. the paper's).
        learning_rate: the default learning rate.
        default_activation: the activation when the caller gives none;
            `None`: the rule's default.
        rule_defaults: the architecture's defaults of rule parameters, e.g.
            `{"code_units": 300}`, or a function of the builder's arguments
            (a dict of all of them, defaults filled in) that returns them.
            They apply only to a rule given by name or as a dict that takes
            the parameter and where the caller did not set it.

    Example:

    >>> from keras_local.layers import DenseBlock
    >>> from keras_local.zoo.options import build_model
    >>> @builder(rule="backprop")
    ... def tiny(units=8, *, options):
    ...     return build_model([DenseBlock(units)], options)
    >>> tiny(units=4).rule
    Backprop()
    """
    settings = dict(
        rule=rule,
        learning_rate=learning_rate,
        default_activation=default_activation,
        rule_defaults=rule_defaults,
    )
    return lambda architecture: _make_builder(architecture, name, **settings)


def register(name, **settings):
    """`builder(name=name, **settings)`, and adds the builder under `name`.

    Args:
        name: the model name (`names()`, `get`); also the default model name.
        **settings: as in `builder`.

    Example:

    >>> from keras_local.layers import DenseBlock
    >>> from keras_local.zoo.options import build_model
    >>> @register("tiny_mlp", rule_defaults={"code_units": 8})
    ... def tiny_mlp(units=8, *, options):
    ...     return build_model([DenseBlock(units)], options)
    >>> get("tiny_mlp") is tiny_mlp
    True
    >>> resolve_rule("tiny_mlp", "associated").code_units
    8
    >>> unregister("tiny_mlp") is tiny_mlp
    True
    """

    def decorator(architecture):
        made = builder(name=name, **settings)(architecture)
        _REGISTRY[name] = made
        return made

    return decorator


def unregister(name):
    """Removes the builder called `name` from the registry; returns it."""
    get(name)
    return _REGISTRY.pop(name)


def names():
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def get(name):
    """The builder called `name`; `ValueError` listing the valid names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown model {name!r}. Valid models: {', '.join(names())}."
        ) from None


def _make_builder(architecture, name, *, rule, learning_rate, default_activation, rule_defaults):
    """The builder of `architecture`: its arguments, then the options."""
    parameters = list(inspect.signature(architecture).parameters.values())
    if not parameters or parameters[-1].name != "options":
        raise TypeError(f"{architecture.__name__} must take `options` last.")
    own = parameters[:-1]
    odd = [
        p.name for p in own if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    clashes = [p.name for p in own if p.name in _OPTIONS]
    if odd or clashes:
        raise TypeError(
            f"{architecture.__name__}: {', '.join(odd + clashes)} cannot be an "
            "argument of an architecture (no *args, **kwargs or builder options)."
        )
    name = name or architecture.__name__
    defaults = {"rule": rule, "learning_rate": learning_rate, "name": name}
    options = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=defaults.get(field.name, field.default),
        )
        for field in dataclasses.fields(BuildOptions)
    ]

    def build(*args, **kwargs):
        return _build(build, args, kwargs)

    functools.update_wrapper(build, architecture)
    build.__signature__ = inspect.Signature(own + options)
    build._zoo_spec = _Spec(
        name, architecture, build.__signature__, default_activation, rule_defaults
    )
    return build


def _build(made, args, kwargs):
    """Calls the architecture of the builder `made` with resolved options."""
    spec = made._zoo_spec
    unknown = sorted(set(kwargs) - set(spec.signature.parameters))
    if unknown:
        raise TypeError(
            f"{spec.name}() got an unexpected keyword argument "
            f"{', '.join(map(repr, unknown))}; "
            "rule parameters go in `rule_options` (or the rule's config)."
        )
    bound = spec.signature.bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    given = {option: arguments.pop(option) for option in _OPTIONS}
    rule = resolve_rule(
        made,
        given["rule"],
        given["rule_options"],
        **arguments,
        **{k: v for k, v in given.items() if k not in _RULE_OPTIONS},
    )
    activation = given["activation"] or spec.default_activation or rule.default_activation
    options = BuildOptions(**{**given, "rule": rule, "activation": activation})
    return spec.architecture(**arguments, options=options)


def resolve_rule(model, rule=None, options=None, **arguments):
    """The `Rule` that `zoo.get(model)(rule=rule, **arguments)` trains with,
    with the rule parameters in `options` set.

    The one place that turns a model, a rule and the user's settings into
    the rule: every builder calls it, so a rule given by name gets the
    network's own defaults of the parameters the user did not set, e.g.
    `al_mlp`'s 1024-unit code under `associated`:

    >>> resolve_rule("al_mlp", "associated").code_units
    1024
    >>> resolve_rule("al_mlp", "associated", {"code_units": 64}).code_units
    64
    >>> resolve_rule("al_cnn").code_units
    256

    Args:
        model: a zoo model name (`names()`) or a builder (e.g. `zoo.vgg`).
        rule: a rule name, a `{"name", "config"}` dict or a `Rule`
            instance (which keeps its own values); `None`: the model's
            default rule.
        options: rule parameters the user set, e.g. `{"code_units": 64}` or
            `{"beta": 0.9}`; they win over the architecture's defaults.
        **arguments: the builder's other arguments, those the architecture
            defaults may depend on (e.g. `al_mlp`'s `units`, `width` and
            `code_units`). Missing ones take the builder's defaults.

    Raises:
        ValueError: for an unknown model or rule, or an option the rule does
            not take.
        TypeError: for an argument the builder does not take.
    """
    made = model if callable(model) else get(model)
    spec = getattr(made, "_zoo_spec", None)
    if spec is None:
        raise TypeError(f"Expected a zoo model name or builder, got {model!r}.")
    parameters = spec.signature.parameters
    unknown = sorted((set(arguments) - set(parameters)) | (set(arguments) & set(_RULE_OPTIONS)))
    if unknown:
        raise TypeError(
            f"{spec.name}() takes no argument {', '.join(unknown)}; rule parameters "
            "go in `options`."
        )
    bound = {n: p.default for n, p in parameters.items() if p.default is not p.empty}
    bound.update(arguments)
    rule = bound["rule"] if rule is None else rule
    return _resolve(rule, options, spec.defaults_of_rule_parameters(bound))


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
