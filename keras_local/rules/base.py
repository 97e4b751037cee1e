"""What every rule provides, and the layer that holds a block's heads."""

import keras


class LocalObjective(keras.layers.Layer):
    """The heads attached to one block and that block's local objective.

    A rule creates one per hidden block. `call(features, outputs, labels)`
    receives the block's activation before dropout (`features`), its output
    as fed to the next block (`outputs`), and integer class labels, and
    returns a dict with:

    - `"loss"`: the scalar this block minimises (weighted, as the rule says);
    - `"<name>_loss"` for every `name` in `loss_names`: the unweighted parts,
      reported as `block<i>_<name>_loss`;
    - `"logits"`, when `has_classifier`: the block's class prediction,
      reported as `block<i>_pred_accuracy` (and usable as an early exit).

    The block's input is detached by the model, so the gradient of `"loss"`
    reaches only this block and these heads.
    """

    loss_names = ()
    has_classifier = False

    def build(self, features_shape, outputs_shape=None, labels_shape=None):
        self.built = True


class Rule:
    """A learning rule: which heads each block carries and what it minimises.

    Rules and models are orthogonal: a model is blocks and an output layer; a
    rule decides, per block, the `LocalObjective` (or none), whether gradients
    may cross block boundaries, and how the output layer is trained. Subclass
    it and register the subclass with `keras_local.rules.register`.

    Attributes:
        name: the registry name.
        detach_blocks: put `stop_gradient` on every block's input (local
            rules); `False` lets the output loss reach every block (backprop).
        default_activation: what zoo builders use unless told otherwise.
        output_kernel_initializer: initialiser of the output layer's kernel.
    """

    name = None
    detach_blocks = True
    default_activation = "relu"
    output_kernel_initializer = "zeros"

    def make_objective(self, block, num_classes):
        """Returns the `LocalObjective` for `block`, or `None`."""
        return None

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
