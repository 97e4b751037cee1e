"""`KerasBlock`: a hidden block made of plain Keras layers (what
`keras_local.from_keras` cuts a Keras model into), and the swap of its
`Dense`/`Conv2D` layers for feedback-alignment ones."""

import keras

from keras_local.layers.block import BlockOutput
from keras_local.layers.block import BlockSpec
from keras_local.layers.feedback import FEEDBACKS as LAYER_FEEDBACKS
from keras_local.layers.feedback_alignment_conv2d import FeedbackAlignmentConv2D
from keras_local.layers.feedback_alignment_dense import FeedbackAlignmentDense

#: Layers with trainable weights that send their input the true gradient
#: under feedback alignment too, as the zoo blocks' batch norm does: they
#: scale each feature on its own and mix nothing.
ELEMENTWISE_WEIGHTED = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.PReLU,
)


def _activation_name(activation):
    name = getattr(activation, "__name__", None)
    return name if isinstance(name, str) else str(activation)


#: What a swapped layer keeps of the original besides its shape: passed to
#: the feedback-alignment layer as they are.
CARRIED = ("kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint")


def _carried(layer):
    """The settings of `layer` its feedback-alignment counterpart keeps:
    the trainable flag, regularizers and constraints (the activity
    regularizer goes to the slot's last layer, see `_with_activation`)."""
    return {"trainable": layer.trainable, **{key: getattr(layer, key) for key in CARRIED}}


def _with_activation(layer, original):
    """`layer`, followed by `original`'s activation when it has one; the
    activity regularizer on the last of them, as Keras' `Dense` applies it
    to its activation's output."""
    regularizer = original.activity_regularizer
    name = _activation_name(getattr(original, "activation", None))
    if name == "linear":
        layer.activity_regularizer = regularizer
        return layer
    activation = keras.layers.Activation(
        original.activation, name=f"{original.name}_activation", activity_regularizer=regularizer
    )
    return keras.Sequential([layer, activation], name=original.name, trainable=original.trainable)


def feedback_alignment_layer(layer, feedback="random", by=None, **options):
    """The feedback-alignment counterpart of `layer` (unbuilt, same name and
    dtype policy, sending `feedback` with `options`; see
    `keras_local.layers.feedback`): a `FeedbackAlignmentDense` for a `Dense`, a
    `FeedbackAlignmentConv2D` for a `Conv2D` (each followed by an
    `Activation` when the layer has a nonlinear one, the two in a
    `Sequential` of the layer's name); `None` for a layer that needs no swap
    (no trainable weights, or ones that act on each feature alone, e.g.
    batch norm). The counterpart keeps `trainable`, the regularizers and
    the constraints. Anything else with weights, or a setting the
    counterpart cannot honour, raises a `ValueError` naming the layer."""
    who = by or "the rule"
    if type(layer) is keras.layers.Dense:
        new = FeedbackAlignmentDense(
            layer.units,
            use_bias=layer.use_bias,
            feedback=feedback,
            **options,
            **_carried(layer),
            name=layer.name,
            dtype=layer.dtype_policy,
        )
        return _with_activation(new, layer)
    if type(layer) is keras.layers.Conv2D:
        problems = [
            f"{key}={value!r}"
            for key, value, plain in (
                ("dilation_rate", tuple(layer.dilation_rate), (1, 1)),
                ("groups", layer.groups, 1),
                ("data_format", layer.data_format, "channels_last"),
            )
            if value != plain
        ]
        if problems:
            raise ValueError(
                f"{who} asks for feedback alignment, but {layer.name} (Conv2D) has "
                f"{', '.join(problems)}; FeedbackAlignmentConv2D takes channels-last, "
                "undilated, ungrouped convolutions only."
            )
        new = FeedbackAlignmentConv2D(
            layer.filters,
            layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            use_bias=layer.use_bias,
            feedback=feedback,
            **options,
            **_carried(layer),
            name=layer.name,
            dtype=layer.dtype_policy,
        )
        return _with_activation(new, layer)
    if isinstance(layer, (FeedbackAlignmentDense, FeedbackAlignmentConv2D)):
        return None
    if isinstance(layer, ELEMENTWISE_WEIGHTED) or not _has_trainable_weights(layer):
        return None
    raise ValueError(
        f"{who} asks for feedback={feedback!r} (feedback alignment), but {layer.name} "
        f"({type(layer).__name__}) has no feedback-alignment counterpart: keras_local "
        "swaps Dense and Conv2D layers only."
    )


