"""Cross-layer equalization (Nagel et al. 2019, DFQ), as AIMET does it.

ReLU commutes with a positive per-channel scale: ``relu(s * x) = s *
relu(x)``. So a layer's output channel can be divided by ``s`` and the next
layer's matching input channel multiplied by ``s`` without changing the
model. Cross-layer scaling picks ``s`` to give both layers the same
per-channel weight range (``s = r1 / sqrt(r1 * r2)``), which per-tensor
weight quantization needs; for a conv, depthwise conv, conv triple it
balances all three (``cbrt``). High-bias folding then moves the part of a
bias that the ReLU always passes (``max(0, beta - 3 * |gamma|)`` from the
folded BatchNormalization) into the next layer's bias.

:func:`equalize_model` runs AIMET's sequence: ReLU6 becomes ReLU (ReLU6
does not commute with scaling; AIMET makes the same change, which is the one
way the result differs from the original), batch norms are folded, then
scaling, then high-bias folding.
"""

from __future__ import annotations

import keras
import numpy as np

from aimet_keras.graph import connections as connections_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.ptq import batch_norm_fold
from aimet_keras.sim import op_types

__all__ = ["equalize_model", "find_cls_sets"]

_CONVS = ("Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D")


def _kind(layer):
    return op_types.keras_class_name(layer, _CONVS)


def _is_depthwise(layer):
    return _kind(layer).startswith("Depthwise")


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear")


def _scale_equivariant(layer):
    """Layers ``f`` with ``f(s * x) = s * f(x)`` for ``s > 0`` per channel."""
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and layer.threshold == 0
    if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.PReLU)):
        return not isinstance(layer, keras.layers.PReLU) or (
            layer.shared_axes is None
        )
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer) in ("relu", "linear")
    return type(layer).__name__.startswith("ZeroPadding")


def _relu_between(layers):
    return any(
        isinstance(x, (keras.layers.ReLU, keras.layers.Activation))
        for x in layers
    )


def find_cls_sets(
    model: keras.Model,
) -> list[tuple[tuple[str, ...], tuple[bool, ...]]]:
    """The layer sets cross-layer scaling equalizes.

    Args:
        model: a functional model with batch norms folded.

    Returns:
        A list of ``(names, relu_between)``: ``names`` is a pair of conv
        names or a conv, depthwise conv, conv triple, consecutive in the
        graph through ReLU-like layers only; ``relu_between`` says, per
        junction, whether a ReLU sits there (or is fused in the first conv).

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, activation="relu", name="a")(inputs)
    >>> x = keras.layers.Conv2D(4, 3, name="b")(x)
    >>> find_cls_sets(keras.Model(inputs, x))
    [(('a', 'b'), (True,))]
    """
    connections = connections_lib.layer_connections(model)
    calls, layers = {}, {}
    for site in prepare_lib.walk(model):
        name = site.operation.name
        calls[name] = calls.get(name, 0) + 1
        layers[name] = site.operation

    def usable(name):
        layer = layers.get(name)
        return (
            _kind(layer) is not None
            and calls[name] == 1
            and getattr(layer, "data_format", "channels_last")
            == "channels_last"
            and (
                not _is_depthwise(layer)
                or getattr(layer, "depth_multiplier", 1) == 1
            )
        )

    def next_conv(name):
        """The conv ``name`` feeds through ReLU-likes only, and the path."""
        layer = layers[name]
        if _activation_name(layer) not in ("linear", "relu"):
            return None, False
        relu = _activation_name(layer) == "relu"
        current = connections.sole_consumer(name)
        while current is not None and calls.get(current) == 1:
            if usable(current):
                return current, relu
            if not _scale_equivariant(layers[current]):
                return None, False
            relu = relu or _relu_between([layers[current]])
            current = connections.sole_consumer(current)
        return None, False

    sets = []
    for name in layers:
        if not usable(name) or _is_depthwise(layers[name]):
            continue
        second, relu1 = next_conv(name)
        if second is None:
            continue
        if _is_depthwise(layers[second]):
            third, relu2 = next_conv(second)
            if third is None or _is_depthwise(layers[third]):
                continue
            sets.append(((name, second, third), (relu1, relu2)))
        else:
            sets.append(((name, second), (relu1,)))
    return sets


def _out_range(layer):
    """Per-output-channel max |w| of a conv (depthwise: per channel)."""
    kernel = np.abs(layer.kernel.numpy())
    if _is_depthwise(layer):
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1]).max(0)
    return kernel.reshape(-1, kernel.shape[-1]).max(0)


def _in_range(layer):
    """Per-input-channel max |w| of a (non-depthwise) conv."""
    kernel = np.abs(layer.kernel.numpy())
    return np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1).max(1)


def _safe(ratio):
    ratio = np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0)
    return ratio


