"""Composite layers inlined: a layer built of Keras layers, as those layers.

A custom layer that holds Keras sublayers (keras-hub's
``TransformerEncoder``, a user's residual block of ``Dense``,
``MultiHeadAttention`` and ``LayerNormalization``) is one node of a
functional graph, and its computation is hidden inside it: no quantization
rule can say what to quantize there. :func:`inline_composite_layers`
replaces each such node by what its ``call`` does: ``call`` runs once on the
KerasTensors the node receives, so every sublayer call and every
``keras.ops`` call becomes a node of the outer graph. The sublayers are the
composite's own objects (weights shared, not copied), so the new graph
computes exactly what the old one did. Composites inside composites are
inlined in turn.

A layer is inlined when it holds sublayers and no quantization rule covers
it (a rule registered with
:func:`~aimet_keras.sim.register_quantization_rule` wins, so a composite
with a rule stays one node). It is left as one node, with a warning naming
it, why and the rule to register, when its ``call`` cannot be traced on
symbolic tensors (``tf.*`` functions, Python branches on tensor values,
shapes read from the batch size), when it has weights of its own (used
outside any sublayer), when a sublayer's weights do not reach the graph (a
sublayer called on constants), or when a Keras mask would be lost (one
that travels beside its input or output only at run time, as behind an
``Embedding(mask_zero=True)``: pass masks as arguments instead).

Names: a sublayer ``s`` of composite ``c`` becomes ``c_s``, and a
``keras.ops`` call in ``c``'s ``call`` ``c_add``, ``c_add_1``...: the
composite's name keeps them apart from the other composites' (the six
``TransformerEncoder`` layers of a BERT model all name their attention
``self_attention_layer``). The sublayers are renamed in place.

Training: ``call`` runs once, with the ``training`` argument the node
received (usually None). Sublayers still follow the ``training`` flag the
model is called with; a Python branch on ``training`` in the composite's
own ``call`` keeps the branch taken when it was traced (inference).
"""

from __future__ import annotations

import contextlib
import inspect
import re
import warnings

import keras

from aimet_keras.graph import prepare as prepare_lib

__all__ = ["composite_sublayers", "inline_composite_layers"]

# A composite inside a composite... deeper than any real model nests.
_MAX_DEPTH = 32


class _Opaque(Exception):
    """Why a composite layer cannot be inlined."""


def composite_sublayers(
    layer: keras.layers.Layer,
) -> list[keras.layers.Layer]:
    """The sublayers a layer holds directly, or ``[]``.

    Keras 3 has no public list of a layer's sublayers; this reads
    ``Layer._flatten_layers``, in this one place (``tests/graph`` guards it).

    Args:
        layer: a layer or ``keras.ops`` operation.

    Returns:
        The layers tracked as attributes of ``layer`` (its own, not theirs);
        ``[]`` for a model, an input layer or an operation.

    Example:

    >>> class Block(keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.fc = keras.layers.Dense(4, name="fc")
    ...     def call(self, x):
    ...         return self.fc(x)
    >>> [layer.name for layer in composite_sublayers(Block())]
    ['fc']
    """
    if not isinstance(layer, keras.layers.Layer) or isinstance(
        layer, (keras.Model, keras.layers.InputLayer)
    ):
        return []
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _descendants(layer):
    return list(layer._flatten_layers(include_self=False, recursive=True))


def _should_inline(operation):
    from aimet_keras.sim import rules as rules_lib

    # aimet_keras's own layers (a QuantizationWrapper holds the layer it
    # wraps) are simulation machinery, never user computation.
    registered = keras.saving.get_registered_name(type(operation))
    if registered.startswith("aimet_keras>"):
        return False
    return (
        bool(composite_sublayers(operation))
        and getattr(operation, "built", False)
        and not rules_lib.rule_for(operation).known
    )


def _mask(x):
    # Keras 3 has no public accessor for a tensor's mask: an attribute, or
    # for tensors that take none (TensorFlow's eager tensors) a table.
    from keras.src.backend import get_keras_mask

    return None if x is None else get_keras_mask(x)


def _set_mask(x, mask):
    from keras.src.backend import set_keras_mask

    set_keras_mask(x, mask)


def _is_tensor(x):
    return isinstance(x, keras.KerasTensor) or keras.ops.is_tensor(x)