def _has_trainable_weights(layer):
    if layer.built:
        return bool(layer.trainable_weights)
    # Unbuilt: judge by kind (a kernel-bearing layer declares `units`/`filters`).
    kinds = ("units", "filters", "kernel_size", "output_dim", "layers")
    return any(hasattr(layer, attr) for attr in kinds)


def _fa_part(layer):
    """The feedback-alignment layer inside a swapped slot (itself, or the
    first layer of its `Sequential`)."""
    if isinstance(layer, keras.Sequential):
        return layer.layers[0]
    return layer


def copy_weights(source, target):
    """Copies the weights of the original Keras layer `source` into its
    (built) counterpart `target` in a `KerasBlock`: all of them when
    `target` is a copy, the kernel and bias when it is the
    feedback-alignment swap (its fixed feedback weights keep their draw)."""
    part = _fa_part(target)
    if isinstance(part, (FeedbackAlignmentDense, FeedbackAlignmentConv2D)) and not isinstance(
        source, (FeedbackAlignmentDense, FeedbackAlignmentConv2D)
    ):
        # Copies (NumPy), never the source's own arrays: JAX may donate them.
        part.kernel.assign(keras.ops.convert_to_numpy(source.kernel))
        if source.use_bias:
            part.bias.assign(keras.ops.convert_to_numpy(source.bias))
        return
    target.set_weights(source.get_weights())


