"""The registry of learning rules: `@register` on a `Rule` subclass adds it.

A rule module in this package registers its rules by decorating them; the
package imports every module in it, so adding a rule is adding one file.
"""

import inspect

from keras_local.rules.base import Rule

_REGISTRY = {}


def register(rule_class):
    """Adds a `Rule` subclass to the registry under its `name`."""
    if not (isinstance(rule_class, type) and issubclass(rule_class, Rule)):
        raise TypeError(f"Expected a Rule subclass, got {rule_class!r}.")
    if not rule_class.name:
        raise ValueError(f"{rule_class.__name__} has no `name`.")
    _REGISTRY[rule_class.name] = rule_class
    return rule_class


def names():
    """The registered rule names, sorted."""
    return sorted(_REGISTRY)


def parameters(name):
    """The parameter names (with defaults) a registered rule accepts."""
    rule_class = _lookup(name)
    signature = inspect.signature(rule_class.__init__)
    return {
        p.name: p.default
        for p in list(signature.parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _lookup(name):
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown rule {name!r}. Valid rules: {', '.join(names())}."
        ) from None


def get(identifier, **overrides):
    """Returns a `Rule` instance.

    Args:
        identifier: a rule name (`"predsim"`), a `Rule` instance, or a dict
            from `serialize`.
        **overrides: rule parameters, e.g. `beta=0.9`. `None` values are
            ignored, so callers can pass optional settings through unchanged.
            A parameter the rule does not take raises `ValueError`.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(identifier, Rule):
        if not overrides:
            return identifier
        name, config = identifier.name, identifier.get_config()
    elif isinstance(identifier, dict):
        name, config = identifier.get("name"), dict(identifier.get("config", {}))
    else:
        name, config = identifier, {}
    rule_class = _lookup(name)
    accepted = parameters(name)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no parameters"
        raise ValueError(
            f"Rule {name!r} does not take {', '.join(unknown)}; it takes {takes}."
        )
    return rule_class(**{**config, **overrides})


def serialize(rule):
    """A JSON-serialisable description of `rule`, for `get`."""
    return {"name": rule.name, "config": rule.get_config()}
