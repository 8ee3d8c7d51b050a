"""Batch-norm folding: BatchNormalization merged into the neighbouring layer.

A BatchNormalization in inference computes ``a * x + c`` per channel with
``a = gamma / sqrt(var + eps)`` and ``c = beta - mean * a``. After a linear
layer (Conv, DepthwiseConv, SeparableConv, ConvTranspose, Dense, with no
activation of its own) it folds into that layer's weights and bias
(AIMET's backward fold)::

    W' = W * a  (per output channel)        b' = b * a + c

Before a Conv with ``"valid"`` padding or a Dense it folds forward::

    W' = W * a  (per input channel)         b' = b + sum(W * c)

(``"same"`` padding would pad the BN's output with zeros, not with ``c``, so
that fold is not exact and is not done). The result computes what the
original computes, to float rounding, with fewer layers; quantizing it then
quantizes the weights a deployed (folded) model uses.
"""

from __future__ import annotations

import typing

import keras
import numpy as np

from aimet_keras.graph import connections as connections_lib
from aimet_keras.graph import deployment as deployment_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = [
    "bn_output_stats",
    "find_bn_pairs",
    "fold_all_batch_norms",
    "fold_all_batch_norms_to_scale",
    "fold_batch_norm_pairs",
    "rebuild_sim",
]

_BACKWARD = op_types.KERNEL_LAYERS
# Layers a BN before them can fold into (and whose bias bias correction
# adjusts).
LINEAR_LAYERS = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "Dense",
)


def _kind(layer):
    return op_types.keras_class_name(layer, _BACKWARD)


def _linear(layer):
    activation = getattr(layer, "activation", None)
    return activation is None or getattr(activation, "__name__", "") == "linear"


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _bn_on_last_axis(bn):
    axis = bn.axis if isinstance(bn.axis, int) else None
    if isinstance(bn.axis, (list, tuple)) and len(bn.axis) == 1:
        axis = bn.axis[0]
    rank = len(bn.input.shape) if bn._inbound_nodes else None
    return axis == -1 or (rank is not None and axis == rank - 1)


def find_bn_pairs(model: keras.Model) -> list[tuple[str, str, str]]:
    """The foldable ``(layer, batch norm, direction)`` triples of a model.

    Args:
        model: a functional model (see
            :func:`~aimet_keras.graph.prepare_model`).

    Returns:
        A list of ``(layer name, BN name, "backward"|"forward")``; backward
        means the BN follows the layer.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> find_bn_pairs(keras.Model(inputs, x))
    [('conv', 'bn', 'backward')]
    """
    connections = connections_lib.layer_connections(model)
    calls = {}
    layers = {}
    for site in prepare_lib.walk(model):
        calls[site.operation.name] = calls.get(site.operation.name, 0) + 1
        layers[site.operation.name] = site.operation

    def single(name):
        return calls.get(name) == 1

    def is_bn(name):
        layer = layers.get(name)
        return (
            isinstance(layer, keras.layers.BatchNormalization)
            and single(name)
            and _bn_on_last_axis(layer)
        )

    pairs, used = [], set()
    for name, layer in layers.items():
        kind = _kind(layer)
        consumer = connections.sole_consumer(name)
        if (
            kind in _BACKWARD
            and single(name)
            and _linear(layer)
            and _channels_last(layer)
            and consumer is not None
            and is_bn(consumer)
        ):
            pairs.append((name, consumer, "backward"))
            used.update((name, consumer))
    for name in layers:
        if not is_bn(name) or name in used:
            continue
        consumer = connections.sole_consumer(name)
        target = layers.get(consumer)
        if (
            consumer is None
            or consumer in used
            or _kind(target) not in LINEAR_LAYERS
            or not single(consumer)
            or not _channels_last(target)
            or getattr(target, "padding", "valid") != "valid"
        ):
            continue
        pairs.append((consumer, name, "forward"))
        used.update((name, consumer))
    return pairs


