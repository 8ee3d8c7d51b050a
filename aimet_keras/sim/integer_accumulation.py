"""Convolutions and Dense layers computed as integer kernels compute them.

In inference the simulation evaluates a quantized convolution or Dense on
the integer levels of its input and kernel, adds the 32-bit bias level and
requantizes the accumulator with the float32 multiplier ``input scale x
kernel scale / output scale`` and round-half-to-even: what TFLite's XNNPACK
kernels and ONNX Runtime's QLinearConv do. Convolving the dequantized
float values instead gives the same result up to float32 rounding in the
sum, which puts about one output in 10**5 on the neighbouring level; deep
networks with squeeze-excite gates amplify such steps until a few
predictions in a thousand flip (EfficientNet). Training keeps the float
path, whose gradients QAT needs; the two agree except for those
one-step differences.
"""

from __future__ import annotations

import keras

from aimet_keras.quant import encoding as encoding_lib
from aimet_keras.quant import quantize as quantize_lib
from aimet_keras.sim import quantizer as quantizer_lib

__all__ = ["integer_call"]

# Activations an integer kernel applies as a clamp of its output levels.
_CLAMP_ACTIVATIONS = ("linear", "relu", "relu6")


def _levels(quantizer, x):
    """``(levels, step)``: ``x`` on ``quantizer``'s grid as integers."""
    lo, hi = quantizer._grid_range()
    return quantize_lib.grid_integers(
        x, lo, hi, *quantizer._grid_settings, axis=quantizer.axis
    )


def _usable(quantizer):
    return (
        quantizer.enabled
        and quantizer.data_type == "int"
        and quantizer.built
        and quantizer.is_initialized
        and not quantizer.observing
    )


def _accumulate(layer, levels, kernel):
    """The layer's linear op on integer levels (float32, exact below 2**24)."""
    ops = keras.ops
    name = type(layer).__name__
    if name == "Dense":
        return ops.matmul(levels, kernel)
    if name.startswith("Depthwise"):
        return ops.depthwise_conv(
            levels,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
    return layer.convolution_op(levels, kernel)


def _supported(layer):
    name = type(layer).__name__
    if name not in (
        "Conv1D",
        "Conv2D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "Dense",
    ):
        return False
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    if (
        getattr(layer, "lora_enabled", False)
        or getattr(layer, "groups", 1) != 1
        # Conv1D pads a causal input in its own call, not in its op.
        or getattr(layer, "padding", None) == "causal"
    ):
        return False
    activation = getattr(layer.activation, "__name__", None)
    return activation in _CLAMP_ACTIVATIONS and layer.use_bias


def integer_call(wrapper, inputs):
    """The wrapped layer's float output computed on integer levels, or None.

    Applies to a Conv1D, Conv2D, DepthwiseConv or Dense with a linear, ReLU
    or ReLU6 activation, whose 32-bit bias is tied to the product of its
    input's and kernel's steps (see
    :meth:`~aimet_keras.sim.TensorQuantizer.tie_to_product`) and whose
    output quantizer holds an integer grid: the layers a TFLite or ONNX
    export runs as one integer kernel. Returns None for any other layer, so
    the caller takes the float path. ``inputs`` are the layer's quantized
    inputs; the result is on the output grid before the output quantizer
    (which leaves it as it is).

    Example:

    >>> import numpy as np
    >>> from aimet_keras.sim import QuantizationSimModel
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs))
    >>> sim = QuantizationSimModel(model, config_file="tflite_int8")
    >>> data = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    >>> sim.compute_encodings(data)
    >>> integer_call(sim.model.get_layer("fc"), data) is not None
    True
    """
    layer = wrapper.layer
    if not isinstance(layer, keras.layers.Layer) or not _supported(layer):
        return None
    bias = wrapper.param_quantizers.get("bias")
    tie = getattr(bias, "_tie", None)
    if not isinstance(tie, quantizer_lib._ProductGrid) or not bias.tied:
        return None
    if len(wrapper.output_quantizers) != 1:
        return None
    output = wrapper.output_quantizers[0]
    if not (
        _usable(output)
        and output.axis is None
        and all(_usable(q) for q in (tie.input, tie.kernel, bias))
        and max(tie.input.bitwidth, tie.kernel.bitwidth) <= 8
    ):
        return None
    ops = keras.ops
    x_levels, x_step = _levels(tie.input, inputs)
    kernel_levels, kernel_step = _levels(tie.kernel, layer.kernel)
    # The 32-bit bias level in float64: float32 holds only 24 bits.
    product_step = ops.reshape(
        ops.cast(x_step, "float64") * ops.cast(kernel_step, "float64"), (-1,)
    )
    bias_levels = ops.round(
        ops.cast(bias(layer.bias), "float64") / product_step
    )
    accumulator = _accumulate(layer, x_levels, kernel_levels) + ops.cast(
        bias_levels, "float32"
    )
    y_lo, y_hi = output._grid_range()
    y_step, _ = encoding_lib.grid_from_range(
        ops.cast(y_lo, "float32"),
        ops.cast(y_hi, "float32"),
        *output._grid_settings,
        bounds=False,
    )
    # The float32 multiplier as the runtimes form it, one per channel.
    multiplier = (
        ops.reshape(ops.cast(x_step, "float32") * kernel_step, (-1,)) / y_step
    )
    levels = ops.round(accumulator * multiplier)  # half to even
    return layer.activation(levels * y_step)
