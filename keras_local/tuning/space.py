"""Search spaces: the default one, their forms, and their checks.

A search space maps what is searched to how it is sampled. An entry names a
builder argument (`learning_rate`, `dropout`, `width`, `units`, ...) or a
rule parameter: `rule.<name>` (`rule.code_units`, `rule.gamma`; in TOML a
`[space.rule]` table or a quoted key), or `beta` and `dim_in_decoder` as they
are (`keras_local.run_settings.RULE_OPTION_SHORTHANDS`). A rule parameter is
passed to the rule as a rule option, never to the builder.

>>> normalize_space({"learning_rate": [1e-4, 1e-2]})
{'learning_rate': {'type': 'float', 'min': 0.0001, 'max': 0.01, 'sampling': 'log'}}
"""

import math
import numbers

from keras_local import rules as rules_lib
from keras_local.run_settings import RULE_OPTION_SHORTHANDS

#: Search-space entries named `rule.<name>` search the rule parameter `<name>`.
RULE_PREFIX = "rule."

_SPEC_KEYS = {"min", "max", "step", "sampling", "values", "value"}
_SAMPLINGS = ("linear", "log", "reverse_log")


def default_space(rule):
    """The default search space for `rule`.

    * `learning_rate`: 1e-4 to 3e-3, log scale (the paper used 5e-4);
    * `dropout`: 0 to 0.3 in steps of 0.05;
    * `beta`, only for rules that take it: 0.001 to 0.999. When the rule's
      default is at least 0.5 (predsim, 0.99) it is sampled `reverse_log`,
      which with these bounds makes `1 - beta` log-uniform: a third of the
      samples lie above 0.99, two thirds above 0.9, the median is 0.968.
      Otherwise (predsim-bpf, 0.01) `beta` itself is log-uniform.
    """
    space = {
        "learning_rate": {"min": 1e-4, "max": 3e-3, "sampling": "log"},
        "dropout": {"min": 0.0, "max": 0.3, "step": 0.05},
    }
    parameters = rules_lib.parameters(rule)
    if "beta" in parameters:
        default = parameters["beta"]
        near_one = isinstance(default, numbers.Real) and default >= 0.5
        space["beta"] = {
            "min": 0.001,
            "max": 0.999,
            "sampling": "reverse_log" if near_one else "log",
        }
    return space


def normalize_space(space, rule=None):
    """Checks a search space and writes every entry in its full form.

    `space` maps a builder argument (`learning_rate`, `dropout`, `width`,
    `units`, ...) or a rule parameter (`rule.<name>`, e.g. `rule.code_units`,
    `rule.gamma`; in TOML a `[space.rule]` table or a quoted
    `"rule.code_units"` key; `beta` and `dim_in_decoder` also without the
    prefix), searched as a rule option, to:

    * `[min, max]` or `{"min": .., "max": .., "step": .., "sampling": ..}`:
      a range, of integers when both ends are integers (`hp.Int`), else of
      floats (`hp.Float`); `sampling` is `"linear"`, `"log"` or
      `"reverse_log"`, by default `"log"` for `learning_rate` and `"linear"`
      otherwise;
    * `{"values": [...]}`: a choice (`hp.Choice`);
    * a single value, or `{"value": ...}`: fixed (`hp.Fixed`).

    Returns:
        `{name: {"type": "float"|"int"|"choice"|"fixed", ...}}`.

    Raises:
        ValueError: for a malformed entry, an empty or inverted range, a log
            range that reaches 0, a dropout outside [0, 1), a learning rate
            that is not positive, or `beta` (or another rule parameter) for a
            rule that does not take it.
    """
    if not isinstance(space, dict):
        raise ValueError(f"The search space must be a dict, got {space!r}.")
    space = _flatten_rule_table(space)
    accepted = rules_lib.parameters(rule) if rule is not None else None
    normalized = {}
    for name, spec in space.items():
        if spec is None:
            continue
        parameter = rule_parameter(name)
        if parameter == "":
            raise ValueError(f"The search space entry {name!r} names no rule parameter.")
        normalized[name] = _normalize_entry(name, spec)
        if accepted is not None and parameter is not None and parameter not in accepted:
            takes = ", ".join(accepted) or "no parameters"
            raise ValueError(
                f"Rule {rule!r} does not take {parameter}, so it cannot be searched; "
                f"the rule takes {takes}."
            )
        _check_bounds(parameter or name, normalized[name])
    return normalized


def rule_parameter(name):
    """The rule parameter a search-space entry sets, as a rule option:
    `"rule.gamma"` -> `"gamma"`, and the shorthands `"beta"` and
    `"dim_in_decoder"` as they are; `None` for a builder argument."""
    prefixed = prefixed_parameter(name)
    if prefixed is not None:
        return prefixed
    return name if name in RULE_OPTION_SHORTHANDS else None


def prefixed_parameter(name):
    """The rule parameter of a `rule.<name>` entry, or `None`."""
    return name[len(RULE_PREFIX) :] if name.startswith(RULE_PREFIX) else None


