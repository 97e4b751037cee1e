"""The settings of one training run, declared once.

`RunSettings` is the one description of a run: `experiment.train` trains
one, `keras-local train` derives its options from its fields, a recipe in
`zoo/` is one plus where its number was published, and `keras-local tune`
writes its best values as one (`command_line`).

>>> settings = RunSettings(model="vgg8b", rule="predsim", epochs=2,
...                        rule_options={"beta": 0.9})
>>> settings.command_line()
'keras-local train --model vgg8b --epochs 2 --rule-option beta=0.9'
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
import shlex

from keras_local.schedules import paper_milestones

#: Where trained models are saved when no output path is given.
SAVED_MODELS_DIR = "saved_models"

#: Rule parameters that `keras-local train` also takes as options of their own
#: (`--beta 0.9` for `--rule-option beta=0.9`); they are rule options.
RULE_OPTION_SHORTHANDS = ("beta", "dim_in_decoder")


class SettingsError(ValueError):
    """A setting of a run that cannot be used (the command line reports it
    as a usage error, without a traceback)."""


def _setting(default, help, *, flag=None, metavar=None, factory=None):
    """A `RunSettings` field: its default and how the command line shows it."""
    metadata = {"help": help, "flag": flag, "metavar": metavar}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class RunSettings:
    """What decides the result of one training run.

    Attributes:
        model: a zoo model name (`keras_local.zoo.names()`).
        rule: a rule name (`keras_local.rules.names()`).
        dataset: a data set name (`keras_local.data.DATASETS`).
        epochs: epochs to train.
        batch_size: examples per step (also used to evaluate, since the
            similarity losses depend on the batch).
        learning_rate: the optimizer's initial learning rate.
        optimizer: `"adam"` (Keras' Adam, epsilon 1e-8), `"pytorch-adam"`
            or `"pytorch-sgd"` (`keras_local.optimizers`: PyTorch's updates,
            as the papers' code applies them).
        weight_decay: L2 weight decay added to the gradient (PyTorch's
            coupled form; the `pytorch-*` optimizers only).
        momentum: momentum of `pytorch-sgd`.
        nesterov: Nesterov momentum for `pytorch-sgd`.
        pytorch_batch_norm: batch norm updates its running variance with the
            unbiased batch variance, as PyTorch does (Keras: the biased one).
        milestones: epochs after which the learning rate is multiplied by
            `decay_factor`; `None` for the paper's 50%, 75%, 89% and 94% of
            `epochs`.
        decay_factor: what the learning rate is multiplied by at each
            milestone: 0.25 in Nøkland & Eidnes (2019), 0.2 in Mostafa et
            al. (2018).
        width: multiplies the width of the model (conv filters, MLP units).
        dropout: dropout rate after every hidden activation.
        activation: hidden activation; `None`: the rule's default.
        rule_options: the rule's parameters, e.g. `{"beta": 0.9}` or
            `{"feedback": "scfb"}` (`keras_local.rules.parameters(rule)`);
            unset ones take the model's and then the rule's defaults.
        augment: train with the paper's augmentation of the data set.
        cutout: cutout hole length in pixels, `True` for the paper's length,
            `None` for none. Needs `augment`.
        train_examples: train on the first N training examples; `None`: all.
        test_examples: evaluate on the first N test examples; `None`: all.
        seed: seeds Python, NumPy, the backend and the augmentation.
    """

    model: str = _setting("mlp", "a zoo model")
    rule: str = _setting("predsim", "a learning rule")
    dataset: str = _setting("fashion_mnist", "a data set")
    epochs: int = _setting(1, "epochs to train")
    batch_size: int = _setting(128, "examples per step")
    learning_rate: float = _setting(5e-4, "initial learning rate")
    optimizer: str = _setting(
        "adam",
        "adam: Keras' Adam (epsilon 1e-8); pytorch-adam: PyTorch's Adam update "
        "(epsilon added to the bias-corrected sqrt(v), as in the papers' code); "
        "pytorch-sgd: PyTorch's SGD, with --momentum and --nesterov",
    )
    weight_decay: float = _setting(
        0.0, "L2 weight decay added to the gradient, as PyTorch's optimizers do (pytorch-* only)"
    )
    momentum: float = _setting(0.0, "momentum of pytorch-sgd")
    nesterov: bool = _setting(False, "Nesterov momentum (pytorch-sgd with --momentum)")
    pytorch_batch_norm: bool = _setting(
        False,
        "update batch norm's running variance with the unbiased batch variance, "
        "as PyTorch does (Keras uses the biased one)",
    )
    milestones: list | None = _setting(
        None,
        "epochs after which the learning rate is multiplied by --decay-factor "
        "(default: 50%%, 75%%, 89%% and 94%% of --epochs, as in Nøkland & Eidnes)",
        metavar="EPOCH",
    )
    decay_factor: float = _setting(
        0.25,
        "what the learning rate is multiplied by at each milestone (0.25 in "
        "Nøkland & Eidnes, 0.2 in Mostafa et al.)",
    )
    width: float = _setting(
        1,
        "width multiplier: conv filters of a VGG (2 = the paper's '(2x)'), units "
        "of an MLP",
    )
    dropout: float = _setting(0.0, "dropout rate of the hidden blocks")
    activation: str | None = _setting(
        None, "hidden activation, e.g. relu, leaky_relu (default: the rule's)"
    )
    rule_options: dict = _setting(
        None,
        "a parameter of the rule, e.g. --rule-option feedback=scfb for "
        "random-classifier (repeatable; `keras-local list` shows each rule's)",
        flag="--rule-option",
        metavar="NAME=VALUE",
        factory=dict,
    )
    augment: bool = _setting(
        True,
        "train without the paper's augmentation of the data set (for "
        "fashion_mnist: 2-pixel jitter and horizontal flips)",
        flag="--no-augment",
    )
    cutout: int | bool | None = _setting(
        None,
        "add cutout with holes of LENGTH pixels; without LENGTH, the paper's "
        "length for the data set (14 for the MNIST family)",
        metavar="LENGTH",
    )
    train_examples: int | None = _setting(
        None,
        "train on the first N training examples only (quick runs); default: all",
        metavar="N",
    )
    test_examples: int | None = _setting(
        None, "evaluate on the first N test examples only; default: all", metavar="N"
    )
    seed: int | None = _setting(None, "random seed (default: not seeded)")

    # ------------------------------------------------------------ checking
    def check(self):
        """Raises `SettingsError` (a `ValueError`) naming the first invalid
        setting, its type or its range; returns `self` with the milestones
        checked and sorted."""
        from keras_local import data
        from keras_local import rules
        from keras_local import zoo

        for name in ("model", "rule", "dataset"):
            if not isinstance(getattr(self, name), str):
                raise SettingsError(f"{name} must be a name, got {getattr(self, name)!r}.")
        zoo.get(self.model)
        rules.get(self.rule)
        data.info(self.dataset)
        if not isinstance(self.augment, bool):
            raise SettingsError(f"augment must be true or false, got {self.augment!r}.")
        if self.activation is not None and not isinstance(self.activation, str):
            raise SettingsError(
                f"activation must be an activation name, got {self.activation!r}."
            )
        if self.cutout not in (None, True, False):
            check_positive_int("cutout", self.cutout)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("train_examples", self.train_examples, optional=True)
        check_positive_int("test_examples", self.test_examples, optional=True)
        check_positive_int("seed", self.seed, optional=True, allow_zero=True)
        check_positive_number("learning_rate", self.learning_rate)
        check_positive_number("decay_factor", self.decay_factor)
        if self.decay_factor > 1:
            raise SettingsError(
                f"decay_factor multiplies the learning rate at each milestone and "
                f"must be in (0, 1], got {self.decay_factor!r}."
            )
        self._check_optimizer()
        check_positive_number("width", self.width)
        if isinstance(self.dropout, bool) or not (
            isinstance(self.dropout, numbers.Real) and 0 <= self.dropout < 1
        ):
            raise SettingsError(f"dropout must be a rate in [0, 1), got {self.dropout!r}.")
        if not isinstance(self.rule_options, dict):
            raise SettingsError(
                f"rule_options must be a table of rule parameters, got {self.rule_options!r}."
            )
        if self.cutout not in (None, False) and not self.augment:
            raise SettingsError(
                "cutout is part of the training augmentation; it cannot be used "
                "with augment=False (--no-augment)."
            )
        if self.milestones is not None:
            self.milestones = _checked_milestones(self.milestones)
        return self

    def _check_optimizer(self):
        from keras_local.optimizers import OPTIMIZERS

        if self.optimizer not in OPTIMIZERS:
            raise SettingsError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}."
            )
        for name in ("weight_decay", "momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0
            ):
                raise SettingsError(f"{name} must be a number >= 0, got {value!r}.")
        for name in ("nesterov", "pytorch_batch_norm"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        if self.weight_decay and not self.optimizer.startswith("pytorch-"):
            raise SettingsError(
                "weight_decay is PyTorch's (added to the gradient); use it with "
                "optimizer pytorch-adam or pytorch-sgd."
            )
        if (self.momentum or self.nesterov) and self.optimizer != "pytorch-sgd":
            raise SettingsError("momentum and nesterov are settings of optimizer pytorch-sgd.")
        if self.momentum >= 1 or (self.nesterov and not self.momentum):
            raise SettingsError(
                f"momentum must be in [0, 1) and above 0 for nesterov, got {self.momentum!r}."
            )

    def resolved_milestones(self):
        """The milestones the run uses: the given ones or the paper's."""
        if self.milestones is None:
            return paper_milestones(self.epochs)
        return list(self.milestones)

    # ---------------------------------------------------------- conversion
    @classmethod
    def names(cls):
        """The names of the settings, in their order."""
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values, where=""):
        """Settings from a dict of setting names; `ValueError` for unknown
        names (a rule parameter among them is pointed to `rule_options`)."""
        check_known_keys(values, cls.names(), "setting", where)
        values = dict(values)
        if values.get("rule_options") is None:
            values.pop("rule_options", None)
        return cls(**values)

    def to_dict(self):
        """The settings as JSON-serialisable values."""
        values = dataclasses.asdict(self)
        values["rule_options"] = dict(sorted(self.rule_options.items()))
        return values

    def default_output(self):
        """`saved_models/<model>-<rule>[-<option>=<value>]-<dataset>[-<setting>=<value>]`
        with `.keras`: every setting that changes the trained model and is off
        its default is named, so that runs of other settings never share a
        file."""
        options = "".join(f"-{k}={v}" for k, v in sorted(self.rule_options.items()))
        changes = "".join(f"-{item}" for item in self._changed_items())
        name = f"{self.model}-{self.rule}{options}-{self.dataset}{changes}.keras"
        return os.path.join(SAVED_MODELS_DIR, name)

    def _changed_items(self):
        """`name=value` for each setting off its default that changes the
        model (not `test_examples`; milestones only when not the paper's)."""
        defaults = RunSettings()
        for field in dataclasses.fields(self):
            name, value = field.name, getattr(self, field.name)
            if name in ("model", "rule", "dataset", "rule_options", "test_examples"):
                continue
            if name == "milestones":
                if value is not None and list(value) != paper_milestones(self.epochs):
                    yield "milestones=" + ",".join(map(str, value))
            elif name == "augment":
                if not value:
                    yield "no-augment"
            elif value != getattr(defaults, name):
                yield name if value is True else f"{name}={_short(value)}"

    def command_line(self):
        """The `keras-local train` command for these settings (options at
        their defaults left out)."""
        words = ["keras-local", "train"]
        defaults = RunSettings()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == getattr(defaults, field.name):
                continue
            flag = field.metadata["flag"] or "--" + field.name.replace("_", "-")
            if field.name == "rule_options":
                for name, option in sorted(value.items()):
                    words += [flag, f"{name}={_short(option)}"]
            elif field.name == "augment":
                words.append(flag)
            elif field.name == "milestones":
                words += [flag, *map(str, value)]
            elif value is True:  # a switch, or cutout at the paper's length
                words.append(flag)
            else:
                words += [flag, _short(value)]
        return shlex.join(words)

    # -------------------------------------------------------- command line
    @classmethod
    def add_arguments(cls, parser):
        """Adds an option for every setting to an `argparse` parser (with
        `from_args` reading them back)."""
        from keras_local import data
        from keras_local import rules
        from keras_local import zoo
        from keras_local.optimizers import OPTIMIZERS

        defaults = cls()
        choices = {
            "model": zoo.names(),
            "rule": rules.names(),
            "dataset": data.DATASETS,
            "optimizer": OPTIMIZERS,
        }
        for field in dataclasses.fields(cls):
            name, meta = field.name, field.metadata
            flag = meta["flag"] or "--" + name.replace("_", "-")
            default = getattr(defaults, name)
            if name == "rule_options":
                parser.add_argument(
                    flag, dest=name, action="append", type=parse_rule_option,
                    default=[], metavar=meta["metavar"], help=meta["help"],
                )
            elif name == "augment":
                parser.add_argument(flag, dest=name, action="store_false", help=meta["help"])
            elif default is False:
                parser.add_argument(flag, dest=name, action="store_true", help=meta["help"])
            elif name == "cutout":
                parser.add_argument(
                    flag, type=int, nargs="?", const=True, metavar=meta["metavar"],
                    help=meta["help"],
                )
            elif name == "milestones":
                parser.add_argument(
                    flag, type=int, nargs="+", metavar=meta["metavar"], help=meta["help"]
                )
            else:
                shown = "" if default is None else f" (default: {_short(default)})"
                parser.add_argument(
                    flag,
                    type=_TYPES.get(name, str),
                    default=default,
                    choices=choices.get(name),
                    metavar=meta["metavar"],
                    help=meta["help"] + shown,
                )
        for name in RULE_OPTION_SHORTHANDS:
            takers = [r for r in rules.names() if name in rules.parameters(r)]
            parser.add_argument(
                "--" + name.replace("_", "-"),
                dest=f"rule_option_{name}",
                type=number,
                metavar="VALUE",
                help=f"the rule parameter {name}, as --rule-option {name}=VALUE "
                f"(rules that take it: {', '.join(takers)})",
            )

    @classmethod
    def from_args(cls, args):
        """The settings an `argparse` namespace of `add_arguments` holds."""
        values = {name: getattr(args, name) for name in cls.names()}
        options = dict(values["rule_options"])
        for name in RULE_OPTION_SHORTHANDS:
            value = getattr(args, f"rule_option_{name}", None)
            if value is not None:
                options[name] = value
        values["rule_options"] = options
        return cls(**values)


# ------------------------------------------------------------------ checks
def check_known_keys(values, valid, what, where=""):
    """`SettingsError` naming the keys of `values` not in `valid` (a rule
    parameter among them is pointed to `rule_options`)."""
    unknown = sorted(set(values) - set(valid))
    if unknown:
        hint = ""
        if set(unknown) & set(RULE_OPTION_SHORTHANDS):
            hint = " Rule parameters go in rule_options, e.g. rule_options = { beta = 0.99 }."
        raise SettingsError(
            f"Unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
            f"{where}. Valid {what}s: {', '.join(valid)}.{hint}"
        )


def check_positive_int(name, value, *, optional=False, allow_zero=False):
    """`ValueError` unless `value` is a positive (or non-negative) integer;
    `None` passes when `optional`."""
    if optional and value is None:
        return
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        kind = "a non-negative" if allow_zero else "a positive"
        raise SettingsError(f"{name} must be {kind} integer, got {value!r}.")


def check_positive_number(name, value):
    """`ValueError` unless `value` is a finite positive number."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
    ):
        raise SettingsError(f"{name} must be a positive number, got {value!r}.")


def _checked_milestones(milestones):
    if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
        raise SettingsError(f"milestones must be a list of epoch numbers, got {milestones!r}.")
    milestones = list(milestones)
    for milestone in milestones:
        if (
            isinstance(milestone, bool)
            or not isinstance(milestone, numbers.Integral)
            or milestone < 1
        ):
            raise SettingsError(
                "milestones must be positive integers (epochs after which the "
                f"learning rate drops), got {milestones!r}."
            )
    return sorted(int(m) for m in milestones)


# ------------------------------------------------------- parsing from text
def number(text):
    """An int when the text is integral (`2`), else a float (`1.5`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    return int(value) if value.is_integer() and "." not in text else value


def parse_rule_option(text):
    """`name=value`, the value read as a bool, int, float or string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    try:
        return name, number(value)
    except argparse.ArgumentTypeError:
        return name, value


_TYPES = {
    "epochs": int,
    "batch_size": int,
    "learning_rate": float,
    "decay_factor": float,
    "weight_decay": float,
    "momentum": float,
    "width": number,
    "dropout": float,
    "train_examples": int,
    "test_examples": int,
    "seed": int,
}


def _short(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