def _bn_scale_shift(bn):
    gamma = bn.gamma.numpy() if bn.scale else 1.0
    beta = bn.beta.numpy() if bn.center else 0.0
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    scale = gamma / np.sqrt(var + bn.epsilon)
    shift = beta - mean * scale
    n = mean.shape[0]
    return (
        np.broadcast_to(scale, (n,)).astype(np.float64),
        np.broadcast_to(shift, (n,)).astype(np.float64),
    )


def _folded_weights(layer, bn, direction):
    """``{weight name: value}`` of ``layer`` with ``bn`` folded in."""
    kind = _kind(layer)
    weights = {w.name: w.numpy().astype(np.float64) for w in layer.weights}
    scale, shift = _bn_scale_shift(bn)
    main = "pointwise_kernel" if kind.startswith("Separable") else "kernel"
    kernel = weights[main]
    out_channels = (
        kernel.shape[-2] * kernel.shape[-1]
        if kind.startswith("Depthwise")
        else kernel.shape[-2 if kind.endswith("Transpose") else -1]
    )
    bias = weights.get("bias", np.zeros(out_channels))
    if direction == "backward":
        if kind.startswith("Depthwise"):
            kernel = kernel * scale.reshape(kernel.shape[-2:])
        elif kind.endswith("Transpose"):
            kernel = kernel * scale[:, None]
        else:
            kernel = kernel * scale
        bias = bias * scale + shift
    else:
        if kind.startswith("Depthwise"):
            contribution = (
                (kernel * shift[:, None]).reshape(-1, out_channels).sum(0)
            )
            kernel = kernel * scale[:, None]
        else:
            contribution = (
                (kernel * shift[:, None]).reshape(-1, kernel.shape[-1]).sum(0)
            )
            kernel = kernel * scale[:, None]
        bias = bias + contribution
    weights[main] = kernel
    weights["bias"] = bias
    return weights


def _folded_layer(layer, bn, direction):
    weights = _folded_weights(layer, bn, direction)
    config = dict(layer.get_config(), use_bias=True)
    folded = layer.__class__.from_config(config)
    folded.build_from_config(layer.get_build_config())
    for variable in folded.weights:
        variable.assign(weights[variable.name].astype(variable.dtype))
    return folded


def _pass_through(*args, **kwargs):
    return args[0]


def fold_batch_norm_pairs(
    model: keras.Model,
    pairs: list[tuple[str, str, str]],
    make_layer: Callable[
        [keras.layers.Layer, keras.layers.Layer, str], keras.layers.Layer
    ]
    | None = None,
) -> keras.Model:
    """Folds the given ``(layer, BN, direction)`` triples of a prepared model.

    Args:
        model: a functional model from
            :func:`~aimet_keras.graph.prepare_model` (its layers are used,
            not copied).
        pairs: triples from :func:`find_bn_pairs`.
        make_layer: ``(layer, bn, direction) -> layer`` that takes the
            pair's place. Defaults to the folded layer (weights merged).

    Returns:
        A new functional model without the folded BatchNormalizations.
    """
    make_layer = make_layer or _folded_layer
    replacements = {}
    for layer_name, bn_name, direction in pairs:
        layer, bn = model.get_layer(layer_name), model.get_layer(bn_name)
        replacements[layer_name] = make_layer(layer, bn, direction)
        replacements[bn_name] = _pass_through
    return prepare_lib.rebuild(model, lambda op: replacements.get(op.name, op))


