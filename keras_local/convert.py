"""`from_keras`: a plain Keras model (Sequential or functional, a chain of
layers with residual blocks inside it) turned into a compiled `LocalModel`
whose hidden blocks are `KerasBlock`s of copies of its layers.

>>> model, report = from_keras(keras_model, rule="predsim")  # doctest: +SKIP
>>> print(report)  # doctest: +SKIP
"""

import dataclasses

import keras

from keras_local import rules as rules_lib
from keras_local.layers.keras_block import KerasBlock
from keras_local.layers.keras_block import copy_weights

#: Layers that end a block when they follow a Dense or convolution.
NONLINEARITIES = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Softmax,
)

#: Layers that join the block before them ("auto" split), and that
#: `features` is read before.
TRAILING = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.Flatten,
    keras.layers.Reshape,
)

NORMALIZATIONS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
)


@dataclasses.dataclass
class Op:
    """One layer call of the Keras model: the layer, where its input comes
    from (`-1` the model's input, `j` op `j`; a list for a list call) and
    the shape of its output."""

    layer: keras.layers.Layer
    source: object
    shape: tuple

    @property
    def sources(self):
        return self.source if isinstance(self.source, list) else [self.source]


@dataclasses.dataclass
class ConversionReport:
    """What `from_keras` made: `blocks` (per block its name, its layers'
    names, the layer its `features` come from, `width` and `feature_map`),
    `output` (the output layer's source and what was dropped after it),
    `swaps` (`(block, layer, former class, new class)` for every layer the
    rule had replaced) and the rule. `str(report)` is a table."""

    rule: str
    blocks: list
    output: dict
    swaps: list

    def __str__(self):
        lines = [f"from_keras: rule {self.rule}"]
        lines.append(f"{'block':<10} {'width':>6} {'maps':>5}  {'features':<16} layers")
        for block in self.blocks:
            lines.append(
                f"{block['name']:<10} {str(block['width']):>6} "
                f"{'yes' if block['feature_map'] else 'no':>5}  {block['features']:<16} "
                + ", ".join(block["layers"])
            )
        output = self.output
        dropped = f"; dropped: {', '.join(output['dropped'])}" if output["dropped"] else ""
        lines.append(
            f"output     {output['units']:>6}        {output['layer']} -> "
            f"PredictionHead{_feedback_note(output['feedback'])}{dropped}"
        )
        for block, layer, former, new in self.swaps:
            lines.append(f"swap       {block}/{layer}: {former} -> {new}")
        return "\n".join(lines)


def _feedback_note(feedback):
    return "" if feedback is None else f" (feedback={feedback})"