def _flatten_rule_table(space):
    """`{"rule": {"gamma": [..]}}` (a `[space.rule]` TOML table) as
    `{"rule.gamma": [..]}`; other entries unchanged."""
    table = space.get("rule")
    if not isinstance(table, dict) or set(table) <= _SPEC_KEYS:
        return space
    flat = {}
    for name, spec in space.items():
        if name == "rule":
            flat.update({RULE_PREFIX + key: value for key, value in table.items()})
        else:
            flat[name] = spec
    return flat


def _normalize_entry(name, spec):
    where = f"search space entry {name!r}"
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise ValueError(
                f"The {where} must be [min, max], a table with min and max or "
                f"values, or a single value; got {list(spec)!r}."
            )
        spec = {"min": spec[0], "max": spec[1]}
    if not isinstance(spec, dict):
        return {"type": "fixed", "value": _check_scalar(where, spec)}
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ValueError(
            f"Unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in "
            f"the {where}; valid keys: {', '.join(sorted(_SPEC_KEYS))}."
        )
    if "value" in spec:
        if len(spec) > 1:
            raise ValueError(f"The {where} has `value` and other keys.")
        return {"type": "fixed", "value": _check_scalar(where, spec["value"])}
    if "values" in spec:
        if set(spec) != {"values"}:
            raise ValueError(f"The {where} has `values` and other keys.")
        values = spec["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"The {where}'s `values` must be a non-empty list.")
        return {"type": "choice", "values": [_check_scalar(where, v) for v in values]}
    return _normalize_range(name, where, spec)


def _normalize_range(name, where, spec):
    """A `{"min", "max", "step", "sampling"}` entry in its full form."""
    if "min" not in spec or "max" not in spec:
        raise ValueError(f"The {where} needs both `min` and `max` (or `values`).")
    low, high = (_check_number(where, spec[k]) for k in ("min", "max"))
    if low >= high:
        raise ValueError(f"The {where} has min {low!r} not below max {high!r}.")
    sampling = spec.get("sampling", "log" if name == "learning_rate" else "linear")
    if sampling not in _SAMPLINGS:
        raise ValueError(f"The {where} has sampling {sampling!r}; valid: {', '.join(_SAMPLINGS)}.")
    if sampling != "linear" and low <= 0:
        raise ValueError(
            f"The {where} is sampled on a log scale ({sampling}), so its min "
            f"must be positive, got {low!r}."
        )
    step = spec.get("step")
    if step is not None:
        step = _check_number(where, step)
        if step <= 0:
            raise ValueError(f"The {where} has step {step!r}; it must be positive.")
    integral = all(isinstance(v, numbers.Integral) for v in (low, high) + ((step,) if step else ()))
    entry = {"type": "int" if integral else "float", "min": low, "max": high}
    if not integral:
        entry = {"type": "float", "min": float(low), "max": float(high)}
    entry["sampling"] = sampling
    if step is not None:
        entry["step"] = step if integral else float(step)
    return entry


def _check_scalar(where, value):
    if not isinstance(value, (bool, numbers.Real, str)):
        raise ValueError(f"The {where} holds {value!r}; expected a number, bool or string.")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"The {where} holds {value!r}; expected a finite number.")
    return value


def _check_number(where, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"The {where} holds {value!r}; expected a finite number.")
    return value


def _span(entry):
    """The smallest and largest value an entry can take (numbers only)."""
    if entry["type"] in ("float", "int"):
        return entry["min"], entry["max"]
    values = [entry["value"]] if entry["type"] == "fixed" else entry["values"]
    numbers_only = [v for v in values if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    return (min(numbers_only), max(numbers_only)) if numbers_only else None


def _check_bounds(name, entry):
    span = _span(entry)
    if span is None:
        return
    low, high = span
    if name == "learning_rate" and low <= 0:
        raise ValueError(f"The learning rate must be positive; the search space reaches {low!r}.")
    if name == "dropout" and not (0 <= low and high < 1):
        raise ValueError(
            f"Dropout rates lie in [0, 1); the search space spans [{low!r}, {high!r}]."
        )
    if name == "beta" and not (0 <= low and high <= 1):
        raise ValueError(f"beta lies in [0, 1]; the search space spans [{low!r}, {high!r}].")


def declare(hp, name, entry):
    """Declares one normalized entry on `hp` (`keras_tuner.HyperParameters`);
    returns its value."""
    kind = entry["type"]
    if kind == "float":
        return hp.Float(
            name, entry["min"], entry["max"], step=entry.get("step"), sampling=entry["sampling"]
        )
    if kind == "int":
        return hp.Int(
            name, entry["min"], entry["max"], step=entry.get("step"), sampling=entry["sampling"]
        )
    if kind == "choice":
        return hp.Choice(name, entry["values"])
    return hp.Fixed(name, entry["value"])


def in_space(value, entry):
    """Whether `value` is one the normalized search-space `entry` can give."""
    kind = entry["type"]
    if kind == "fixed":
        return value == entry["value"]
    if kind == "choice":
        return value in entry["values"]
    low, high = entry["min"], entry["max"]
    tolerance = 1e-9 * max(abs(low), abs(high), 1.0)
    if not (low - tolerance <= value <= high + tolerance):
        return False
    if kind == "int" and value != int(value):
        return False
    return True
