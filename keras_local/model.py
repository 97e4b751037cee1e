"""`LocalModel`: a network of blocks trained block by block by a rule."""

import contextlib
import math

import keras
from keras import ops

from keras_local import rules as rules_lib
from keras_local.batch_checks import BatchChecker
from keras_local.batch_checks import checked
from keras_local.batch_checks import example_shape
from keras_local.batch_checks import reraise_batch_check
from keras_local.layers.prediction_head import HEAD_DTYPE
from keras_local.layers.prediction_head import PredictionHead
from keras_local.ops import prediction_loss
from keras_local.rules.base import FORMER_CLASSES
from keras_local.train_steps import BackendSteps


@keras.saving.register_keras_serializable(package="keras_local")
class LocalModel(BackendSteps, keras.Model):
    """A stack of hidden blocks and an output layer, trained by a local rule.

    The network itself is plain: `call` runs the blocks in order and returns
    the output layer's logits. Training is where the rule comes in. The rule
    gives every block (or every group of blocks it trains as one) a
    `LocalObjective` (its heads and local loss); the training step runs the
    network *group by group* (each block with its objective, then the
    output layer) with `stop_gradient` on every group's input, so no
    gradient crosses a group boundary, and takes one optimizer step over
    all variables. On TensorFlow each group has its own `GradientTape`; on
    JAX the detached objectives are summed and differentiated in one jitted
    step, which gives every block the same gradient (see
    `compute_gradients`); on torch each group's loss is backpropagated as
    soon as the group has run. A rule that does not detach (backprop) makes
    the whole network one group.

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
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
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
                dtype=HEAD_DTYPE,
                name="classifier",
            )
        elif self.objectives[-1] is None or not self.objectives[-1].has_local_classifier:
            raise ValueError(
                f"Rule {self.rule.name!r} has no output layer, so its last "
                "objective must have a local classifier."
            )
        self.augmentation = augmentation
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
            if objective is not None:
                objective.build(block_output.features.shape, x.shape)
        if self.output_layer is not None:
            self.output_layer(x)
        self._input_shape_checked = input_shape
        self.built = True

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

    # ---------------------------------------------------------------- inputs
    @property
    def example_shape(self):
        """The shape of one example the model is built for (no batch axis),
        or `None` before it is built (what inputs are checked against)."""
        shape = getattr(self, "_input_shape_checked", None)
        return None if shape is None else tuple(shape[1:])

    def batch_checker(self):
        """A `BatchChecker` of inputs and labels for this model."""
        return BatchChecker(self.name, self.num_classes, self.example_shape)

    def standardize_inputs(self, x):
        """`x` as the blocks take it: integer images (raw uint8 data) cast to
        the compute dtype, as a Keras `Input` casts them; the model built
        from `x`'s shape if it is not built yet. Raises a `ValueError` when
        `x`'s (static) shape does not fit the built model."""
        if not self.built:
            self.build(tuple(x.shape))
        self.batch_checker().check_inputs(x.shape)
        if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype)):
            x = ops.cast(x, self.compute_dtype)
        return x

    @staticmethod
    def labels_from(y):
        if y is None:
            raise ValueError("LocalModel needs labels to train or evaluate.")
        return ops.reshape(ops.cast(y, "int32"), (-1,))

    def unpack(self, data):
        """`(x, labels)` of a training or test step's batch."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(_NO_SAMPLE_WEIGHTS)
        return self.standardize_inputs(x), self.labels_from(y)

    def check_data(self, x, y=None):
        """Raises a clear `ValueError` for labels out of range, one-hot or
        non-integer labels and inputs of the wrong shape, in arrays `x`, `y`
        (or the first batch of a `PyDataset`). `fit`, `evaluate` and
        `predict` check every batch of every input kind themselves."""
        if y is None and isinstance(x, keras.utils.PyDataset):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(x[0])
        self.batch_checker().check(x, y if hasattr(y, "shape") else None)

    def _check_compile(self):
        if getattr(self, "_compile_loss", None) is not None or getattr(
            self, "_compile_metrics", None
        ) is not None:
            raise ValueError(
                "LocalModel computes its own losses and metrics from its rule; "
                "compile it with an optimizer only (no `loss=` or `metrics=`)."
            )

    def _prepare_data(self, x, y):
        """Builds the model from the data's example shape if needed (so that
        its state is made eagerly, never inside a traced step), and returns
        `(x, y)` with every batch to come checked."""
        if not self.built:
            shape, x = example_shape(x)
            if shape is not None:
                self.build((None, *shape))
        return checked(self.batch_checker(), x, y)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_compile()
        _reject_weights(kwargs)
        x, y = self._prepare_data(x, y)
        validation_data = kwargs.get("validation_data")
        if isinstance(validation_data, (tuple, list)):
            kwargs["validation_data"] = (
                *self._prepare_data(*validation_data[:2]),
                *validation_data[2:],
            )
        elif validation_data is not None:
            kwargs["validation_data"] = self._prepare_data(validation_data, None)[0]
        callbacks = kwargs.get("callbacks") or []
        for callback in callbacks:
            self._resolve_monitor_mode(callback)
        with _batch_check_errors():
            return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_compile()
        _reject_weights(kwargs)
        if not kwargs.get("_use_cached_eval_dataset"):
            x, y = self._prepare_data(x, y)
        with _batch_check_errors():
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        x, _ = self._prepare_data(x, None)
        with _batch_check_errors():
            return super().predict(x, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        _reject_weights(kwargs)
        x, y = self._prepare_data(x, y)
        with _batch_check_errors():
            return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        _reject_weights(kwargs)
        x, y = self._prepare_data(x, y)
        with _batch_check_errors():
            return super().test_on_batch(x, y, *args, **kwargs)

    def predict_on_batch(self, x):
        x, _ = self._prepare_data(x, None)
        return super().predict_on_batch(x)

    def _resolve_monitor_mode(self, callback):
        """Gives a callback that monitors one of the model's metrics in
        `mode="auto"` (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau)
        that metric's direction: Keras' automatic mode knows only the
        metrics given to `compile`, and a LocalModel makes its own."""
        monitor = getattr(callback, "monitor", None)
        if getattr(callback, "mode", None) != "auto" or not isinstance(monitor, str):
            return
        name = monitor.removeprefix("val_")
        if name.endswith("loss"):
            callback.mode = "min"
        elif name.endswith("accuracy"):
            callback.mode = "max"

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


_NO_SAMPLE_WEIGHTS = (
    "LocalModel does not support sample weights: every block's local loss is a "
    "mean over the batch. Resample the data instead."
)


def _reject_weights(kwargs):
    if kwargs.get("sample_weight") is not None:
        raise ValueError(_NO_SAMPLE_WEIGHTS)
    if kwargs.get("class_weight") is not None:
        raise ValueError(
            "LocalModel does not support class_weight: every block's local loss "
            "(and the similarity losses, which compare pairs of examples) is "
            "unweighted. Balance the classes by resampling the data instead."
        )


@contextlib.contextmanager
def _batch_check_errors():
    """Raises a batch check that failed inside a loader (a `tf.data`
    pipeline, Keras' `PyDataset` queue) as the `ValueError` it was, not as
    the loader's error."""
    try:
        yield
    except Exception as error:
        reraise_batch_check(error)
        raise