def from_keras(
    model,
    rule="predsim",
    split="auto",
    rule_options=None,
    *,
    learning_rate=5e-4,
    optimizer="adam",
    verbose=0,
    name=None,
    **build_options,
):
    """A compiled `LocalModel` made from a Keras model, with its weights.

    The model must be a built Sequential or functional model with one input
    and one output whose layers form a chain (nested models are inlined);
    residual blocks (a branch and a shortcut merged by `Add`, ...) are
    allowed inside it, always kept whole in one block. Its last layer is a `Dense`
    (linear or softmax, optionally followed by a softmax layer): it becomes
    the `LocalModel`'s output layer (a `PredictionHead` that returns
    logits; a softmax is dropped and reported). Every layer before it is
    copied, weights included, into `KerasBlock`s; the original model is not
    changed.

    Blocks (`split`):

    - `"auto"`: a block ends after each nonlinearity (an activation layer,
      or a Dense/convolution with a nonlinear `activation`) that follows a
      Dense or convolution since the previous block, and after each
      residual unit (with the nonlinearity right after its merge, if any);
      the normalization, dropout, pooling, flatten and reshape layers right
      after join the block (a frozen Dense or convolution counts too).
      Layers left before the output layer form a block of their own if they
      have weights, else join the last block.
    - a list of layer names: a block ends after each named layer.

    Each block's `features` (what the rule's heads read) are the output of
    its last layer before trailing dropout, pooling and reshaping layers and
    normalizations after its nonlinearity, as in the zoo's blocks;
    `outputs` (what the next block reads) are the output of its last layer.

    The rule asks each block, through the block contract, for what it
    needs (`request_feedback`: every `Dense` and `Conv2D` is swapped for a
    feedback-alignment layer with its weights copied; see `KerasBlock`).
    Rules without an output layer (`associated`) raise a `ValueError`.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model`.
        rule: a rule name, `Rule` instance or serialised rule.
        split: `"auto"` or a list of layer names.
        rule_options: the rule's parameters, e.g. `{"beta": 0.9}`.
        learning_rate, optimizer: as the zoo builders' (`BuildOptions`).
        verbose: 1 prints the report.
        name: the `LocalModel`'s name (default: the Keras model's).
        **build_options: `weight_decay`, `momentum`, `nesterov`,
            `augmentation` (see `keras_local.zoo.options.BuildOptions`).

    Returns:
        `(local_model, report)`: the compiled `LocalModel` and a
        `ConversionReport` (`print(report)` shows the blocks, the output
        layer and every swap).

    Raises:
        ValueError: for a model that is not a chain (a branch crossing a
            cut, a shared layer, several inputs or outputs), a last layer
            that is not a Dense, an unknown split name, or a rule that cannot
            apply to the model; the message names the layer or the rule.
    """
    from keras_local.zoo.options import BuildOptions
    from keras_local.zoo.options import build_model

    unknown = sorted(set(build_options) - {"weight_decay", "momentum", "nesterov", "augmentation"})
    if unknown:
        raise ValueError(f"from_keras does not take {', '.join(unknown)}.")
    rule = rules_lib.get(rule, **(rule_options or {}))
    input_shape, ops = model_graph(model)
    ops, output, dropped = _split_output(ops)
    if not rule.has_output_layer:
        raise ValueError(
            f"Rule {rule.name!r} has no output layer (it predicts from its last "
            f"objective), so the Keras model's output layer {output.layer.name!r} cannot "
            "be kept; from_keras needs a rule with an output layer."
        )
    cuts = auto_cuts(ops) if split == "auto" else named_cuts(ops, split)
    blocks, originals = _make_blocks(ops, cuts)
    options = BuildOptions(
        rule=rule,
        num_classes=output.layer.units,
        input_shape=tuple(input_shape[1:]),
        learning_rate=learning_rate,
        optimizer=optimizer,
        name=name or model.name,
        **build_options,
    )
    local = build_model(blocks, options)
    _copy_all_weights(local, originals, output.layer)
    report = _report(rule, blocks, output, dropped, local)
    if verbose:
        print(report)
    return local, report


def _copy_all_weights(local, originals, output_layer):
    """The Keras model's weights into the built `LocalModel`: each block's
    layers from the originals, the output layer from the last Dense."""
    for block, layers in zip(local.hidden_blocks, originals):
        for target, source in zip(block.wrapped_layers, layers):
            copy_weights(source, target)
    # Copies (NumPy), never the source's own arrays: JAX may donate them.
    head = local.output_layer.dense
    head.kernel.assign(keras.ops.convert_to_numpy(output_layer.kernel))
    if output_layer.use_bias:
        head.bias.assign(keras.ops.convert_to_numpy(output_layer.bias))
    else:
        head.bias.assign(keras.ops.zeros_like(head.bias))


