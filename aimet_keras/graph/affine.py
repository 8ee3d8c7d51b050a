"""Per-channel affine layers as the 1x1 depthwise convolutions TFLite runs.

The TFLite converter runs ``Normalization`` (``(x - mean) / sqrt(var)``)
and ``Rescaling`` (``x * scale + offset``) on NHWC images as a 1x1
``DEPTHWISE_CONV_2D``: an int8 weight per channel and an int32 bias on the
step input step x weight step. Computed in float, the sim misses that
bias's rounding, and the first tensor of a network is then a step off
wherever it tips a value: EfficientNetV2B0's exported TFLite agreed with
its sim on 91.3% of top-1 over 1,000 images, 97.0% with the rounding
simulated. :func:`channel_affines_as_depthwise` rewrites them, so the sim
quantizes their constants as the target stores them.
"""

from __future__ import annotations

import typing

import keras
import numpy as np

from aimet_keras.graph import prepare as prepare_lib

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["channel_affine", "channel_affines_as_depthwise"]


def _per_channel(values, channels):
    values = np.asarray(keras.ops.convert_to_numpy(values), np.float64)
    if values.size not in (1, channels):
        return None
    return np.broadcast_to(values.reshape(-1), (channels,))


def channel_affine(
    layer: keras.layers.Layer,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, bias)`` per channel of ``y = x * scale + bias`` that a
    built ``Normalization`` or ``Rescaling`` on NHWC images computes, or
    None for another layer, another layout or an inverted normalization.

    Example:

    >>> rescale = keras.layers.Rescaling(1 / 127.5, offset=-1.0)
    >>> rescale.build((None, 8, 8, 3))
    >>> scale, bias = channel_affine(rescale)
    >>> scale.round(5).tolist(), bias.tolist()
    ([0.00784, 0.00784, 0.00784], [-1.0, -1.0, -1.0])
    """
    affine_layers = (keras.layers.Normalization, keras.layers.Rescaling)
    if type(layer) not in affine_layers or not layer.built:
        return None
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):  # not called in a graph
        shape = getattr(layer, "_build_shapes_dict", {}).get("input_shape")
    if shape is None or len(shape) != 4 or shape[-1] is None:
        return None
    channels = int(shape[-1])
    if isinstance(layer, keras.layers.Rescaling):
        scale = _per_channel(layer.scale, channels)
        bias = _per_channel(layer.offset, channels)
    else:
        if layer.invert or tuple(layer.axis) not in ((), (3,), (-1,)):
            return None
        mean = _per_channel(layer.mean, channels)
        variance = _per_channel(layer.variance, channels)
        if mean is None or variance is None:
            return None
        # Keras divides by max(sqrt(variance), epsilon).
        scale = 1.0 / np.maximum(np.sqrt(variance), keras.config.epsilon())
        bias = -mean * scale
    return None if scale is None or bias is None else (scale, bias)


def _as_depthwise(layer, scale, bias):
    depthwise = keras.layers.DepthwiseConv2D(
        1, use_bias=True, name=layer.name, dtype=layer.dtype_policy
    )
    depthwise.build((None, None, None, len(scale)))
    depthwise.set_weights(
        [
            scale.reshape(1, 1, -1, 1).astype("float32"),
            bias.astype("float32"),
        ]
    )
    return depthwise


def channel_affines_as_depthwise(
    model: keras.Model,
    where: Callable[[keras.layers.Layer], bool] | None = None,
) -> keras.Model:
    """A copy of ``model`` with each ``Normalization`` and ``Rescaling`` on
    NHWC images as a 1x1 ``DepthwiseConv2D`` of the same name.

    Float outputs are the same up to float32 rounding; quantized, the
    layer's scale takes a per-channel int8 grid (exact: one value per
    channel) and its bias the int32 grid of input step x weight step, as in
    TFLite's ``DEPTHWISE_CONV_2D``. The quantsim configs that ask for it
    (``"as_depthwise_conv"`` on an op type) make the sim apply it.

    Args:
        model: a functional ``keras.Model``.
        where: ``layer -> bool``, the layers to rewrite. Defaults to None
            (all of them).

    Returns:
        The rewritten model (``model`` itself when nothing is rewritten).

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Normalization(mean=0.5, variance=0.25, name="n")(
    ...     inputs)
    >>> model = channel_affines_as_depthwise(keras.Model(inputs, x))
    >>> type(model.get_layer("n")).__name__
    'DepthwiseConv2D'
    """
    affines = {}
    for site in prepare_lib.walk(model):
        if where is not None and not where(site.operation):
            continue
        affine = channel_affine(site.operation)
        if affine is not None:
            affines[id(site.operation)] = affine
    if not affines:
        return model

    def replace(operation):
        affine = affines.get(id(operation))
        if affine is None:
            return operation
        return _as_depthwise(operation, *affine)

    return prepare_lib.rebuild(model, replace)