def fold_all_batch_norms(
    model: keras.Model,
) -> tuple[keras.Model, list[tuple[str, str]]]:
    """Folds every foldable BatchNormalization; returns a new model.

    Conv1D/2D/3D, DepthwiseConv, SeparableConv (into its pointwise part),
    ConvTranspose and Dense followed by a BatchNormalization fold the BN
    into their weights; a BN feeding a ``"valid"``-padded Conv or a Dense
    folds forward into it. A BN that is neither stays. The caller's model
    is not changed.

    Args:
        model: a built ``keras.Model`` (any shape
            :func:`~aimet_keras.graph.prepare_model` takes).

    Returns:
        ``(new_model, folded_pairs)``: the folded model and the
        ``(layer name, BN name)`` pairs folded.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> folded, pairs = fold_all_batch_norms(model)
    >>> pairs[0]
    ('stem_conv', 'stem_bn')
    >>> len(folded.layers) < len(model.layers)
    True
    """
    prepared = prepare_lib.prepare_model(model)
    pairs = find_bn_pairs(prepared)
    folded = fold_batch_norm_pairs(prepared, pairs)
    return folded, [(layer, bn) for layer, bn, _ in pairs]


def fold_for_deployment(model):
    """``model`` in the layers integer runtimes compute, batch norms folded.

    :func:`~aimet_keras.graph.split_for_deployment` (exact rewrites), then
    :func:`fold_all_batch_norms`: what a sim should simulate so that its
    grids are the deployed ones. The caller's model is not changed.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> folded = fold_for_deployment(model)
    >>> any(isinstance(layer, keras.layers.BatchNormalization)
    ...     for layer in folded.layers)
    False
    """
    folded, _ = fold_all_batch_norms(deployment_lib.split_for_deployment(model))
    return folded