# ------------------------------------------------------------------- graph
def model_graph(model):
    """`(input_shape, ops)`: the layer calls of a built Sequential or
    functional model in an order where each op comes after its inputs."""
    if isinstance(model, keras.Sequential):
        seen = {}
        for layer in model.layers:
            seen[id(layer)] = seen.get(id(layer), 0) + 1
            if seen[id(layer)] > 1:
                raise _shared_error(layer, seen[id(layer)])
        if not model.built or getattr(model, "_functional", None) is None:
            raise ValueError(
                f"{model.name} is not built: give it an input shape "
                "(keras.Input(...) first, or model.build((None, ...)))."
            )
        model = model._functional
    if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
        raise ValueError(
            f"from_keras takes a Sequential or functional keras.Model; got {type(model).__name__}."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"from_keras needs one input and one output; {model.name} has "
            f"{len(model.inputs)} and {len(model.outputs)}."
        )
    ops, calls = [], {}
    _inline(model, -1, ops, calls)
    return tuple(model.inputs[0].shape), ops


def _inner_graph(model):
    """The functional graph of a nested model (a built Sequential's own),
    or `None` where it has none to inline."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    if graph is None or not getattr(graph, "outputs", None):
        return None
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return None
    return graph


def _inline(model, source, ops, calls):
    """Appends the layer calls of the functional `model` to `ops`, its input
    read from op `source`; a nested model's layers are inlined in its place
    (so that its Dense and Conv2D are the chain's own). The index of the op
    computing the model's output."""
    source_tensor, index = model.inputs[0], {}

    def visit(tensor):
        if tensor is source_tensor:
            return source
        history = tensor._keras_history
        node = history.operation._inbound_nodes[history.node_index]
        if id(node) in index:
            return index[id(node)]
        layer = history.operation
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"{layer.name} ({type(layer).__name__}) is a keras.ops operation, not a "
                "layer: use a layer (e.g. keras.layers.Add) so that the block can be saved."
            )
        if isinstance(layer, keras.layers.InputLayer):
            raise ValueError(f"{model.name} has an input other than its own: {layer.name}.")
        args = node.arguments.args
        if len(args) != 1 or set(node.arguments.kwargs) - {"training", "mask"}:
            raise ValueError(f"{layer.name} is called with arguments from_keras cannot copy.")
        arg = args[0]
        sources = [visit(t) for t in arg] if isinstance(arg, (list, tuple)) else visit(arg)
        calls[id(layer)] = calls.get(id(layer), 0) + 1
        if calls[id(layer)] > 1:
            raise _shared_error(layer, calls[id(layer)])
        if isinstance(layer, keras.Model):
            inner = _inner_graph(layer)
            if inner is None or isinstance(sources, list):
                raise ValueError(
                    f"{layer.name} ({type(layer).__name__}) is a nested model from_keras "
                    "cannot inline (one built input and one output needed): nested models "
                    "of that kind are not supported; flatten it into the outer model."
                )
            index[id(node)] = _inline(inner, sources, ops, calls)
            return index[id(node)]
        index[id(node)] = len(ops)
        ops.append(Op(layer, sources, tuple(node.output_tensors[0].shape)))
        return index[id(node)]

    return visit(model.outputs[0])


def _shared_error(layer, count):
    return ValueError(
        f"Layer {layer.name!r} is used {count} times (shared weights): from_keras puts "
        "each layer in one block and cannot keep weights shared between calls."
    )


def _split_output(ops):
    """`(hidden ops, output op, dropped)`: the last Dense, and the softmax
    after it that the LocalModel (which returns logits) leaves out."""
    dropped = []
    last = ops[-1]
    if isinstance(last.layer, (keras.layers.Softmax, keras.layers.Activation)) and (
        _activation_name(last.layer) == "softmax"
    ):
        dropped.append(f"{last.layer.name} (softmax)")
        ops = ops[:-1]
        last = ops[-1] if ops else None
    if last is None or type(last.layer) is not keras.layers.Dense:
        found = "nothing" if last is None else f"{last.layer.name} ({type(last.layer).__name__})"
        raise ValueError(
            f"The model's last layer must be a Dense (the output layer); found {found}."
        )
    activation = _activation_name(last.layer)
    if activation == "softmax":
        dropped.append(f"{last.layer.name}'s softmax")
    elif activation != "linear":
        raise ValueError(
            f"The output layer {last.layer.name} has activation {activation!r}; "
            "from_keras takes a linear or softmax output layer."
        )
    if len(ops) < 2:
        raise ValueError(
            f"The model is its output layer {last.layer.name} alone: from_keras needs at "
            "least one hidden layer before the output Dense (the rule trains blocks of "
            "hidden layers)."
        )
    if last.source != len(ops) - 2:
        raise ValueError(
            f"The output layer {last.layer.name} must follow the hidden layers of a chain."
        )
    rank = len(ops[last.source].shape)
    if rank != 2:
        raise ValueError(
            f"The output layer {last.layer.name} reads inputs of rank {rank}; "
            "flatten (or pool) before it."
        )
    return ops[:-1], last, dropped


