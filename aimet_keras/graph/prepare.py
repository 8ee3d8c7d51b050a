"""Model preparation: any Keras model as one flat functional graph.

The simulation, the exporters and the graph rules all work on a flat
Functional model whose nodes are built-in layers, custom layers and
``keras.ops`` operations. :func:`prepare_model` makes one from what users
have:

* **Sequential** models become functional.
* **Nested models** (a model used as a layer) are inlined: their layers
  join the outer graph, so each gets its own quantizers. A name that would
  clash is prefixed with the nested model's name.
* **Shared layers** (one layer called at several places) stay shared: one
  copy is called at each place, so its weights stay tied.
* **Subclassed models** are traced: their ``call`` runs once on symbolic
  ``keras.Input`` tensors, which records every Keras layer and
  ``keras.ops`` call as a graph node. A ``call`` that uses TensorFlow
  functions directly or branches in Python on tensor values cannot be
  traced; that raises with the fix.
* **Composite layers** (a custom layer holding Keras sublayers, such as
  keras-hub's ``TransformerEncoder``) with no quantization rule are traced
  the same way, on the tensors they receive, so their sublayers and
  ``keras.ops`` calls join the graph (see :mod:`aimet_keras.graph.inline`).

Layers are copied (config, build and weights), so the caller's model keeps
its weights and structure. A model with a layer that does not rebuild from
its config (keras-hub's ViTPatchingAndEmbedding) is copied whole instead,
from the model's own config, when that works. The one side effect, for a
subclassed model or a composite layer, is the symbolic call itself, which
records nodes on its sublayers.

:func:`rebuild` re-runs a functional graph through replacement operations;
:func:`walk` lists its call sites in order. They read Keras's node
structures (``_nodes_by_depth``, ``Node.arguments``), which Keras 3 has no
public API for; ``tests/graph`` guards them.
"""

from __future__ import annotations

import dataclasses
import typing

import keras

if typing.TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Sequence

__all__ = [
    "CallSite",
    "copy_operation",
    "prepare_model",
    "rebuild",
    "run_sites",
    "walk",
]


@dataclasses.dataclass(frozen=True)
class CallSite:
    """One call of an operation in a functional graph.

    Attributes:
        operation: the layer or ``keras.ops`` operation called.
        inputs: the KerasTensors passed in, flattened in argument order.
        outputs: the KerasTensors it returned, flattened.
        node: Keras's node, for filling in arguments.
    """

    operation: object
    inputs: tuple
    outputs: tuple
    node: object


def _is_functional(model):
    return hasattr(model, "_nodes_by_depth") and not isinstance(
        model, keras.Sequential
    )


def walk(model: keras.Model) -> list[CallSite]:
    """The call sites of a functional model, producers before consumers.

    Args:
        model: a Functional ``keras.Model`` (see :func:`prepare_model`).

    Returns:
        A list of :class:`CallSite`, input layers left out.

    Example:

    >>> inputs = keras.Input((4,))
    >>> outputs = keras.layers.Dense(2, name="fc")(inputs)
    >>> [site.operation.name for site in walk(keras.Model(inputs, outputs))]
    ['fc']
    """
    if not _is_functional(model):
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) is not a "
            "functional graph; call aimet_keras.graph.prepare_model first."
        )
    sites = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            sites.append(
                CallSite(
                    node.operation,
                    tuple(node.input_tensors),
                    tuple(keras.tree.flatten(node.outputs)),
                    node,
                )
            )
    return sites


def _fresh_inputs(model):
    return [
        keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name)
        for t in model.inputs
    ]


def run_sites(
    sites: Sequence[CallSite],
    computed: dict[int, object],
    call: Callable[[CallSite, tuple, dict], object] | None = None,
) -> dict[int, object]:
    """Runs call sites on known values, adding their outputs to ``computed``.

    Args:
        sites: :class:`CallSite` s in graph order (a part of :func:`walk`).
        computed: ``{id(KerasTensor): value}`` holding the sites' inputs;
            updated in place.
        call: ``call(site, args, kwargs)`` runs one site. Defaults to
            calling the site's operation.

    Returns:
        ``computed``. Sites whose inputs are not all known are skipped.

    Example:

    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(3, name="fc")(inputs)
    >>> model = keras.Model(inputs, keras.layers.ReLU()(hidden))
    >>> values = run_sites(walk(model)[:1], {id(inputs): np.ones((2, 4))})
    >>> tuple(values[id(hidden)].shape)
    (2, 3)
    """
    for site in sites:
        if any(id(x) not in computed for x in site.inputs):
            continue  # not on a path from the given values
        args, kwargs = site.node.arguments.fill_in(computed)
        if call is None:
            outputs = site.operation(*args, **kwargs)
        else:
            outputs = call(site, args, kwargs)
        for x, y in zip(site.outputs, keras.tree.flatten(outputs)):
            computed[id(x)] = y
    return computed


