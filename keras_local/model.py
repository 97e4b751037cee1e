"""`LocalModel`: a network of blocks trained block by block by a rule."""

import math
import numbers

import keras
from keras import ops

from keras_local import rules as rules_lib
from keras_local.layers.prediction_head import HEAD_DTYPE
from keras_local.layers.prediction_head import PredictionHead
from keras_local.model_inputs import CheckedEntryPoints
from keras_local.ops import prediction_loss
from keras_local.rules.base import FORMER_CLASSES
from keras_local.train_steps import BackendSteps


@keras.saving.register_keras_serializable(package="keras_local")
class LocalModel(BackendSteps, CheckedEntryPoints, keras.Model):
    """A stack of hidden blocks and an output layer, trained by a local rule.

    The network itself is plain: `call` runs the blocks in order and returns
    the output layer's logits. Training is where the rule comes in. The rule
    gives every block (or every group of blocks it trains as one) a
    `LocalObjective` (its heads and local loss); the training step runs the
    network *group by group* (each block with its objective, then the
    output layer) with `stop_gradient` on every group's input, so no
    gradient crosses a group boundary, and takes one optimizer step over
    all variables. On TensorFlow each group has its own `GradientTape`; on
    JAX the detached objectives are summed and differentiated at once in
    one jitted step, which gives every block the same gradient (see
    `compute_gradients`), or, with `block_staged = True`, each group in turn
    (`trains_block_by_block`); on torch each group's
    loss is backpropagated as soon as the group has run. A rule that does
    not detach (backprop) makes the whole network one group.

    The network's layers are indexed `0 .. len(hidden_blocks)`: hidden block
    `i`, then the output layer (`output_layer`, if the rule has one).

    Made without `input_shape`, the model is built from its first batch's
    shape, with an open batch axis, before any step runs. `fit`,
    `evaluate`, `predict` and `*_on_batch` check every batch of every input
    kind (`keras_local.batch_checks`): a bad label or a wrong input shape
    raises a `ValueError` before a step runs on it.

    `fit`, `evaluate` and their logs report `loss` (the summed objective),
    `accuracy` and `output_loss` (the output layer's accuracy and unweighted
    cross-entropy) and, for block `i`, `block<i>_<part>_loss` (each unweighted
    part of its local loss, e.g. `block3_sim_loss`) and
    `block<i>_pred_accuracy` (its local classifier's accuracy).

    Args:
        blocks: the hidden blocks (`ConvBlock`, `DenseBlock`, ...), in order.
        num_classes: number of classes; labels are integers in
            `[0, num_classes)`.
        rule: a rule name, `Rule` instance or serialised rule
            (`keras_local.rules`).
        augmentation: a layer applied to the inputs in training steps only.
        input_shape: the shape of one example, without the batch axis; if
            `None` the model is built from the first batch it sees.
        groups: how the builder groups consecutive blocks (the number of
            blocks in each group, e.g. a ResNet's stem and stages); `None`
            makes every block its own group. Rules that train groups
            (`Rule.trains_groups`, associated learning) train each group as
            one, with one objective on its last block.

    Example:

    >>> model = LocalModel(
    ...     [DenseBlock(256, activation="leaky_relu"),
    ...      DenseBlock(256, activation="leaky_relu")],
    ...     num_classes=10, rule="predsim", input_shape=(28, 28, 1))
    >>> model.compile(keras.optimizers.Adam(5e-4, epsilon=1e-8))
    >>> model.fit(x_train, y_train, epochs=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        blocks,
        num_classes,
        rule="predsim",
        augmentation=None,
        input_shape=None,
        groups=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not blocks:
            raise ValueError("A LocalModel needs at least one block.")
        # NumPy integers too (`int(y.max()) + 1` is not always written).
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, numbers.Integral)
            or num_classes < 2
        ):
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        num_classes = int(num_classes)
        self.rule = rules_lib.get(rule)
        self.num_classes = num_classes
        self.hidden_blocks = list(blocks)
        self.groups = _check_groups(groups, len(self.hidden_blocks))
        for block in self.hidden_blocks:
            self.rule.prepare_block(block)
        objectives = [None] * len(self.hidden_blocks)
        group_objectives = self.rule.make_objectives(
            [self.hidden_blocks[group[-1]] for group in self.block_groups()], num_classes
        )
        for group, objective in zip(self.block_groups(), group_objectives):
            objectives[group[-1]] = objective
        # Assigned whole: Keras tracks the layers of a list set as an attribute.
        self.objectives = objectives
        self.uses_former_objective_names = False
        self.output_layer = None
        if self.rule.has_output_layer:
            # float32 under a mixed precision policy: logits, probabilities
            # and the output cross-entropy keep full precision.
            self.output_layer = PredictionHead(
                num_classes,
                dim_in_decoder=None,
                kernel_initializer=self.rule.output_kernel_initializer,
                feedback=self.rule.output_feedback,
                feedback_options=self.rule.output_feedback_options,
                dtype=HEAD_DTYPE,
                name="classifier",
            )
        elif self.objectives[-1] is None or not self.objectives[-1].has_local_classifier:
            raise ValueError(
                f"Rule {self.rule.name!r} has no output layer, so its last "
                "objective must have a local classifier."
            )
        self.augmentation = augmentation
        # `fit` stops at the first NaN or infinite loss (`DivergenceError`);
        # set to False to train on regardless.
        self.stop_on_divergence = True
        # True: train group by group on JAX too (`trains_block_by_block`).
        # Off by default: on the CPU, XLA already frees each block's
        # activations early and the barriers made VGG8B's step 8% slower
        # (benchmarks/memory.py, docs/how-it-works.md).
        self.block_staged = False
        self._make_metrics()
        if input_shape is not None:
            self.build((None, *input_shape))

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        if self.built:
            # Keras may call `build` again (e.g. keras-tuner resuming a
            # trial); the layers and their state exist already.
            return
        # The batch axis is left open: Keras builds from the first batch, and
        # a head built for its size would refuse every other.
        input_shape = (None, *tuple(input_shape)[1:])
        x = keras.KerasTensor(input_shape)
        if self.augmentation is not None and not self.augmentation.built:
            self.augmentation.build(input_shape)
        for block, objective in zip(self.hidden_blocks, self.objectives):
            block_output = block(x)
            x = block_output.outputs
            self._check_not_empty(input_shape, block, x.shape)
            if objective is not None:
                objective.build(block_output.features.shape, x.shape)
        if self.output_layer is not None:
            self.output_layer(x)
        self._input_shape_checked = input_shape
        self.built = True

    def _check_not_empty(self, input_shape, block, shape):
        """A clear error, instead of a division by zero in an initializer,
        when the blocks shrink the input to nothing (too small an image, or
        a channels-first shape)."""
        if all(d is None or d > 0 for d in shape[1:]):
            return
        example = tuple(input_shape[1:])
        hint = ""
        if len(example) == 3 and example[0] in (1, 3) and example[-1] > 4:
            hint = (
                f" It looks channels-first: keras_local takes images as (height, width, "
                f"channels), e.g. {(example[1], example[2], example[0])}."
            )
        raise ValueError(
            f"Inputs of shape {example} are too small for {self.name}: {block.name} "
            f"leaves a feature map of shape {tuple(shape[1:])}.{hint}"
        )

    def call(self, inputs, training=None):
        x = self.standardize_inputs(inputs)
        for block in self.hidden_blocks:
            features, x = block(x, training=training)
        return self.predict_from_last_block(features, x)

    def predict_from_last_block(self, features, outputs):
        """The network's logits from the last block's `BlockOutput` fields:
        the output layer's, or the last objective's exit for rules without
        an output layer. float32 under every dtype policy (`HEAD_DTYPE`)."""
        if self.output_layer is None:
            # The rule's own exit may compute in the policy's 16 bits.
            return ops.cast(self.objectives[-1].predict(features, outputs), HEAD_DTYPE)
        return self.output_layer(outputs)

    @property
    def classifier(self):
        """Former name of `output_layer` (read-only)."""
        # Also what a `.keras` file stores the output layer's weights under:
        # Keras walks a model's attributes in sorted order, and `classifier`
        # comes before `output_layer`.
        return self.output_layer

    # ---------------------------------------------------------------- groups
    @property
    def num_layers(self):
        """The hidden blocks, then the output layer (if the rule has one)."""
        return len(self.hidden_blocks) + (self.output_layer is not None)

    def block_groups(self):
        """The groups of hidden blocks the rule trains as one, as lists of
        block indices: the builder's `groups` for rules that train groups,
        otherwise every block on its own."""
        if not self.rule.trains_groups:
            return [[index] for index in range(len(self.hidden_blocks))]
        groups, start = [], 0
        for size in self.groups:
            groups.append(list(range(start, start + size)))
            start += size
        return groups

    @property
    def trains_block_by_block(self):
        """Whether JAX's training step completes each group's forward pass,
        loss and gradient before the next group starts (so that only one
        group's activations are held at a time) instead of differentiating
        the summed objective in one go: when `block_staged` is set and the
        rule detaches its blocks without a top-down pass. (The TensorFlow and
        torch steps always work group by group for such rules.) The
        gradients, and so the update, are the same either way."""
        return self.block_staged and self.rule.detach_blocks and not self.rule.top_down

    def trained_groups(self):
        """The groups of layers (indices, see the class docstring) that
        each have one gradient computation in a training step.

        Every group of `block_groups` and the output layer on their own for
        rules that detach blocks; one group of all layers for rules that do
        not (backprop).
        """
        if not self.rule.detach_blocks:
            return [list(range(self.num_layers))]
        groups = self.block_groups()
        if self.output_layer is not None:
            groups.append([len(self.hidden_blocks)])
        return groups

    def layer_variables(self, index):
        """Trainable variables of layer `index`: a block and its heads, or
        the output layer. An objective may use another block's heads
        (associated learning decodes through the lower ones); see
        `group_variables`."""
        if index == len(self.hidden_blocks):
            return list(self.output_layer.trainable_variables)
        variables = list(self.hidden_blocks[index].trainable_variables)
        if self.objectives[index] is not None:
            variables += self.objectives[index].trainable_variables
        return variables

    def group_variables(self, group):
        """The trainable variables a group's loss trains (`group` is one of
        `trained_groups()`): those of its layers that no earlier group owns
        (a variable shared by several objectives belongs to the first)."""
        owner = {}
        for position, other in enumerate(self.trained_groups()):
            for index in other:
                for variable in self.layer_variables(index):
                    owner.setdefault(id(variable), position)
        position = self.trained_groups().index(list(group))
        seen, variables = set(), []
        for index in group:
            for variable in self.layer_variables(index):
                if owner[id(variable)] == position and id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
        return variables

    def run_layer(self, index, inputs, labels, training=False):
        """Runs layer `index`; returns `(outputs, result)`.

        `result` is the objective's dict (`"loss"`, its parts and `"logits"`
        when it has a local classifier), `{}` for a block without an
        objective.
        """
        if index == len(self.hidden_blocks):
            logits = self.output_layer(inputs)
            output_loss = prediction_loss(logits, labels)
            return logits, {
                "loss": self.rule.output_loss_weight * output_loss,
                "output_loss": output_loss,
                "logits": logits,
            }
        features, outputs = self.hidden_blocks[index](inputs, training=training)
        objective = self.objectives[index]
        if objective is None:
            return outputs, {}
        return outputs, objective(features, outputs, labels, training=training)

    def run_group(self, group, inputs, labels, training=False):
        """Runs a group of layers from its detached input; returns
        `(outputs, results, loss)` with the sum of the layers' losses."""
        # convert_to_tensor: torch's stop_gradient (`detach`) takes no NumPy.
        x = ops.stop_gradient(ops.convert_to_tensor(inputs))
        results = []
        for index in group:
            x, result = self.run_layer(index, x, labels, training=training)
            results.append(result)
        loss = sum(result["loss"] for result in results if "loss" in result)
        return x, results, loss

    def local_objective(self, x, labels, training=False):
        """The summed objective of all layers, with inputs detached at every
        group boundary; returns `(total, results)`, one result per layer.

        Its gradient with respect to any variable equals the gradient of the
        variable's own group objective, because no other group depends on
        it. Rules with a top-down pass (`Rule.top_down`) add, after the
        forward pass, each block's term driven by the error signal from
        above.
        """
        results = []
        for group in self.trained_groups():
            x, group_results, _ = self.run_group(group, x, labels, training)
            results += group_results
        self.top_down_pass(results, labels)
        total = sum(result["loss"] for result in results if "loss" in result)
        return total, results

    def top_down_pass(self, results, labels):
        """For rules with a top-down pass: sends the output's error signal
        down through the blocks' objectives (last block first), adding each
        block's term to its loss in `results`. Nothing for other rules."""
        if not self.rule.top_down:
            return
        signal = self.rule.output_signal(self.output_result(results)["logits"], labels)
        for index in reversed(range(len(self.hidden_blocks))):
            objective = self.objectives[index]
            if objective is None:
                continue
            term, signal = objective.top_down(results[index], signal)
            results[index]["loss"] = results[index]["loss"] + term

    def output_result(self, results):
        """The result holding the network's prediction: the output layer's,
        or the last block's for rules without an output layer."""
        return results[-1]

    def group_losses(self, results):
        """The loss of every group of `trained_groups`: the sum of its
        layers' losses."""
        return [
            sum(results[index]["loss"] for index in group if "loss" in results[index])
            for group in self.trained_groups()
        ]

    def augment(self, x):
        if self.augmentation is None:
            return x
        return self.augmentation(x, training=True)

    # ---------------------------------------------------------------- metrics
    def _make_metrics(self):
        # Logged first, after `loss`: the output accuracy and loss.
        self._output_metrics = {
            "losses": (
                {"output_loss": keras.metrics.Mean(name="output_loss")}
                if self.output_layer is not None
                else {}
            ),
            "accuracy": keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        }
        self._block_metrics = []
        for index, objective in enumerate(self.objectives, start=1):
            metrics = {"losses": {}, "accuracy": None}
            if objective is not None:
                for part in objective.loss_names:
                    metrics["losses"][f"{part}_loss"] = keras.metrics.Mean(
                        name=f"block{index}_{part}_loss"
                    )
                if objective.has_local_classifier:
                    metrics["accuracy"] = keras.metrics.SparseCategoricalAccuracy(
                        name=f"block{index}_pred_accuracy"
                    )
            self._block_metrics.append(metrics)

    def update_metrics(self, total, results, labels):
        """Updates every tracker from a step's results; returns the logs."""
        batch_size = ops.shape(labels)[0]
        self._loss_tracker.update_state(total, sample_weight=batch_size)
        pairs = [(self._output_metrics, self.output_result(results))]
        pairs += list(zip(self._block_metrics, results))
        for metrics, result in pairs:
            for key, tracker in metrics["losses"].items():
                tracker.update_state(result[key], sample_weight=batch_size)
            if metrics["accuracy"] is not None:
                metrics["accuracy"].update_state(labels, result["logits"])
        return {metric.name: metric.result() for metric in self.metrics}

    # ------------------------------------------------------------ inspection
    def count_inference_params(self):
        """Trainable parameters of the network without its local heads (the
        "#params" of the papers' tables): the blocks and the output layer, or,
        for rules without one, the weights the last objective's exit uses."""
        if self.output_layer is None:
            weights = self.objectives[-1].exit_weights()
        else:
            weights = self.output_layer.trainable_weights
        for block in self.hidden_blocks:
            weights = weights + block.trainable_weights
        unique = {id(w): w for w in weights}.values()
        return sum(math.prod(w.shape) for w in unique)

    # --------------------------------------------------------- serialisation
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "blocks": [keras.saving.serialize_keras_object(b) for b in self.hidden_blocks],
            "num_classes": self.num_classes,
            "rule": rules_lib.serialize(self.rule),
            "groups": self.groups,
            "former_objective_names": self.uses_former_objective_names,
            "augmentation": (
                None
                if self.augmentation is None
                else keras.saving.serialize_keras_object(self.augmentation)
            ),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Configs written before the objectives' classes were renamed lack
        # the key: their weights are stored under the former names.
        former_names = config.pop("former_objective_names", True)
        config["blocks"] = [
            keras.saving.deserialize_keras_object(b) for b in config["blocks"]
        ]
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(
                config["augmentation"]
            )
        model = cls(**config)
        if former_names:
            model.use_former_objective_names()
        return model

    def use_former_objective_names(self):
        """Gives every objective of a renamed class the subclass under the
        former name (`keras_local.rules.base.renamed_from`). A `.keras`
        file stores an objective's weights under its class's name, so a
        model saved before the rename loads (`from_config` calls this) and
        saves again under the former names."""
        for objective in self.objectives:
            former = FORMER_CLASSES.get(type(objective))
            if former is not None:
                objective.__class__ = former
        self.uses_former_objective_names = True


def _check_groups(groups, num_blocks):
    """`groups` as a list of positive ints summing to `num_blocks` (one group
    per block when `None`)."""
    if groups is None:
        return [1] * num_blocks
    groups = list(groups)
    if any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in groups) or (
        sum(groups) != num_blocks
    ):
        raise ValueError(
            f"groups must be positive block counts that sum to the {num_blocks} "
            f"blocks; got {groups!r}."
        )
    return groups