def _activation_name(layer):
    """The name of a layer's nonlinearity ("linear" for none)."""
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, (keras.layers.ReLU, keras.layers.ELU, keras.layers.PReLU)):
        return type(layer).__name__.lower()
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    name = getattr(activation, "__name__", None)
    return name if isinstance(name, str) else str(activation)


# -------------------------------------------------------------------- cuts
def live_after(ops):
    """For each position `p`, the ops (and `-1`, the input) whose outputs
    are still to be read after op `p`."""
    last_use = {}
    for position, op in enumerate(ops):
        for source in op.sources:
            last_use[source] = position
    last_use[len(ops) - 1] = len(ops)  # read by the output layer
    return [
        {t for t, use in last_use.items() if t <= position < use} for position in range(len(ops))
    ]


def chain_points(ops):
    """The positions after which only one tensor is live (its own output):
    where a block may end."""
    return [p for p, live in enumerate(live_after(ops)) if live == {p}]


def _is_weighted(layer):
    """Whether `layer` mixes features with weights of its own: a frozen
    `Dense` counts (its weights are only non-trainable), so it still ends
    a block with its nonlinearity."""
    return bool(layer.weights) and not isinstance(layer, NORMALIZATIONS + NONLINEARITIES)


def _is_nonlinearity(layer):
    if isinstance(layer, NONLINEARITIES):
        return _activation_name(layer) != "linear"
    return _is_weighted(layer) and _activation_name(layer) != "linear"


def auto_cuts(ops):
    """The last position of each block under `split="auto"` (see
    `from_keras`)."""
    points = chain_points(ops)
    units, start = [], 0
    for point in points:
        units.append((start, point))
        start = point + 1

    def lone(k, kind):
        return k < len(units) and units[k][0] == units[k][1] and kind(ops[units[k][0]].layer)

    cuts, weighted, k = [], False, 0
    while k < len(units):
        first, last = units[k]
        weighted = weighted or any(_is_weighted(ops[p].layer) for p in range(first, last + 1))
        ends = weighted and _is_nonlinearity(ops[last].layer)
        if first != last:  # a residual unit: the nonlinearity after it joins it
            ends = True
            if lone(k + 1, _is_nonlinearity):
                k += 1
        if ends:
            while lone(k + 1, lambda layer: isinstance(layer, TRAILING + NORMALIZATIONS)):
                k += 1
            cuts.append(units[k][1])
            weighted = False
        k += 1
    end = len(ops) - 1
    if not cuts or cuts[-1] != end:
        rest = range(cuts[-1] + 1 if cuts else 0, end + 1)
        if cuts and not any(_is_weighted(ops[p].layer) for p in rest):
            cuts[-1] = end
        else:
            cuts.append(end)
    return cuts