@keras.saving.register_keras_serializable(package="keras_local")
class KerasBlock(keras.layers.Layer):
    """A hidden block made of plain Keras layers, with the block contract.

    The layers run in order, each on the outputs it names in `inputs`, so a
    block can hold a residual branch and its shortcut (an `Add` of both).
    `call` returns a `BlockOutput(features, outputs)`: `outputs` is the last
    layer's output; `features`, what a rule's heads read, is the output of
    layer `features_index` (by default the last one before trailing
    dropout, pooling and reshaping layers, as the zoo blocks' heads read
    the activation before dropout and pooling).

    `request_feedback("random")` (or another feedback of
    `keras_local.layers.feedback`, with its options; before the block is
    built) swaps every
    `Dense` and `Conv2D` for `FeedbackAlignmentDense` /
    `FeedbackAlignmentConv2D` (see `feedback_alignment_layer`), recording
    each swap in `swaps`; a layer with mixing weights that has no such
    counterpart raises a `ValueError`. The block does not offer its
    pre-activation (`request_pre_activation` returns `False`), so rules
    that want it align in activity space.

    Args:
        wrapped_layers: the Keras layers (or their serialised configs).
        inputs: for each layer, where its input comes from: `-1` the block's
            input, `j` layer `j`'s output; a list for a layer called on a
            list (`Add`, `Concatenate`). `None`: a chain.
        features_index: the layer whose output is `features`; `None`: the
            last layer.
        width: the last axis of `features` (for `spec`, which rules read
            before the block is built); `None` until built.
        feature_map: whether `features` are maps (rank 4); `None` until built.
        activation: the name of the block's last nonlinearity (for `spec`).
        feedback: `None`, or the feedback of the swapped layers (`"random"`, ...).
        feedback_options: the options it was requested with (`decay`, ...).

    Example:

    >>> block = KerasBlock([keras.layers.Dense(8), keras.layers.ReLU(),
    ...                     keras.layers.Dropout(0.1)], features_index=1)
    >>> features, outputs = block(keras.ops.ones((2, 4)))
    >>> block.spec.width, block.spec.feature_map
    (8, False)
    """

    FEEDBACKS = (None, *LAYER_FEEDBACKS)

    def __init__(
        self,
        wrapped_layers,
        inputs=None,
        features_index=None,
        width=None,
        feature_map=None,
        activation="linear",
        feedback=None,
        feedback_options=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        layers = [
            keras.saving.deserialize_keras_object(layer) if isinstance(layer, dict) else layer
            for layer in wrapped_layers
        ]
        if not layers:
            raise ValueError("A KerasBlock needs at least one layer.")
        if inputs is None:
            inputs = list(range(-1, len(layers) - 1))
        inputs = [list(i) if isinstance(i, (list, tuple)) else int(i) for i in inputs]
        if len(inputs) != len(layers):
            raise ValueError(f"inputs has {len(inputs)} entries for {len(layers)} layers.")
        for position, source in enumerate(inputs):
            for j in source if isinstance(source, list) else [source]:
                if not -1 <= j < position:
                    raise ValueError(
                        f"Layer {position} ({layers[position].name}) reads {j}: inputs "
                        "must name the block's input (-1) or an earlier layer."
                    )
        if features_index is None:
            features_index = len(layers) - 1
        if feedback not in self.FEEDBACKS:
            raise ValueError(f"feedback must be one of {self.FEEDBACKS}, got {feedback!r}.")
        self.wrapped_layers = layers
        self.inputs = inputs
        self.features_index = int(features_index)
        self._width = width
        self._feature_map = feature_map
        self.activation = activation
        self.feedback = feedback
        self.feedback_options = dict(feedback_options or {})
        self.features_from = "activation"
        #: `(layer name, former class, new class)` of every swap made here.
        self.swaps = []

    # ------------------------------------------------------------ contract
    @property
    def width(self):
        return self._width

    @property
    def feature_map(self):
        return bool(self._feature_map)

    @property
    def spec(self):
        """What this block declares (a `BlockSpec`; it never offers its
        pre-activation)."""
        return BlockSpec.of(self)

    def request_feedback(self, feedback, by=None, **options):
        """Swaps the layers for feedback-alignment ones sending `feedback`
        (`"random"`, ...; `options` go to the layers); only before the block
        is built, and only once. `None` keeps a block of true feedback."""
        if feedback not in self.FEEDBACKS:
            raise ValueError(f"feedback must be one of {self.FEEDBACKS}, got {feedback!r}.")
        if feedback == self.feedback and options == self.feedback_options:
            return
        if self.built or self.feedback is not None or feedback is None:
            kind = "true" if self.feedback is None else repr(self.feedback)
            raise ValueError(
                f"{self.name} is already built with {kind} feedback; give "
                f"{by or 'the rule'} unbuilt blocks."
            )
        swapped = []
        for layer in self.wrapped_layers:
            new = feedback_alignment_layer(layer, feedback, by=by, **options)
            if new is None:
                swapped.append(layer)
                continue
            swapped.append(new)
            self.swaps.append((layer.name, type(layer).__name__, _describe(new)))
        # The old layers untracked first, then the new list assigned whole:
        # Keras tracks sublayers in the order they are assigned, and the
        # trainable variables (hence the optimizer's slots, saved by
        # position) must come in the order a reloaded block, built from
        # the config's list, has. Appending the swapped layers after the
        # kept ones (a batch norm) would restore the optimizer's state
        # into the wrong variables.
        for layer in self.wrapped_layers:
            self._tracker.untrack(layer)
        self.wrapped_layers = swapped
        self.feedback = feedback
        self.feedback_options = dict(options)

    def request_pre_activation(self, by=None):
        """Plain Keras layers do not expose their pre-activation: `False`."""
        return False

    # -------------------------------------------------------------- forward
    def _run(self, inputs, training=None):
        outputs = []
        for layer, source in zip(self.wrapped_layers, self.inputs):
            if isinstance(source, list):
                x = [inputs if j < 0 else outputs[j] for j in source]
            else:
                x = inputs if source < 0 else outputs[source]
            if getattr(layer, "_call_has_training_arg", False):
                outputs.append(layer(x, training=training))
            else:
                outputs.append(layer(x))
        return BlockOutput(outputs[self.features_index], outputs[-1])

    def build(self, input_shape):
        output = self._run(keras.KerasTensor(tuple(input_shape)))
        shape = output.features.shape
        if self._width is None:
            self._width = shape[-1]
        if self._feature_map is None:
            self._feature_map = len(shape) == 4
        self.built = True

    def call(self, inputs, training=None):
        return self._run(inputs, training=training)

    def compute_output_shape(self, input_shape):
        output = self._run(keras.KerasTensor(tuple(input_shape)))
        return BlockOutput(tuple(output.features.shape), tuple(output.outputs.shape))

    def get_config(self):
        return {
            **super().get_config(),
            "wrapped_layers": [
                keras.saving.serialize_keras_object(layer) for layer in self.wrapped_layers
            ],
            "inputs": self.inputs,
            "features_index": self.features_index,
            "width": self._width,
            "feature_map": self._feature_map,
            "activation": self.activation,
            "feedback": self.feedback,
            "feedback_options": self.feedback_options,
        }


def _describe(layer):
    if isinstance(layer, keras.Sequential):
        return " + ".join(_describe(part) for part in layer.layers)
    if isinstance(layer, (FeedbackAlignmentDense, FeedbackAlignmentConv2D)):
        return f"{type(layer).__name__}(feedback={layer.feedback!r})"
    return type(layer).__name__