def _fill_in_masks(layer, args, kwargs):
    """Masks ``Layer.__call__`` would pass to ``call``, added to kwargs."""
    parameters = inspect.signature(layer.call).parameters
    try:
        bound = inspect.signature(layer.call).bind(*args, **kwargs)
    except TypeError as error:
        raise _Opaque(
            f"its call() does not take these arguments: {error}"
        ) from error
    tensors = {
        name: value
        for name, value in bound.arguments.items()
        if any(_is_tensor(x) for x in keras.tree.flatten(value))
    }
    if len(tensors) == 1:
        wanted = {"mask": next(iter(tensors.values()))}
    else:
        wanted = {f"{name}_mask": value for name, value in tensors.items()}
    for name, tensor in wanted.items():
        if name in parameters and bound.arguments.get(name) is None:
            masks = keras.tree.map_structure(_mask, tensor)
            if any(m is not None for m in keras.tree.flatten(masks)):
                kwargs[name] = masks
    return kwargs


def _expects_mask(layer, args, kwargs):
    """Whether ``Layer.__call__`` would attach a mask to the outputs."""
    if not getattr(layer, "supports_masking", False):
        return False
    first = args[0] if args else next(iter(kwargs.values()), None)
    previous = kwargs.get("mask")
    if previous is None:
        previous = keras.tree.map_structure(_mask, first)
    try:
        masks = layer.compute_mask(first, previous)
    except Exception:
        return True  # unknown: do not inline what may lose a mask
    return any(m is not None for m in keras.tree.flatten(masks))


def _traced_operations(outputs, inputs):
    """The operations between ``inputs`` and ``outputs``, in graph order.

    Raises:
        _Opaque: when an output is not computed from ``inputs`` by graph
            nodes.
    """
    known = {id(x) for x in inputs}
    done, operations = set(), {}
    stack = []
    for x in keras.tree.flatten(outputs):
        if isinstance(x, keras.KerasTensor):
            stack.append((x, False))
        elif _is_tensor(x):
            raise _Opaque("its output is not computed from its inputs")
    # Depth first, each node listed after its inputs' producers.
    while stack:
        tensor, expanded = stack.pop()
        if id(tensor) in known or id(tensor) in done:
            continue
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            raise _Opaque("its output is not computed from its inputs")
        operation, node_index, _ = history
        node = operation._inbound_nodes[node_index]
        if node.is_input:
            raise _Opaque("its call() creates an input of its own")
        if expanded:
            done.add(id(tensor))
            operations.setdefault(id(operation), operation)
            continue
        stack.append((tensor, True))
        stack.extend((x, False) for x in reversed(node.input_tensors))
    return list(operations.values())


