"""Tensors inside a layer that the simulation can quantize.

Six layers have them: ``MultiHeadAttention`` (its matmuls and softmax, see
:mod:`aimet_keras.sim.attention`), ``LayerNormalization`` run as the
integer ops a target computes it with (see
:mod:`aimet_keras.sim.layer_norm`), an ``Add`` of three or more inputs,
whose partial sums (see :func:`partial_sums`) a target with two-input adds
(TFLite's ADD) writes on grids of their own, the swish and hard sigmoid
activations, which TFLite runs as two ops each (see
:func:`activation_tensors`), and keras-hub's ViT patch embedding (see
:func:`patch_embedding_tensors`). The wrapper quantizes them,
the exporter names them, both through :func:`internal_hooks`.
"""

from __future__ import annotations

import contextlib
import typing

import keras

from aimet_keras.sim import attention as attention_lib
from aimet_keras.sim import layer_norm as layer_norm_lib

if typing.TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

__all__ = [
    "activation_tensors",
    "internal_hooks",
    "internal_tensors",
    "partial_sums",
    "patch_embedding_tensors",
]


def partial_sums(
    layer: keras.layers.Layer, count: int | None = None
) -> tuple[str, ...]:
    """The names of an ``Add``'s partial sums: ``("sum_2", ...)``, or ().

    An ``Add`` of ``n`` inputs runs as ``n - 1`` two-input adds; all but
    the last write a partial sum (``sum_k``: the first ``k`` inputs) that
    the layer's output quantizer never sees. BERT's embeddings add the
    token, position and segment embeddings in one ``Add``.

    Args:
        layer: a layer; only ``keras.layers.Add`` has partial sums.
        count: its number of inputs; defaults to the count it was built
            with.

    Example:

    >>> add = keras.layers.Add()
    >>> partial_sums(add, 4)
    ('sum_2', 'sum_3')
    >>> partial_sums(add, 2)
    ()
    """
    if type(layer) is not keras.layers.Add:
        return ()
    if count is None:
        shapes = (getattr(layer, "_build_shapes_dict", None) or {}).get(
            "input_shape"
        )
        count = len(shapes) if isinstance(shapes, (list, tuple)) else 0
    return tuple(f"sum_{k}" for k in range(2, count))


def _swish(x, hook):
    return keras.ops.multiply(x, hook("sigmoid", keras.ops.sigmoid(x)))


def _hard_sigmoid(x, hook):
    shifted = keras.ops.relu6(keras.ops.add(x, 3.0))
    return keras.ops.divide(hook("shifted", shifted), 6.0)


# Activations TFLite has no op for, as the int8 ops it runs them with:
# function -> (inner tensor, op type whose output settings give its grid,
# the decomposition). swish: LOGISTIC (fixed 1/256 grid) then MUL;
# hard_sigmoid: ADD with a fused RELU6, then MUL by 1/6.
_DECOMPOSED_ACTIVATIONS = {
    keras.activations.silu: ("sigmoid", "Sigmoid", _swish),
    keras.activations.hard_sigmoid: ("shifted", "Relu", _hard_sigmoid),
}


def activation_tensors(layer: keras.layers.Layer) -> tuple[str, ...]:
    """The inner tensor of a decomposed ``Activation`` layer, or ().

    TFLite has no swish op: ``x * sigmoid(x)`` runs as LOGISTIC, whose int8
    output is fixed at steps of 1/256, then MUL (inner tensor
    ``"sigmoid"``). Nor a hard sigmoid: ``relu6(x + 3) / 6`` runs as an
    ADD with a fused RELU6, then a MUL (inner tensor ``"shifted"``).

    Example:

    >>> activation_tensors(keras.layers.Activation("swish"))
    ('sigmoid',)
    >>> activation_tensors(keras.layers.Activation("hard_sigmoid"))
    ('shifted',)
    >>> activation_tensors(keras.layers.Activation("relu"))
    ()
    """
    entry = _decomposition(layer)
    return (entry[0],) if entry else ()


def activation_grid_op_type(layer):
    """The op type whose output settings give the inner tensor's grid."""
    return _decomposition(layer)[1]


def _decomposition(layer):
    if type(layer) is not keras.layers.Activation:
        return None
    return _DECOMPOSED_ACTIVATIONS.get(getattr(layer, "activation", None))


