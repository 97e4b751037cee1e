"""`LocalHyperModel`: a zoo model with a rule, built from sampled values; and
`split_validation`, the held-out part of the training set the search scores on.
"""

import inspect
import numbers

import keras
import numpy as np

from keras_local import rules as rules_lib
from keras_local import zoo
from keras_local.optional import require
from keras_local.run_settings import RULE_OPTION_SHORTHANDS
from keras_local.run_settings import RunSettings
from keras_local.tuning.space import declare
from keras_local.tuning.space import default_space
from keras_local.tuning.space import normalize_space
from keras_local.tuning.space import prefixed_parameter
from keras_local.tuning.space import rule_parameter

keras_tuner = require("keras_tuner", feature="keras_local.tuning (keras-local tune)")

#: Builder arguments `LocalHyperModel` sets itself (the rule options go in
#: the rule it passes).
_RESERVED = ("rule", "rule_options", "num_classes", "input_shape", "augmentation")
#: The `RunSettings` fields a search sets itself (not from searched values).
_RUN_SETTINGS_OF_THE_SEARCH = (
    "model", "rule", "rule_options", "dataset", "batch_size", "augment", "train_examples",
)  # fmt: skip


class LocalHyperModel(keras_tuner.HyperModel):
    """A zoo model with a rule, built from sampled hyperparameters.

    `build(hp)` declares the search space on `hp` and calls the zoo builder
    with the sampled values: builder arguments (`learning_rate`, `dropout`,
    `width`, `units`, ...) as its arguments, rule parameters (`rule.<name>`,
    and `beta` and `dim_in_decoder`) as options of the rule it gets. It
    returns the compiled `LocalModel` the builder makes.

    Args:
        model: a zoo builder name (`keras_local.zoo.names()`).
        rule: a rule name (`keras_local.rules.names()`).
        input_shape: shape of one example, e.g. `(28, 28, 1)`.
        num_classes: number of classes.
        space: the search space (see `normalize_space`); `None` for
            `default_space(rule)`, which searches `beta` only for rules that
            take it.
        fixed: other builder arguments, held fixed (e.g. `{"layers": 1,
            "units": 8}`), and the rule parameters `beta` and
            `dim_in_decoder` (e.g. `{"dim_in_decoder": 1024}`), passed to the
            rule as options.
        rule_options: the rule's other parameters (e.g. `{"feedback":
            "scfb"}`). The rule is built as `keras-local train` builds it
            (`keras_local.zoo.resolve_rule`): the network's own defaults of
            rule parameters (e.g. `al_mlp`'s 1024-unit associated-learning
            code) apply where neither these options, `fixed` nor the space
            (`rule.<name>` entries, searched as rule options) set them.
        augmentation: `None`, or a function of no arguments that returns
            a fresh training augmentation layer for each model (keras-tuner
            clears the session between trials, so a layer is not shared).
        seed: when set, every build starts from this random seed
            (`keras.utils.set_random_seed`), so trials differ only in their
            hyperparameters.
        jit_compile: `None` keeps the builder's compilation (XLA); `False`
            recompiles without it (the builders' XLA compilation takes
            seconds, which dominates very small trials).
    """

    def __init__(
        self,
        model,
        rule="predsim",
        *,
        input_shape,
        num_classes,
        space=None,
        fixed=None,
        rule_options=None,
        augmentation=None,
        seed=None,
        jit_compile=None,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        self.builder = zoo.get(model)
        self.model_name = model
        self.rule = rule
        self.rule_options = dict(rule_options or {})
        # A bad rule name or rule option fails here, not in every trial.
        rules_lib.get(rule, **self.rule_options)
        self.space = normalize_space(default_space(rule) if space is None else space, rule)
        self.fixed = dict(fixed or {})
        self._check_names()
        if augmentation is not None and not callable(augmentation):
            raise TypeError(
                "augmentation must be a function that returns a new layer for each "
                f"model (or None), got {augmentation!r}."
            )
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.augmentation = augmentation
        self.seed = seed
        self.jit_compile = jit_compile
        # The fixed settings resolve as the builder will resolve them.
        arguments, options = self.split({})
        zoo.resolve_rule(model, rule, options, **arguments)

    def _check_names(self):
        """Raises `ValueError` when a name is set twice, reserved, or not
        taken by the builder or the rule."""
        searched_options = {prefixed_parameter(n) for n in self.space} - {None}
        arguments = {name for name in self.space if prefixed_parameter(name) is None}
        clashes = sorted((set(self.fixed) | arguments) & set(_RESERVED))
        if clashes:
            raise ValueError(
                f"{', '.join(clashes)} cannot be searched or fixed: LocalHyperModel "
                "sets them itself."
            )
        both = sorted(set(self.fixed) & set(self.space))
        if both:
            raise ValueError(f"{', '.join(both)} is both searched and fixed.")
        options = sorted((set(self.fixed) | arguments | searched_options) & set(self.rule_options))
        options += sorted((set(self.fixed) | arguments) & searched_options)
        if options:
            # (A searched `rule.<name>` counts as a rule option.)
            raise ValueError(
                f"{', '.join(options)} is given as a rule option and as a builder "
                "argument; give it once."
            )
        for name in RULE_OPTION_SHORTHANDS:
            if name in self.fixed and name not in rules_lib.parameters(self.rule):
                raise ValueError(f"Rule {self.rule!r} does not take {name}.")
        parameters = inspect.signature(self.builder).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            given = (set(self.fixed) | arguments) - set(RULE_OPTION_SHORTHANDS)
            unknown = sorted(given - set(parameters))
            if unknown:
                raise ValueError(
                    f"zoo.{self.model_name} does not take {', '.join(unknown)}; it takes "
                    f"{', '.join(sorted(parameters))}."
                )

    def split(self, values):
        """The builder arguments and the rule options that `fixed` and the
        sampled `values` make: `({name: value}, {parameter: value})`, the
        rule options with `rule_options` under them."""
        arguments, options = {}, dict(self.rule_options)
        for name, value in self.fixed.items():
            if name in RULE_OPTION_SHORTHANDS:
                options[name] = value
            else:
                arguments[name] = value
        for name, value in values.items():
            parameter = rule_parameter(name)
            if parameter is None:
                arguments[name] = value
            else:
                options[parameter] = value
        return arguments, options

    def rule_spec(self, values):
        """The rule the builder gets for sampled `values`: the name with the
        user's options and the rule parameters set in `fixed` and `values`,
        so the builder (`zoo.resolve_rule`) fills in the network's own
        defaults of the parameters no one set, exactly as `keras-local
        train` does."""
        return {"name": self.rule, "config": self.split(values)[1]}

    def declare(self, hp):
        """Declares the search space on `hp`; returns the sampled values."""
        return {name: declare(hp, name, entry) for name, entry in self.space.items()}

    def build(self, hp):
        values = self.declare(hp)
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        augmentation = self.augmentation() if self.augmentation is not None else None
        model = self.builder(
            rule=self.rule_spec(values),
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            augmentation=augmentation,
            **self.split(values)[0],
        )
        if self.jit_compile is not None:
            model.compile(optimizer=model.optimizer, jit_compile=self.jit_compile)
        return model

    def fit(self, hp, model, *args, **kwargs):
        # Hyperband passes `epochs` and `initial_epoch` in kwargs.
        return model.fit(*args, **kwargs)

    def train_settings(self, values, **settings):
        """The `RunSettings` of `keras-local train` with sampled `values`, or
        `None` when a searched or fixed builder argument is not one of its
        settings (rule parameters go in its `rule_options`).

        Args:
            values: sampled values, e.g. the best trial's.
            **settings: the search's own settings: `dataset`, and
                `batch_size`, `augment`, `train_examples` where given.
        """
        arguments, options = self.split(values)
        takes = set(RunSettings.names()) - set(_RUN_SETTINGS_OF_THE_SEARCH)
        if not set(arguments) <= takes:
            return None
        return RunSettings(
            model=self.model_name, rule=self.rule, rule_options=options, **settings, **arguments
        )


def split_validation(x, y, fraction=0.1, seed=0):
    """Holds out a random `fraction` of a training set for validation.

    The split depends only on `len(x)`, `fraction` and `seed`, so a resumed
    search validates on the same examples.

    Returns:
        `((x_train, y_train), (x_val, y_val))`: the remaining examples in
        their original order, and the held-out ones.

    Raises:
        ValueError: if `fraction` is not in (0, 1), or the split would
            leave either part empty.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise ValueError(f"The validation fraction must lie in (0, 1), got {fraction!r}.")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}.")
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"A validation fraction of {fraction} of {n} examples leaves "
            f"{n_val} for validation and {n - n_val} for training; both need some."
        )
    order = np.random.default_rng(seed).permutation(n)
    val = np.sort(order[:n_val])
    train = np.sort(order[n_val:])
    return (x[train], y[train]), (x[val], y[val])
