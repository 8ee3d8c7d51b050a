"""Grouped convolutions that are depthwise convolutions, as such."""

from __future__ import annotations

import keras
import numpy as np

from aimet_keras.graph import prepare as prepare_lib

__all__ = ["depthwise_from_grouped", "is_depthwise_grouped"]


def is_depthwise_grouped(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is a ``Conv2D`` with one group per input channel
    and one output channel per group (ConvNeXt's 7x7 "depthwise" conv).

    Example:

    >>> conv = keras.layers.Conv2D(4, 3, groups=4)
    >>> conv.build((None, 8, 8, 4))
    >>> is_depthwise_grouped(conv)
    True
    """
    if type(layer) is not keras.layers.Conv2D or layer.groups == 1:
        return False
    if layer.data_format != "channels_last" or not layer.built:
        return False
    in_channels = layer.kernel.shape[2] * layer.groups
    return layer.groups == layer.filters == in_channels


def _as_depthwise(conv):
    depthwise = keras.layers.DepthwiseConv2D(
        conv.kernel_size,
        strides=conv.strides,
        padding=conv.padding,
        depth_multiplier=1,
        data_format=conv.data_format,
        dilation_rate=conv.dilation_rate,
        activation=conv.activation,
        use_bias=conv.use_bias,
        name=conv.name,
        dtype=conv.dtype_policy,
    )
    kernel = keras.ops.convert_to_numpy(conv.kernel)  # (h, w, 1, channels)
    depthwise.build((None, None, None, conv.filters))
    weights = [np.transpose(kernel, (0, 1, 3, 2))]
    if conv.use_bias:
        weights.append(keras.ops.convert_to_numpy(conv.bias))
    depthwise.set_weights(weights)
    return depthwise


def depthwise_from_grouped(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with depthwise grouped convolutions as
    ``DepthwiseConv2D``.

    ``Conv2D(C, k, groups=C)`` on ``C`` channels computes what
    ``DepthwiseConv2D(k)`` computes, with the kernel's last two axes
    swapped; Keras runs the grouped form as a compiled function that
    tf2onnx cannot convert, and TFLite as a slower grouped CONV_2D. The
    layers keep their names.

    Args:
        model: any model :func:`~aimet_keras.graph.prepare_model` takes.

    Returns:
        A new functional ``keras.Model``; the caller's model is unchanged.

    Example:

    >>> inputs = keras.Input((8, 8, 4))
    >>> outputs = keras.layers.Conv2D(4, 3, groups=4, name="dw")(inputs)
    >>> model = depthwise_from_grouped(keras.Model(inputs, outputs))
    >>> type(model.get_layer("dw")).__name__
    'DepthwiseConv2D'
    """
    prepared = prepare_lib.prepare_model(model)

    def replace(operation):
        if not is_depthwise_grouped(operation):
            return operation
        depthwise = _as_depthwise(operation)
        return lambda x, **kwargs: depthwise(x)

    return prepare_lib.rebuild(prepared, replace)