@contextlib.contextmanager
def _activation_hooks(layer, hook):
    decomposed = _decomposition(layer)[2]
    # Activation.call applies self.activation: replaced while in the
    # context by a plain instance attribute.
    original = layer.activation
    object.__setattr__(layer, "activation", lambda x: decomposed(x, hook))
    try:
        yield
    finally:
        object.__setattr__(layer, "activation", original)


@contextlib.contextmanager
def _partial_sum_hooks(layer, hook):
    def merge(inputs):
        # Keras's own order (inputs[0] + inputs[1] + ...): with the hook
        # passing tensors through, the same values.
        total = inputs[0]
        for k, x in enumerate(inputs[1:], start=2):
            total = keras.ops.add(total, x)
            if k < len(inputs):
                total = hook(f"sum_{k}", total)
        return total

    # Merge.call aligns ranks, then calls _merge_function: only the sum is
    # replaced. A plain instance attribute, removed again on exit.
    object.__setattr__(layer, "_merge_function", merge)
    try:
        yield
    finally:
        object.__delattr__(layer, "_merge_function")


def patch_embedding_tensors(layer: keras.layers.Layer) -> tuple[str, ...]:
    """``("tokens",)`` for keras-hub's ``ViTPatchingAndEmbedding``, else ().

    The layer convolves the image into patches, puts its class token in
    front and adds the position table. Flat, the patches (after the class
    token: TFLite's CONCATENATION writes them on one grid) would have a
    grid before the add; that inner tensor is ``"tokens"``.
    """
    cls = type(layer)
    is_vit = (cls.__module__, cls.__name__) == (
        "keras_hub.src.models.vit.vit_layers",
        "ViTPatchingAndEmbedding",
    )
    needed = ("patch_embedding", "position_embedding", "position_ids")
    if is_vit and all(hasattr(layer, name) for name in needed):
        return ("tokens",)
    return ()


@contextlib.contextmanager
def _patch_embedding_hooks(layer, hook):
    def call(inputs):
        # keras-hub's computation, with the hook before the add.
        ops = keras.ops
        patches = layer.patch_embedding(inputs)
        if getattr(layer, "data_format", None) == "channels_first":
            patches = ops.transpose(patches, axes=(0, 2, 3, 1))
        shape = ops.shape(patches)
        patches = ops.reshape(patches, [shape[0], -1, shape[-1]])
        positions = layer.position_embedding(layer.position_ids)
        if layer.use_class_token:
            token = ops.tile(layer.class_token, (shape[0], 1, 1))
            patches = ops.concatenate([token, patches], axis=1)
        return ops.add(hook("tokens", patches), positions)

    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        object.__delattr__(layer, "call")


def internal_tensors(layer: keras.layers.Layer) -> tuple[str, ...]:
    """The names of the inner tensors of ``layer`` a hook can see, or ().

    Example:

    >>> import keras
    >>> internal_tensors(keras.layers.LayerNormalization())[:2]
    ('mean', 'centred')
    >>> internal_tensors(keras.layers.Dense(2))
    ()
    """
    if attention_lib.has_internal_tensors(layer):
        return attention_lib.ATTENTION_TENSORS
    if layer_norm_lib.is_layer_norm(layer):
        return layer_norm_lib.LAYER_NORM_TENSORS
    return (
        partial_sums(layer)
        or activation_tensors(layer)
        or patch_embedding_tensors(layer)
    )


def internal_hooks(
    layer: keras.layers.Layer, hook: Callable[[str, object], object]
) -> AbstractContextManager[None]:
    """A context in which ``layer``'s calls pass inner tensors to ``hook``.

    Args:
        layer: a layer :func:`internal_tensors` names tensors of.
        hook: called as ``hook(name, tensor)``; returns the tensor to use.

    Example:

    >>> import keras
    >>> norm = keras.layers.LayerNormalization()
    >>> seen = []
    >>> with internal_hooks(norm, lambda n, t: seen.append(n) or t):
    ...     _ = norm(np.ones((1, 4), "float32"))
    >>> seen[-1]
    'normalized'
    """
    if layer_norm_lib.is_layer_norm(layer):
        return layer_norm_lib.layer_norm_hooks(layer, hook)
    if partial_sums(layer):
        return _partial_sum_hooks(layer, hook)
    if activation_tensors(layer):
        return _activation_hooks(layer, hook)
    if patch_embedding_tensors(layer):
        return _patch_embedding_hooks(layer, hook)
    return attention_lib.attention_hooks(layer, hook)