def _scale_out(layer, scale):
    """Divides output channels of ``layer`` (kernel and bias) by ``scale``."""
    kernel = layer.kernel.numpy()
    if _is_depthwise(layer):
        kernel = kernel / scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel / scale
    layer.kernel.assign(kernel.astype("float32"))
    if layer.use_bias:
        layer.bias.assign((layer.bias.numpy() / scale).astype("float32"))


def _scale_in(layer, scale):
    """Multiplies input channels of ``layer``'s kernel by ``scale``."""
    kernel = layer.kernel.numpy()
    if _is_depthwise(layer):
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel * scale[:, None]
    layer.kernel.assign(kernel.astype("float32"))


def _scale_set(layers):
    if len(layers) == 2:
        first, second = layers
        r1, r2 = _out_range(first), _in_range(second)
        scale = _safe(r1 / np.sqrt(r1 * r2))
        _scale_out(first, scale)
        _scale_in(second, scale)
        return [scale]
    first, depthwise, last = layers
    r1, r2, r3 = _out_range(first), _out_range(depthwise), _in_range(last)
    cube = np.cbrt(r1 * r2 * r3)
    s12, s23 = _safe(r1 / cube), _safe(cube / r3)
    _scale_out(first, s12)
    _scale_in(depthwise, s12)
    _scale_out(depthwise, s23)
    _scale_in(last, s23)
    return [s12, s23]


def _high_bias_fold(first, second, bn_beta, bn_gamma, relu):
    """Moves the always-passed part of ``first``'s bias into ``second``."""
    if not first.use_bias or not second.use_bias:
        return
    if relu:
        absorbed = np.maximum(0.0, bn_beta - 3.0 * np.abs(bn_gamma))
    else:
        absorbed = bn_beta
    first.bias.assign((first.bias.numpy() - absorbed).astype("float32"))
    kernel = second.kernel.numpy()
    if _is_depthwise(second):
        summed = kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1]).sum(0)
        shift = summed * absorbed
    else:
        summed = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(0)
        shift = absorbed @ summed
    second.bias.assign((second.bias.numpy() + shift).astype("float32"))


def _relu6_to_relu(operation):
    """A copy of ``operation`` with ReLU6 made ReLU, else the operation."""
    if isinstance(operation, keras.layers.ReLU) and operation.max_value:
        config = dict(operation.get_config(), max_value=None)
        return keras.layers.ReLU.from_config(config)
    if _activation_name(operation) == "relu6":
        config = dict(operation.get_config(), activation="relu")
        copy = operation.__class__.from_config(config)
        if operation.weights:
            copy.build_from_config(operation.get_build_config())
            copy.set_weights(operation.get_weights())
        return copy
    return operation


def equalize_model(
    model: keras.Model, high_bias_fold: bool = True
) -> keras.Model:
    """Cross-layer equalization: AIMET's ``equalize_model``.

    ReLU6 becomes ReLU, batch norms are folded
    (:func:`~aimet_keras.ptq.fold_all_batch_norms`), conv pairs and conv,
    depthwise, conv triples are scaled to equal per-channel ranges, and high
    biases are folded forward. The caller's model is not changed.

    Args:
        model: a built ``keras.Model``.
        high_bias_fold: fold high biases (needs the folded batch norms'
            statistics). Defaults to True.

    Returns:
        The equalized functional model. Without ``high_bias_fold`` it
        computes what the model (with ReLU6 as ReLU) computes, to float
        rounding; high-bias folding is exact for channels whose ReLU input
        stays above the absorbed bias, as the DFQ paper assumes.

    Example:

    >>> model = zoo.load_model("mobilenet_v2", compile=False)
    >>> equalized = equalize_model(model)
    >>> images, _ = zoo.load_fashion_mnist_slice("test")
    >>> same = np.mean(
    ...     equalized.predict(images[:200], verbose=0).argmax(-1)
    ...     == model.predict(images[:200], verbose=0).argmax(-1))
    >>> bool(same > 0.9)
    True
    """
    prepared = prepare_lib.prepare_model(model)
    prepared = prepare_lib.rebuild(prepared, _relu6_to_relu)
    pairs = batch_norm_fold.find_bn_pairs(prepared)
    bn_stats = batch_norm_fold.bn_output_stats(prepared)
    folded = batch_norm_fold.fold_batch_norm_pairs(prepared, pairs)
    for names, relus in find_cls_sets(folded):
        layers = [folded.get_layer(name) for name in names]
        scales = _scale_set(layers)
        if not high_bias_fold:
            continue
        for (first, second), scale, relu in zip(
            zip(layers, layers[1:]), scales, relus
        ):
            if first.name not in bn_stats:
                continue
            beta, gamma = bn_stats[first.name]
            # The folded BN's output (mean beta, spread |gamma|) was scaled.
            beta, gamma = beta / scale, gamma / scale
            _high_bias_fold(first, second, beta, gamma, relu)
            bn_stats[first.name] = (beta, gamma)
    return folded