def _gist(error):
    """The sentence of an error message that says what went wrong."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    text = " ".join(text.split("Arguments received")[0].split())
    # Keras puts the layer's own error after this sentence.
    text = re.sub(r"^Exception encountered when calling [^ ]+\. ", "", text)
    return text.split(". ")[0].rstrip(".")[:200]


class _WithoutDefaults:
    """A sublayer, called with the arguments left at None dropped.

    keras-hub's CachedMultiHeadAttention takes ``cache=None`` in ``call``
    but not in ``compute_output_spec``, so a symbolic call that passes it
    fails; passing a None default and leaving it out are the same call.
    """

    def __init__(self, layer):
        self._layer = layer
        parameters = inspect.signature(layer.call).parameters
        self._defaults = {
            name for name, p in parameters.items() if p.default is None
        }

    def __call__(self, *args, **kwargs):
        kwargs = {
            key: value
            for key, value in kwargs.items()
            if value is not None or key not in self._defaults
        }
        return self._layer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._layer, name)


@contextlib.contextmanager
def _calls_without_defaults(layer):
    """Runs with ``layer``'s sublayer attributes as :class:`_WithoutDefaults`.

    Only tried when a plain trace fails: a ``call`` that checks its
    sublayers' types would see the stand-ins.
    """
    saved = {
        name: value
        for name, value in vars(layer).items()
        if isinstance(value, keras.layers.Layer)
    }
    try:
        # object.__setattr__: kept out of Keras's layer tracking.
        for name, value in saved.items():
            object.__setattr__(layer, name, _WithoutDefaults(value))
        yield
    finally:
        for name, value in saved.items():
            object.__setattr__(layer, name, value)


def _trace(layer, args, kwargs):
    """``layer.call`` on KerasTensors: outputs and the operations it ran."""

    # 1. As Layer.__call__: floats cast to the layer's compute dtype, masks
    #    filled in.
    def convert(x):
        if not isinstance(x, keras.KerasTensor):
            return x
        y = layer.dtype_policy.convert_input(
            x, layer.autocast, layer.input_dtype
        )
        if y is not x and _mask(x) is not None:
            _set_mask(y, _mask(x))
        return y

    args = keras.tree.map_structure(convert, tuple(args))
    kwargs = keras.tree.map_structure(convert, dict(kwargs))
    kwargs = _fill_in_masks(layer, args, kwargs)
    inputs = [
        x
        for x in keras.tree.flatten((args, kwargs))
        if isinstance(x, keras.KerasTensor)
    ]
    # An input's Keras mask is a tensor of the outer graph too: a sublayer
    # reading it (TransformerEncoder without padding_mask) becomes an edge.
    inputs += [_mask(x) for x in inputs if _mask(x) is not None]
    sublayers = _descendants(layer)
    own = {id(w) for w in layer.weights} - {
        id(w) for sublayer in sublayers for w in sublayer.weights
    }
    if own:
        names = [w.name for w in layer.weights if id(w) in own]
        raise _Opaque(f"it has weights of its own ({', '.join(names)})")
    # 2. The symbolic call: sublayers and keras.ops record graph nodes.
    try:
        outputs = layer.call(*args, **kwargs)
    except Exception as error:
        try:
            with _calls_without_defaults(layer):
                outputs = layer.call(*args, **kwargs)
        except Exception:
            raise _Opaque(
                "its call() cannot run on symbolic tensors "
                f"({type(error).__name__}: {_gist(error)})"
            ) from error
    operations = _traced_operations(outputs, inputs)
    if any(operation is layer for operation in operations):
        raise _Opaque("its call() calls the layer itself")
    # 3. Every weight must be read by a node of the new graph: a sublayer
    #    called on constants runs now, once, and its result would be
    #    frozen into the graph.
    reached = {id(w) for op in operations for w in getattr(op, "weights", [])}
    missed = [w.path for w in layer.weights if id(w) not in reached]
    if missed:
        raise _Opaque(
            f"weight(s) {', '.join(missed[:3])} are not used through a "
            "sublayer called on its inputs"
        )
    # 4. Keras attaches the layer's output mask after call(), at run time
    #    as at trace time; the inlined graph only has the masks its nodes
    #    attach.
    if _expects_mask(layer, args, kwargs) and any(
        isinstance(x, keras.KerasTensor) and _mask(x) is None
        for x in keras.tree.flatten(outputs)
    ):
        raise _Opaque(
            "its output carries a Keras mask that its sublayers do not "
            "compute (pass the mask as an argument, padding_mask=..., "
            "instead of mask_zero=True)"
        )
    return outputs, operations


def _base_name(name):
    # Keras numbers automatic names ("add_12"): the number depends on what
    # else the process built, so it is dropped.
    return re.sub(r"_\d+$", "", name)


class _Inliner:
    """Inlines composite layers, one level per :func:`rebuild` pass."""

    def __init__(self, model):
        self.names = {op.name for op in model.operations}
        # Layers of the graph before inlining keep their names.
        self.renamed = {id(op) for op in model.operations}
        self.opaque = {}

    def _unique(self, name):
        candidate, count = name, 0
        while candidate in self.names:
            count += 1
            candidate = f"{name}_{count}"
        self.names.add(candidate)
        return candidate

    def _rename(self, layer, operations):
        sublayers = {id(s) for s in _descendants(layer)}
        for operation in operations:
            if id(operation) in self.renamed:
                continue
            self.renamed.add(id(operation))
            if id(operation) in sublayers:
                base = f"{layer.name}_{operation.name}"
            else:
                base = f"{layer.name}_{_base_name(operation.name)}"
            operation.name = self._unique(base)

    def refuse(self, layer, reason):
        """Keeps ``layer`` whole from now on, with a warning saying why."""
        self.opaque[id(layer)] = str(reason)
        warnings.warn(
            f"Layer {layer.name!r} ({type(layer).__name__}) holds Keras "
            f"layers but cannot be inlined: {reason}. It is simulated as one "
            "layer, its output quantized and its weights left float. "
            "Register a rule with aimet_keras.sim.register_quantization_rule("
            f"{type(layer).__name__}, op_type=...), or write its call() with "
            "Keras layers and keras.ops only.",
            stacklevel=4,
        )

    def call(self, layer, args, kwargs):
        if id(layer) not in self.opaque:
            try:
                outputs, operations = _trace(layer, args, kwargs)
            except _Opaque as reason:
                self.refuse(layer, reason)
            else:
                self._rename(layer, operations)
                return outputs
        return layer(*args, **kwargs)


def _makes_masks(model):
    """Whether a layer of ``model`` (or inside one) creates Keras masks."""
    for operation in model.operations:
        if not isinstance(operation, keras.layers.Layer):
            continue
        for layer in operation._flatten_layers(include_self=True):
            if getattr(layer, "mask_zero", False) or isinstance(
                layer, keras.layers.Masking
            ):
                return True
    return False


def _run_time_masks(model):
    """``{id(KerasTensor): has a mask}`` when ``model`` runs, or None.

    Masks travel beside tensors at run time; a layer can attach one in its
    ``call`` (keras-hub's TokenAndPositionEmbedding does), which the
    symbolic graph never shows. One batch of zeros through the model shows
    which tensors carry one. None when that batch does not run.
    """
    computed = {
        id(x): keras.ops.zeros(
            [1 if d is None else d for d in x.shape], dtype=x.dtype
        )
        for x in model.inputs
    }
    masks = {}

    def call(site, args, kwargs):
        # Looked at as each tensor is made and as it is used: TensorFlow's
        # eager tensors keep masks in a table by id, which can forget one.
        values = [
            x for x in keras.tree.flatten((args, kwargs)) if _is_tensor(x)
        ]
        for tensor, value in zip(site.inputs, values):
            masks[id(tensor)] = masks.get(id(tensor)) or _has_mask(value)
        outputs = site.operation(*args, **kwargs)
        for tensor, value in zip(site.outputs, keras.tree.flatten(outputs)):
            masks[id(tensor)] = masks.get(id(tensor)) or _has_mask(value)
        return outputs

    try:
        prepare_lib.run_sites(prepare_lib.walk(model), computed, call)
    except Exception:
        return None
    return masks


def _has_mask(x):
    return _is_tensor(x) and _mask(x) is not None


def _mask_problem(site, masks):
    """Why inlining ``site`` would lose a Keras mask, or None."""
    if masks is None:
        return (
            "the model makes Keras masks (mask_zero=True), and a batch of "
            "zeros did not run to show which tensors carry them"
        )
    for tensor in site.inputs:
        if masks.get(id(tensor)) and _mask(tensor) is None:
            return (
                "its input carries a Keras mask only when the model runs "
                "(pass the mask as an argument, padding_mask=..., instead of "
                "mask_zero=True)"
            )
    if any(masks.get(id(tensor)) for tensor in site.outputs):
        return (
            "its output carries a Keras mask that its sublayers do not "
            "compute (pass the mask as an argument, padding_mask=..., "
            "instead of mask_zero=True)"
        )
    return None


def inline_composite_layers(model: keras.Model) -> keras.Model:
    """A functional model with every composite layer replaced by its layers.

    See the module docstring for which layers are inlined and how they are
    named. Layers that cannot be inlined stay as they are, with a warning.

    Args:
        model: a Functional ``keras.Model`` (see
            :func:`~aimet_keras.graph.prepare_model`, which calls this).

    Returns:
        A new Functional ``keras.Model`` computing what ``model`` computes,
        on the same layer objects; ``model`` itself when it has no
        composite layer.

    Example:

    >>> class Block(keras.layers.Layer):
    ...     def build(self, shape):
    ...         self.fc = keras.layers.Dense(shape[-1], name="fc")
    ...         self.fc.build(shape)
    ...     def call(self, x):
    ...         return keras.ops.relu(self.fc(x)) + x
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, Block(name="block")(inputs))
    >>> flat = inline_composite_layers(model)
    >>> [op.name for op in flat.operations[1:]]
    ['block_fc', 'block_relu', 'block_add']
    """
    inliner = _Inliner(model)
    for _ in range(_MAX_DEPTH):
        targets = {
            id(site.operation)
            for site in prepare_lib.walk(model)
            if id(site.operation) not in inliner.opaque
            and _should_inline(site.operation)
        }
        if not targets:
            return model
        if _makes_masks(model):
            masks = _run_time_masks(model)
            for site in prepare_lib.walk(model):
                reason = _mask_problem(site, masks)
                if id(site.operation) in targets and reason:
                    targets.discard(id(site.operation))
                    inliner.refuse(site.operation, reason)

        def replace(operation, targets=targets):
            if id(operation) not in targets:
                return operation
            return lambda *args, **kwargs: inliner.call(operation, args, kwargs)

        model = prepare_lib.rebuild(model, replace)
    raise ValueError(
        f"Model {model.name!r}: layers nest more than {_MAX_DEPTH} composite "
        "layers deep; aimet_keras stops inlining there."
    )