def _run_sites(model, inputs, call):
    """Runs ``model``'s graph on ``inputs``; ``call(site, args, kwargs)``."""
    computed = {id(x): y for x, y in zip(model.inputs, inputs)}
    run_sites(walk(model), computed, call)
    flat = [computed[id(x)] for x in keras.tree.flatten(model.outputs)]
    return keras.tree.pack_sequence_as(model._outputs_struct, flat)


def rebuild(
    model: keras.Model,
    replace: Callable[[keras.Operation], Callable[..., object]],
) -> keras.Model:
    """A new functional model with each operation swapped for another.

    ``replace(operation)`` is called once per distinct operation (so a
    shared layer's replacement is shared too) and must return a callable
    taking the same arguments.

    Args:
        model: a Functional ``keras.Model``.
        replace: ``operation -> callable``.

    Returns:
        A new ``keras.Model`` with fresh inputs of the same names and shapes.

    Example:

    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    >>> copy = rebuild(model, copy_operation)
    >>> copy.get_layer("fc") is model.get_layer("fc")
    False
    """
    replacements = {}

    def call(site, args, kwargs):
        key = id(site.operation)
        if key not in replacements:
            replacements[key] = replace(site.operation)
        return replacements[key](*args, **kwargs)

    inputs = _fresh_inputs(model)
    outputs = _run_sites(model, inputs, call)
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name
    )


class _CopyError(ValueError):
    """A layer that does not rebuild from its config."""


# Keyword arguments keras.layers.Layer itself takes.
_LAYER_KEYWORDS = frozenset(
    (
        "activity_regularizer",
        "autocast",
        "batch_input_shape",
        "batch_size",
        "dtype",
        "input_dim",
        "input_shape",
        "name",
        "trainable",
    )
)