def bn_output_stats(
    model: keras.Model,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{layer name: (mean, std)}`` of layers followed by a foldable BN.

    The BN's output, per channel, has mean ``beta`` and spread ``|gamma|``
    (what analytical bias correction and high-bias folding read).

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> mean, std = bn_output_stats(model)["stem_conv"]
    >>> mean.shape
    (16,)
    """
    prepared = prepare_lib.prepare_model(model)
    stats = {}
    for layer_name, bn_name, direction in find_bn_pairs(prepared):
        if direction != "backward":
            continue
        bn = prepared.get_layer(bn_name)
        channels = bn.moving_mean.shape[0]
        beta = bn.beta.numpy() if bn.center else np.zeros(channels)
        gamma = bn.gamma.numpy() if bn.scale else np.ones(channels)
        stats[layer_name] = (beta.astype(np.float64), np.abs(gamma))
    return stats


def _scaled_encoding(encoding, scale):
    """``encoding``'s grid with every channel's range multiplied by ``scale``.

    A negative factor swaps the channel's min and max; a symmetric grid
    stays symmetric around zero.
    """
    from aimet_keras.quant import encoding as encoding_lib

    if encoding.is_symmetric and not encoding.unsigned_symmetric:
        # A signed grid is re-derived from its positive extent (its min is
        # one step further out): scale that, not max(|min|, |max|).
        high = np.abs(np.asarray(encoding.max, np.float64) * scale)
        low = -high
    else:
        low = np.asarray(encoding.min, np.float64) * scale
        high = np.asarray(encoding.max, np.float64) * scale
        low, high = np.minimum(low, high), np.maximum(low, high)
    return encoding_lib.compute_encoding(
        low,
        high,
        encoding.bitwidth,
        encoding.is_symmetric,
        encoding.strict_symmetric,
        encoding.unsigned_symmetric,
    )


def fold_all_batch_norms_to_scale(
    sim: QuantizationSimModel,
) -> list[tuple[str, str]]:
    """Folds a sim's batch norms into its weights and weight grids, in place.

    For quantization-aware training that trains the weights a deployment
    uses: each Conv/Dense followed by a BatchNormalization becomes one layer
    with the folded weights, and its per-channel weight grid is the old grid
    times ``gamma / sqrt(var + eps)`` (min and max swap where that factor is
    negative), so the simulated outputs stay what they were. A per-tensor
    weight grid cannot be scaled per channel and is recomputed from the
    folded weights. The BN's output grid moves to the folded layer; every
    other quantizer keeps its grid. ``sim.model`` is replaced: use the new
    one from then on.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel` (calibrated or
            not).

    Returns:
        The ``(layer name, BN name)`` pairs folded.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
    >>> sim = QuantizationSimModel(model, config_file="htp")
    >>> sim.compute_encodings(images[:200])
    >>> pairs = fold_all_batch_norms_to_scale(sim)
    >>> pairs[0], "stem_bn" in [x.name for x in sim.model.layers]
    (('stem_conv', 'stem_bn'), False)
    """
    pairs = [
        (layer, bn)
        for layer, bn, direction in find_bn_pairs(sim._prepared)
        if direction == "backward"
    ]
    scales = {
        layer: _bn_scale_shift(sim._prepared.get_layer(bn))[0]
        for layer, bn in pairs
    }
    folded = fold_batch_norm_pairs(
        sim._prepared, [(layer, bn, "backward") for layer, bn in pairs]
    )
    rebuild_sim(sim, folded, dict(pairs), scales)
    return pairs


def rebuild_sim(
    sim: QuantizationSimModel,
    prepared: keras.Model,
    merged_bns: dict[str, str],
    kernel_scales: dict[str, np.ndarray],
) -> None:
    """Replaces a sim's model by one built on ``prepared``, grids kept.

    Every quantizer of the new sim takes the grid of the old quantizer at
    the same place; a layer that absorbed a batch norm takes the BN's output
    grid, and its kernel grid is scaled per channel (see
    :func:`fold_all_batch_norms_to_scale`).

    Args:
        sim: the :class:`~aimet_keras.sim.QuantizationSimModel` to update in
            place.
        prepared: the new prepared model (its layers are used).
        merged_bns: ``{layer name: name of the BN it absorbed}``.
        kernel_scales: ``{layer name: per-channel factor}`` its kernel was
            multiplied by; layers not named keep their kernel grid.
    """
    from aimet_keras.sim import QuantizationSimModel

    old_wrappers = {w.name: w for w in sim.quant_wrappers()}
    new = QuantizationSimModel(
        prepared,
        quant_scheme=sim.quant_scheme,
        default_output_bw=sim._args["activation_bitwidth"],
        default_param_bw=sim._args["param_bitwidth"],
        config_file=sim.config,
        default_data_type=sim.default_data_type,
        in_place=True,
    )
    for wrapper in new.quant_wrappers():
        old = old_wrappers.get(wrapper.name)
        if old is None:
            continue
        groups = [
            (wrapper.input_quantizers, old.input_quantizers),
            (
                wrapper.output_quantizers,
                old_wrappers[merged_bns[wrapper.name]].output_quantizers
                if wrapper.name in merged_bns
                else old.output_quantizers,
            ),
            (
                list(wrapper.internal_quantizers.values()),
                list(old.internal_quantizers.values()),
            ),
        ]
        for key, quantizer in wrapper.param_quantizers.items():
            source = old.param_quantizers.get(key)
            groups.append(([quantizer], [source] if source else []))
        for new_quantizers, old_quantizers in groups:
            for target, source in zip(new_quantizers, old_quantizers):
                _transfer(
                    target, source, kernel_scales.get(wrapper.name), wrapper
                )
    sim.model, sim._prepared, sim.specs = new.model, new._prepared, new.specs
    sim._frozen = set()


def _transfer(target, source, scale, wrapper):
    """Gives ``target`` the grid of ``source`` (scaled for folded kernels)."""
    encoding = source.encoding if source.enabled else None
    if not target.enabled or encoding is None or encoding.is_float:
        return
    key = next(
        (k for k, q in wrapper.param_quantizers.items() if q is target), None
    )
    if key is not None and scale is not None and key != "depthwise_kernel":
        # (A SeparableConv's depthwise kernel is not scaled by the fold.)
        if key.endswith("kernel") and target.axis is not None:
            target.set_encoding(_scaled_encoding(encoding, scale))
            return
        # A per-tensor kernel grid cannot take per-channel factors, and the
        # folded bias is a new tensor: calibrate them on the folded values.
        target.observer.reset()
        target.observer.update(wrapper.weight_values()[key])
        target.compute_encoding()
        return
    target.set_encoding(encoding)
