"""Quantization rules: how the simulation treats a layer class.

Built-in Keras layers and ``keras.ops`` operations map to AIMET's (ONNX)
op types through :mod:`aimet_keras.sim.op_types`, and the quantsim config
says what to quantize for each op type. A custom layer the toolkit does not
know is treated as op type ``"Unknown"``: its outputs are quantized as the
config's defaults say, its weights stay float, and the simulation warns,
naming it (or raises, with ``strict=True``). To do better, register a rule:

>>> class MyConv(keras.layers.Conv2D):
...     pass
>>> register_quantization_rule(MyConv, op_type="Conv")
>>> rule_for(MyConv(4, 3)).op_type
'Conv'

A rule names the op type whose config settings apply (so ``"Conv"`` gets
conv weight quantization, per-channel axes and supergroups), the weights to
quantize (default: all but BatchNormalization-style moving statistics) and
the output-channel axis of each weight for per-channel quantization.
"""

from __future__ import annotations

import dataclasses
import typing

from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Mapping

__all__ = [
    "QuantizationRule",
    "register_quantization_rule",
    "rule_for",
    "unregister_quantization_rule",
]


@dataclasses.dataclass(frozen=True)
class QuantizationRule:
    """How the simulation quantizes one layer class.

    Attributes:
        op_type: AIMET's op type whose quantsim config settings apply
            (``"Conv"``, ``"Gemm"``, ``"Relu"``...), or ``"Unknown"``.
        weights: names of the weights to quantize, or None for every weight
            the config quantizes.
        channel_axes: ``{weight name: output-channel axis}`` for
            per-channel quantization; weights not named use the built-in
            rule (last axis). Defaults to empty.
        known: False for layers the toolkit found no rule for.
    """

    op_type: str
    weights: tuple = None
    channel_axes: dict = dataclasses.field(default_factory=dict)
    known: bool = True


_REGISTRY = {}

# Layers keras.applications defines for itself (not in keras.layers), by
# module and class name: ConvNeXt's LayerScale multiplies each channel by
# its gamma, a per-channel scale that any per-channel grid holds exactly,
# so only its output is quantized.
_APPLICATION_LAYERS = {
    ("keras.src.applications.convnext", "LayerScale"): QuantizationRule(
        "Mul", weights=()
    ),
}

# keras-hub layers that use weights of their own, so that
# aimet_keras.graph.inline cannot replace them by their sublayers (a layer
# built only of Keras layers needs no row: it is inlined).
_KERAS_HUB_LAYERS = {
    # A learned table sliced to the sequence length: a lookup, quantized
    # as Embedding is (weights, output left to the next op).
    (
        "keras_hub.src.layers.modeling.position_embedding",
        "PositionEmbedding",
    ): QuantizationRule("Gather"),
    # ViT's patch embedding: a strided Conv2D, then a class token and
    # position embeddings added; quantized as the convolution, all three
    # weights on weight grids.
    (
        "keras_hub.src.models.vit.vit_layers",
        "ViTPatchingAndEmbedding",
    ): QuantizationRule(
        "Conv",
        # Per channel only for the convolution's kernel: the class token
        # and position table are added as constants, which TFLite takes
        # per tensor only.
        channel_axes={"class_token": None, "embeddings": None},
    ),
}


def register_quantization_rule(
    layer_class: type,
    op_type: str,
    weights: Iterable[str] | None = None,
    channel_axes: Mapping[str, int | None] | None = None,
) -> None:
    """Registers how to quantize a custom layer class (and its subclasses).

    Args:
        layer_class: the layer (or ``keras.ops`` operation) class.
        op_type: AIMET's op type whose config settings apply; one of
            :data:`~aimet_keras.sim.op_types.ONNX_OP_TYPES`.
        weights: weight names to quantize; None quantizes every weight the
            config's param rules cover. Defaults to None.
        channel_axes: ``{weight name: axis}`` for per-channel quantization.
            Defaults to None (last axis).

    Raises:
        TypeError: when ``layer_class`` is not a class.
        ValueError: for an op type AIMET does not name, with close matches.

    Example:

    >>> class Scale(keras.layers.Layer):
    ...     def call(self, x):
    ...         return x * 2.0
    >>> register_quantization_rule(Scale, op_type="Mul", weights=())
    >>> rule_for(Scale()).weights
    ()
    >>> unregister_quantization_rule(Scale)
    """
    if not isinstance(layer_class, type):
        raise TypeError(
            f"layer_class must be a class; got {type(layer_class).__name__}."
        )
    if op_type not in op_types.ONNX_OP_TYPES and op_type != "Unknown":
        raise ValueError(
            f"op_type={op_type!r} for {layer_class.__name__} is not an op type "
            "aimet_keras knows (see aimet_keras.sim.op_types.ONNX_OP_TYPES)."
            + op_types.did_you_mean(op_type, op_types.ONNX_OP_TYPES)
        )
    _REGISTRY[layer_class] = QuantizationRule(
        op_type,
        None if weights is None else tuple(weights),
        dict(channel_axes or {}),
    )


def unregister_quantization_rule(layer_class: type) -> None:
    """Removes a rule registered for ``layer_class`` (no error if none)."""
    _REGISTRY.pop(layer_class, None)


def rule_for(operation: object) -> QuantizationRule:
    """The :class:`QuantizationRule` for a layer or operation.

    A layer with a ``quantization_proxy`` attribute (the layer it stands
    for) follows the proxy's rule, on its ``quantized_weight_keys``. Else a
    registered rule for the class or one of its bases wins; then the
    built-in op type table; else an ``"Unknown"`` rule with
    ``known=False``.

    Example:

    >>> rule_for(keras.layers.Dense(3)).op_type
    'Gemm'
    """
    proxy = getattr(operation, "quantization_proxy", None)
    if proxy is not None:
        # A layer standing in for another while training (a conv with its
        # batch norm folded in) is quantized as that layer, on the weights
        # it names.
        return dataclasses.replace(
            rule_for(proxy), weights=tuple(operation.quantized_weight_keys)
        )
    for cls in type(operation).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    key = (type(operation).__module__, type(operation).__name__)
    builtin = _APPLICATION_LAYERS.get(key) or _KERAS_HUB_LAYERS.get(key)
    if builtin is not None:
        return builtin
    op_type = op_types.onnx_op_type(operation)
    return QuantizationRule(op_type, known=op_type != "Unknown")