def _constructor_keys(cls, config):
    """``config`` less the keys ``cls.__init__`` does not name, or None
    when it names them all (nothing to drop) or cannot be inspected."""
    import inspect

    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return None
    named = {
        name
        for name, p in parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    kept = {
        key: value
        for key, value in config.items()
        if key in named or key in _LAYER_KEYWORDS
    }
    return kept if len(kept) < len(config) else None


def copy_operation(
    operation: keras.Operation, name: str | None = None
) -> keras.Operation:
    """A copy of a layer or ``keras.ops`` operation, with its weights.

    Args:
        operation: a built layer or an operation.
        name: a new name. Defaults to the operation's own.

    Returns:
        The copy, built and holding equal weights.

    Raises:
        ValueError: when the layer cannot be rebuilt from its config, naming
            it and the fix.

    Example:

    >>> dense = keras.layers.Dense(2, name="fc")
    >>> dense.build((None, 3))
    >>> copy = copy_operation(dense)
    >>> bool(np.all(copy.kernel.numpy() == dense.kernel.numpy()))
    True
    """
    config = operation.get_config()
    if name is not None:
        config = dict(config, name=name)
    try:
        try:
            copy = operation.__class__.from_config(config)
        except (TypeError, ValueError):
            # A config with keys its constructor does not take (keras-hub's
            # ViTPatchingAndEmbedding saves derived sizes): built from the
            # others, or the first error stands.
            accepted = _constructor_keys(operation.__class__, config)
            if accepted is None:
                raise
            copy = operation.__class__.from_config(accepted)
        if isinstance(operation, keras.layers.Layer):
            if operation.built:
                build_config = operation.get_build_config()
                if build_config:
                    copy.build_from_config(build_config)
            copy.set_weights(operation.get_weights())
    except Exception as error:
        raise _CopyError(
            f"Layer {operation.name!r} ({type(operation).__name__}) could not "
            f"be copied from its config: {type(error).__name__}: {error}. "
            "Give the class a get_config() that returns every constructor "
            "argument (and build() that creates its weights), as Keras "
            "custom layers need for saving too."
        ) from error
    return copy


def _build_default_shape(model):
    """The default input shape of a ``build(self, input_shape=...)``.

    A model built by ``model.build()`` with no argument (mtcnn's RNet and
    ONet build their layers from a default shape) records no shape; its
    build method's default is the shape it was built for.
    """
    import inspect

    if not model.built:
        return None
    try:
        parameters = list(inspect.signature(model.build).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters or parameters[0].default is inspect.Parameter.empty:
        return None
    default = parameters[0].default
    return default if isinstance(default, (list, tuple)) else None


def _input_shapes(model, input_shape):
    if input_shape is not None:
        shapes = input_shape
    else:
        build_config = model.get_build_config() or {}
        shapes = build_config.get("input_shape")
        if shapes is None:
            shapes = _build_default_shape(model)
        if shapes is None:
            raise ValueError(
                f"Model {model.name!r} ({type(model).__name__}) is not built, "
                "so its input shape is unknown: call it on a batch first, or "
                "pass input_shape (with the batch dimension, e.g. "
                "(None, 28, 28, 1))."
            )
    if isinstance(shapes, dict):
        raise ValueError(
            f"Model {model.name!r} takes a dict of inputs; prepare_model "
            "traces subclassed models with positional inputs only. Build it "
            "as a functional model instead."
        )
    nested = (
        isinstance(shapes, (list, tuple))
        and shapes
        and isinstance(shapes[0], (list, tuple))
    )
    return [tuple(s) for s in shapes] if nested else [tuple(shapes)]


def _trace_subclassed(model, input_shape):
    shapes = _input_shapes(model, input_shape)
    inputs = [
        keras.Input(batch_shape=s, name="input" if len(shapes) == 1 else None)
        for s in shapes
    ]
    try:
        outputs = model.call(inputs[0] if len(inputs) == 1 else inputs)
        traced = keras.Model(inputs, outputs, name=model.name)
    except Exception as error:
        raise ValueError(
            f"Subclassed model {model.name!r} ({type(model).__name__}) could "
            "not be traced into a functional graph "
            f"({type(error).__name__}: {error}). aimet_keras runs its call() "
            "once on symbolic inputs: call() must use Keras layers and "
            "keras.ops only (no tf.* functions, no Python branches on tensor "
            "values). Rewrite those parts with keras.ops, or build the model "
            "with the functional API."
        ) from error
    return traced


def _sequential_as_functional(model):
    if getattr(model, "_functional", None) is None:
        raise ValueError(
            f"Sequential model {model.name!r} is not built; start it with "
            "keras.Input(shape) or call it on a batch first."
        )
    # A built Sequential model keeps its graph as a functional model.
    return model._functional


def _as_functional(model, input_shape=None):
    if isinstance(model, keras.Sequential):
        return _sequential_as_functional(model)
    if _is_functional(model):
        return model
    return _trace_subclassed(model, input_shape)


def prepare_model(
    model: keras.Model,
    input_shape: tuple[int | None, ...]
    | list[tuple[int | None, ...]]
    | None = None,
    copy: bool = True,
    inline_layers: bool = True,
) -> keras.Model:
    """Returns ``model`` as one flat functional model of copied layers.

    Args:
        model: a built ``keras.Model``: Functional, Sequential, nested or
            subclassed.
        input_shape: for a subclassed model that was never built, its input
            shape with the batch dimension (a list of shapes for several
            inputs). Defaults to None.
        copy: copy the layers (True, the default) or use the caller's own
            layer objects, so the new model shares their weights (the
            sublayers of inlined composite layers are then renamed in
            place).
        inline_layers: replace composite layers (custom layers holding Keras
            layers, with no quantization rule) by their sublayers, with
            :func:`~aimet_keras.graph.inline_composite_layers`. Defaults to
            True.

    Returns:
        A new Functional ``keras.Model`` computing what ``model`` computes,
        with no nested models, whose layers are copies (or, with
        ``copy=False``, the caller's layers).

    Raises:
        TypeError: when ``model`` is not a ``keras.Model``.
        ValueError: for an unbuilt model or a subclassed model that cannot
            be traced, naming it and the fix.

    Example:

    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> inputs = keras.Input((4,))
    >>> outer = keras.Model(inputs, keras.layers.ReLU()(inner(inputs)))
    >>> flat = prepare_model(outer)
    >>> [type(layer).__name__ for layer in flat.layers]
    ['InputLayer', 'Dense', 'ReLU']
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model; got {type(model).__name__}."
        )
    try:
        return _prepare(model, input_shape, copy, inline_layers)
    except _CopyError:
        if not copy:
            raise
        # keras-hub's models rebuild from their own config, though some of
        # their layers do not (ViTPatchingAndEmbedding's config holds
        # arguments its constructor refuses): a clone of the whole model is
        # then the copy, and its layers are ours to use.
        clone = _clone_from_config(model)
        if clone is None:
            raise
        return _prepare(clone, input_shape, "owned", inline_layers)


def _clone_from_config(model):
    """A copy of ``model`` built from its config, with its weights, or None."""
    try:
        clone = type(model).from_config(model.get_config())
        clone.set_weights(model.get_weights())
    except Exception:
        return None
    return clone


# Weightless Keras layers that compute the same output from the same input
# every time: two calls of equal ones on one tensor are one computation.
_PURE_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.UpSampling2D,
)


def _repeated_call_key(operation, args, kwargs):
    """What identifies a call of a pure layer, or None for other calls.

    The TFLite converter merges equal operations on the same tensor
    (NASNet applies two ReLUs to its stem's output): merged here too, the
    convolution before them has one consumer and fuses its activation as
    the converter does, instead of being rounded on a grid of its own.
    """
    if type(operation) not in _PURE_LAYERS or operation.weights:
        return None
    config = dict(operation.get_config())
    config.pop("name", None)
    arguments = keras.tree.map_structure(
        lambda x: ("tensor", id(x)) if isinstance(x, keras.KerasTensor) else x,
        (args, kwargs),
    )
    return repr((type(operation), sorted(config.items()), arguments))


def _prepare(model, input_shape, copy, inline_layers):
    """:func:`prepare_model`; ``copy="owned"`` uses (and may rename) the
    model's own layers."""
    functional = _as_functional(model, input_shape)
    copies = {}
    # The outer model's names win; a nested layer whose name is taken gets
    # its model's name as a prefix.
    names = {
        x.name for x in functional.operations if not isinstance(x, keras.Model)
    }

    def copy_of(operation, prefix):
        if id(operation) not in copies:
            name = operation.name
            if prefix and name in names:
                name = f"{prefix}_{name}"
                while name in names:
                    name = f"{name}_copy"
            names.add(name)
            if copy == "owned":
                operation.name = name
            elif not copy and name != operation.name:
                raise ValueError(
                    f"Layer {operation.name!r} of nested model {prefix!r} "
                    "has the name of another layer; with copy=False (the "
                    "sim's in_place=True) it cannot be renamed. Rename it."
                )
            copies[id(operation)] = (
                copy_operation(operation, name) if copy is True else operation
            )
        return copies[id(operation)]

    computed_once = {}

    def inline(graph, inputs, prefix):
        def call(site, args, kwargs):
            operation = site.operation
            if isinstance(operation, keras.Model):
                inner = _as_functional(operation)
                tensors = [
                    x
                    for x in keras.tree.flatten((args, kwargs))
                    if isinstance(x, keras.KerasTensor)
                ]
                return inline(inner, tensors, operation.name)
            key = _repeated_call_key(operation, args, kwargs)
            if key is not None and key in computed_once:
                return computed_once[key]
            outputs = copy_of(operation, prefix)(*args, **kwargs)
            if key is not None:
                computed_once[key] = outputs
            return outputs

        return _run_sites(graph, inputs, call)

    inputs = _fresh_inputs(functional)
    outputs = inline(functional, inputs, "")
    flat = keras.Model(
        inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name
    )
    if inline_layers:
        # Imported here: aimet_keras.graph.inline builds on this module.
        from aimet_keras.graph import inline as inline_lib

        flat = inline_lib.inline_composite_layers(flat)
    return flat


def _split_separable(layer):
    """``(depthwise, pointwise)`` layers computing a SeparableConv2D."""
    depthwise = keras.layers.DepthwiseConv2D(
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        depth_multiplier=layer.depth_multiplier,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
        use_bias=False,
        name=f"{layer.name}_depthwise",
    )
    pointwise = keras.layers.Conv2D(
        layer.filters,
        1,
        data_format=layer.data_format,
        activation=layer.activation,
        use_bias=layer.use_bias,
        name=layer.name,
    )
    shape = layer.input.shape
    depthwise.build(shape)
    depthwise.kernel.assign(layer.depthwise_kernel)
    pointwise.build(depthwise.compute_output_shape(shape))
    pointwise.kernel.assign(layer.pointwise_kernel)
    if layer.use_bias:
        pointwise.bias.assign(layer.bias)
    return depthwise, pointwise


def split_separable_convolutions(model):
    """A copy of ``model`` with each SeparableConv2D as two layers.

    A SeparableConv2D ``L`` becomes DepthwiseConv2D ``L_depthwise`` then a
    1x1 Conv2D ``L`` (with L's bias and activation): the same computation,
    but the tensor between them is a layer output the sim quantizes, as
    integer runtimes (TFLite, QNN) hold it in int8.

    Args:
        model: any model :func:`prepare_model` takes.

    Returns:
        A new functional ``keras.Model``; the caller's model is unchanged.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> outputs = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    >>> split = split_separable_convolutions(keras.Model(inputs, outputs))
    >>> [layer.name for layer in split.layers[1:]]
    ['sep_depthwise', 'sep']
    """
    prepared = prepare_model(model)

    def replace(operation):
        if type(operation).__name__ != "SeparableConv2D":
            return operation
        depthwise, pointwise = _split_separable(operation)
        return lambda x, **kwargs: pointwise(depthwise(x))

    return rebuild(prepared, replace)


# Activations integer runtimes fuse into the layer before them (TFLite's
# fused activation functions; QNN's Conv+ReLU): any other runs as an op of
# its own, on an integer tensor between the two.
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")


def unfused_activation(layer):
    """The name of a kernel layer's built-in activation no runtime fuses.

    Args:
        layer: a layer.

    Returns:
        ``"softmax"``, ``"sigmoid"``... for a Conv/Dense-type layer (see
        ``KERNEL_LAYERS``) whose ``activation`` is not linear, ReLU or
        ReLU6; None otherwise.

    Example:

    >>> unfused_activation(keras.layers.Dense(2, activation="softmax"))
    'softmax'
    >>> unfused_activation(keras.layers.Dense(2, activation="relu")) is None
    True
    """
    from aimet_keras.sim import op_types

    if type(layer).__name__ not in (*op_types.KERNEL_LAYERS, "EinsumDense"):
        return None
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if activation is None or name in FUSED_ACTIVATIONS:
        return None
    return name or type(activation).__name__


def split_activations(model):
    """A copy of ``model`` with unfused activations as layers of their own.

    A kernel layer ``L`` whose built-in activation integer runtimes do not
    fuse (``Dense(10, activation="softmax")``, a sigmoid or swish
    convolution) becomes ``L`` without activation, then an ``Activation``
    layer ``L_activation``: the same computation, but the tensor between
    them is a layer output the sim quantizes, as TFLite and QNN hold it in
    int8. Linear, ReLU and ReLU6 activations stay fused.

    Args:
        model: any model :func:`prepare_model` takes.

    Returns:
        A new functional ``keras.Model``; the caller's model is unchanged.

    Example:

    >>> inputs = keras.Input((4,))
    >>> outputs = keras.layers.Dense(3, activation="softmax", name="fc")(inputs)
    >>> split = split_activations(keras.Model(inputs, outputs))
    >>> [layer.name for layer in split.layers[1:]]
    ['fc', 'fc_activation']
    """
    # prepare_model copies every layer: the copies' activations are ours
    # to change.
    prepared = prepare_model(model)

    def replace(operation):
        name = unfused_activation(operation)
        if name is None:
            return operation
        activation = keras.layers.Activation(
            operation.activation, name=f"{operation.name}_activation"
        )
        operation.activation = keras.activations.get("linear")
        return lambda *args, **kwargs: activation(operation(*args, **kwargs))

    return rebuild(prepared, replace)