def named_cuts(ops, names):
    """The last position of each block when blocks end after the layers
    `names` (and the last block before the output layer)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f'split must be "auto" or a list of layer names; got {names!r}.')
    positions = {op.layer.name: p for p, op in enumerate(ops)}
    live = live_after(ops)
    cuts = []
    for name in names:
        if name not in positions:
            raise ValueError(
                f"split names {name!r}, which is not a hidden layer of the model "
                f"(its hidden layers: {', '.join(positions)})."
            )
        p = positions[name]
        if cuts and p <= cuts[-1]:
            raise ValueError(f"split must name layers in the model's order; {name!r} is out of it.")
        if live[p] != {p}:
            branches = [
                f"{'the input' if t < 0 else ops[t].layer.name} -> "
                f"{ops[max(q for q, op in enumerate(ops) if t in op.sources)].layer.name}"
                for t in sorted(live[p] - {p})
            ]
            raise ValueError(
                f"Cannot end a block after {name!r}: the branch {', '.join(branches)} "
                "crosses that cut (a residual block must stay whole in one block)."
            )
        cuts.append(p)
    if not cuts or cuts[-1] != len(ops) - 1:
        cuts.append(len(ops) - 1)
    return cuts


# ------------------------------------------------------------------ blocks
def _features_index(ops, first, last):
    """The block's last op before trailing dropout, pooling and reshaping
    ops, and before normalizations that follow its nonlinearity (a chain
    point, so `features` is the whole block's): the heads read the
    activation, as the zoo blocks' do."""

    def trailing(p):
        layer = ops[p].layer
        if isinstance(layer, NORMALIZATIONS):
            return any(_is_nonlinearity(ops[q].layer) for q in range(first, p))
        return isinstance(layer, TRAILING)

    p = last
    while p > first and trailing(p) and ops[p].source == p - 1:
        p -= 1
    return p


def _clone(layer):
    """An unbuilt copy of `layer` (its weights are copied once the model is
    built, after the rule has had the block swap what it needs)."""
    config = keras.saving.serialize_keras_object(layer)
    config.pop("build_config", None)
    config.pop("compile_config", None)
    return keras.saving.deserialize_keras_object(config)


def _make_blocks(ops, cuts):
    """`(blocks, originals)`: a `KerasBlock` of copies of each block's
    layers, and the original layers of each."""
    blocks, originals, first = [], [], 0
    for number, last in enumerate(cuts, start=1):
        inputs = []
        for p in range(first, last + 1):
            local = [s - first if s >= first else -1 for s in ops[p].sources]
            if any(s < first - 1 for s in ops[p].sources):
                raise ValueError(f"{ops[p].layer.name} reads a layer before its block's input.")
            inputs.append(local if isinstance(ops[p].source, list) else local[0])
        features = _features_index(ops, first, last)
        shape = ops[features].shape
        nonlinear = [p for p in range(first, features + 1) if _is_nonlinearity(ops[p].layer)]
        layers = [ops[p].layer for p in range(first, last + 1)]
        blocks.append(
            KerasBlock(
                [_clone(layer) for layer in layers],
                inputs=inputs,
                features_index=features - first,
                width=shape[-1],
                feature_map=len(shape) == 4,
                activation=_activation_name(ops[nonlinear[-1]].layer) if nonlinear else "linear",
                name=f"block{number}",
            )
        )
        originals.append(layers)
        first = last + 1
    return blocks, originals


def _report(rule, blocks, output, dropped, local):
    swaps = [(block.name, *swap) for block in blocks for swap in block.swaps]
    if rule.output_feedback is not None:
        head = f"PredictionHead(FeedbackAlignmentDense(feedback={rule.output_feedback!r}))"
        swaps.append(("output", output.layer.name, "Dense", head))
    return ConversionReport(
        rule=rule.name,
        blocks=[
            {
                "name": block.name,
                "layers": [layer.name for layer in block.wrapped_layers],
                "features": block.wrapped_layers[block.features_index].name,
                "width": block.width,
                "feature_map": block.feature_map,
            }
            for block in blocks
        ],
        output={
            "layer": output.layer.name,
            "units": output.layer.units,
            "feedback": rule.output_feedback,
            "dropped": dropped,
        },
        swaps=swaps,
    )
