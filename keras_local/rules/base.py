"""What every rule provides, and the layer that holds a block's heads."""

import numbers

import keras


class LocalObjective(keras.layers.Layer):
    """The heads attached to one block and that block's local objective.

    A rule creates one per hidden block (or per group of blocks it trains as
    one). `call(features, outputs, labels)` receives the block's
    `BlockOutput` fields (`features`, what the heads read; `outputs`, as fed
    to the next block) and integer class labels, and returns a dict with:

    - `"loss"`: the scalar this block minimises (weighted, as the rule says);
    - `"<name>_loss"` for every `name` in `loss_names`: the unweighted parts,
      reported as `block<i>_<name>_loss`;
    - `"logits"`, when `has_local_classifier`: the block's class prediction,
      reported as `block<i>_pred_accuracy` (and usable as an early exit).

    The block's input is detached by the model, so the gradient of `"loss"`
    reaches only this block and these heads. Subclasses are named
    `<Name>Objective`.
    """

    loss_names = ()
    #: Whether the objective has a local classifier (`predict`): an exit.
    has_local_classifier = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Subclasses written before the rename set `has_classifier`.
        former = vars(cls).get("has_classifier")
        if isinstance(former, bool):
            cls.has_local_classifier = former
            del cls.has_classifier

    @property
    def has_classifier(self):
        """Former name of `has_local_classifier`."""
        return self.has_local_classifier

    @has_classifier.setter
    def has_classifier(self, value):
        self.has_local_classifier = value

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        self.built = True

    def predict(self, features, outputs):
        """The block's class scores (logits) without labels: its exit, for
        objectives with `has_local_classifier`. `call` reports the same
        values as `"logits"` in training and evaluation."""
        raise NotImplementedError(f"{type(self).__name__} has no local classifier.")

    def exit_weights(self):
        """The trainable weights `predict` uses (for counting the parameters
        of the network that predicts); all of this objective's by default."""
        return list(self.trainable_weights)

    def top_down(self, result, signal):
        """For rules with a top-down pass (`Rule.top_down`): receives this
        block's `call` result and the error signal from above (from the output
        layer for the last block); returns `(term, signal_below)`, where
        `term` is added to this block's loss (its gradient is the block's
        update; its value should be 0 unless it is a real loss, see
        `keras_local.ops.gradient_surrogate`) and `signal_below` goes to the
        block below."""
        raise NotImplementedError(
            f"{type(self).__name__} does not take part in a top-down pass."
        )


#: Each renamed objective class -> the subclass under its former name.
FORMER_CLASSES = {}


def renamed_from(former_name):
    """Class decorator of a `LocalObjective` renamed from `former_name`.

    A `.keras` file stores each objective's weights under its class's name,
    so a model saved before the rename needs objectives of that name: this
    makes a subclass called `former_name`, registered under it, which
    `LocalModel` gives the objectives of such a model
    (`LocalModel.use_former_objective_names`).
    """

    def decorate(cls):
        former = type(
            former_name,
            (cls,),
            {
                "__module__": cls.__module__,
                "__doc__": f"`{cls.__name__}` under its former name (for saved models).",
            },
        )
        keras.saving.register_keras_serializable(package="keras_local")(former)
        FORMER_CLASSES[cls] = former
        return cls

    return decorate


class Rule:
    """A learning rule: which heads each block carries and what it minimises.

    Rules and models are orthogonal: a model is blocks and an output layer; a
    rule decides, per block, the `LocalObjective` (or none), whether gradients
    may cross block boundaries, and how the output layer is trained. Subclass
    it and decorate the subclass with `@keras_local.rules.register`; a
    module in `keras_local/rules/` is imported, and so registered, by the
    package itself.

    Attributes:
        name: the registry name.
        detach_blocks: put `stop_gradient` on every block's input (local
            rules); `False` lets the output loss reach every block (backprop).
        default_activation: what zoo builders use unless told otherwise.
        output_kernel_initializer: initialiser of the output layer's kernel.
        output_feedback: what the output layer sends back to its input
            (`None`, the true gradient, `"random"`, or another feedback of
            `FeedbackAlignmentDense`; see `PredictionHead`).
        output_feedback_options: what the output layer's
            `FeedbackAlignmentDense` takes besides `feedback` (a dict or
            `None`).
        top_down: after the forward pass, the model sends `output_signal`
            down through the blocks' objectives (`LocalObjective.top_down`),
            last block first: direct feedback alignment, target propagation.
        trains_groups: the rule trains *groups* of consecutive blocks as
            one, as the model builder groups them (`LocalModel(groups=...)`:
            VGG's stages, a ResNet's stem and stages): only the last block
            of a group gets an objective, and gradients are stopped only
            between groups (associated learning).
        has_output_layer: `False` when the rule makes its prediction from the
            last objective (`LocalObjective.predict`) instead of an output
            layer on the last block (associated learning decodes through
            its label autoencoders).
    """

    name = None
    detach_blocks = True
    default_activation = "relu"
    output_kernel_initializer = "zeros"
    output_feedback = None
    output_feedback_options = None
    top_down = False
    trains_groups = False
    has_output_layer = True

    def prepare_block(self, block):
        """Asks a hidden block, before it is built, for what the rule needs,
        through the block contract (`Block.request_feedback`,
        `Block.request_pre_activation`); nothing by default."""

    def make_objective(self, block, num_classes):
        """Returns the `LocalObjective` for `block`, or `None`."""
        return None

    def make_objectives(self, blocks, num_classes):
        """The objectives of the rule's groups, given each group's last
        block (every block, or each group's last block for
        `trains_groups`), in order. By default `make_objective` per block; a rule whose
        objectives refer to each other (e.g. chained label encoders)
        overrides this."""
        return [self.make_objective(block, num_classes) for block in blocks]

    def output_signal(self, logits, labels):
        """For rules with `top_down = True`: the error signal the output
        layer sends down to the last block's objective."""
        raise NotImplementedError(f"{type(self).__name__} has no top-down pass.")

    @property
    def output_loss_weight(self):
        """Factor on the output layer's cross-entropy."""
        return 1.0

    def get_config(self):
        """The constructor arguments; `type(self)(**config)` rebuilds it."""
        return {}

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({params})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


def check_fraction(name, value):
    """`value` as a float; `ValueError` naming the parameter unless it is a
    number in [0, 1] (a string from a config file included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
    return float(value)


def check_count(name, value):
    """`value` as an int; `ValueError` naming the parameter unless it is a
    positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
