"""Convolutions and Dense layers in inference compute as integer kernels do.

The reference is numpy: int64 accumulation of the integer levels, the int32
bias level added, the float32 multiplier ``input scale x kernel scale /
output scale`` and round-half-to-even, which is how TFLite's XNNPACK kernels
and ONNX Runtime's QLinearConv requantize.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras import export_tflite
from aimet_keras.export import tflite as tflite_lib
from aimet_keras.ptq import set_precision
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import integer_accumulation


def _model():
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(
        16, 3, padding="same", activation="relu", name="conv"
    )(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu6", name="depthwise")(x)
    x = keras.layers.Conv2D(24, 1, name="pointwise")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(5, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def images():
    return (
        np.random.default_rng(1).normal(size=(48, 10, 10, 3)).astype("float32")
    )


@pytest.fixture(scope="module")
def sim(images):
    keras.utils.set_random_seed(3)
    sim = QuantizationSimModel(_model(), config_file="tflite_int8")
    sim.compute_encodings(images)
    return sim


def _grid(encoding):
    return np.float32(encoding.delta), np.int64(np.round(encoding.offset))


def _numpy_integer_conv(wrapper, x_float, input_encoding):
    """The integer kernel in numpy: int64 sums, float32 requantization."""
    layer = wrapper.layer
    x_step, x_offset = _grid(input_encoding)
    x_levels = np.round(x_float / x_step).astype(np.int64)
    kernel = wrapper.param_quantizers["kernel"].encoding
    k_step = np.asarray(kernel.delta, np.float32)
    # The kernel's levels as the sim's (numpy-tested) quantizer sets them.
    kernel_values = np.asarray(wrapper.param_quantizers["kernel"](layer.kernel))
    channels = (
        (1, 1, *kernel_values.shape[2:])
        if isinstance(layer, keras.layers.DepthwiseConv2D)
        else (-1,)
    )
    k_levels = np.round(kernel_values / k_step.reshape(channels))
    k_levels = k_levels.astype(np.int64)
    bias_step = np.float64(x_step) * k_step.astype(np.float64).reshape(-1)
    bias = wrapper.param_quantizers["bias"](layer.bias)
    b_levels = np.round(np.asarray(bias, np.float64) / bias_step)
    # The layer's own linear op, in float64: exact for these integers.
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        acc = tf.nn.depthwise_conv2d(
            x_levels.astype(np.float64),
            k_levels.astype(np.float64),
            [1, *layer.strides, 1],
            layer.padding.upper(),
        ).numpy()
    elif isinstance(layer, keras.layers.Dense):
        acc = x_levels @ k_levels
    else:
        acc = tf.nn.conv2d(
            x_levels.astype(np.float64),
            k_levels.astype(np.float64),
            1,
            layer.padding.upper(),
        ).numpy()
    acc = np.asarray(acc, np.int64) + b_levels.astype(np.int64)
    out_step, out_offset = _grid(wrapper.output_quantizers[0].encoding)
    multiplier = (np.float32(x_step) * k_step.reshape(-1)) / out_step
    levels = np.rint(acc.astype(np.float32) * multiplier.astype(np.float32))
    levels = np.clip(levels - out_offset, 0, 255) + out_offset
    activation = layer.activation.__name__
    if activation in ("relu", "relu6"):
        levels = np.maximum(levels, 0)
    if activation == "relu6":
        levels = np.minimum(levels, np.round(6 / out_step))
    return levels * out_step


@pytest.mark.parametrize(
    ("name", "source"),
    [("conv", None), ("depthwise", "conv"), ("pointwise", "depthwise")],
)
def test_convolutions_match_numpy_integer_kernels(sim, images, name, source):
    wrapper = sim.model.get_layer(name)
    probe = keras.Model(
        sim.model.inputs,
        [sim.model.get_layer(source or name).input, wrapper.output]
        if source is None
        else [sim.model.get_layer(source).output, wrapper.output],
    )
    x, y = (np.asarray(t) for t in probe([images]))
    if source is None:
        input_encoding = wrapper.input_quantizers[0].encoding
        x = np.asarray(wrapper.input_quantizers[0](x))
    else:
        input_encoding = (
            sim.model.get_layer(source).output_quantizers[0].encoding
        )
    expected = _numpy_integer_conv(wrapper, x, input_encoding)
    np.testing.assert_array_equal(y, expected.astype(np.float32))


def test_dense_head_matches_numpy_integer_kernel(sim, images):
    head = sim.model.get_layer("head")
    pool = sim.model.get_layer("pool")
    probe = keras.Model(sim.model.inputs, [pool.output, head.output])
    x, y = (np.asarray(t) for t in probe([images]))
    expected = _numpy_integer_conv(head, x, pool.output_quantizers[0].encoding)
    np.testing.assert_array_equal(y, expected.astype(np.float32))


def test_wide_dense_sums_exactly():
    # A million outputs of 1024-term sums: convolving the dequantized
    # floats puts a few of them on the neighbouring level.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((1024,))
    hidden = keras.layers.Dense(1024, activation="relu", name="wide")(inputs)
    outputs = keras.layers.Dense(512, name="out")(hidden)
    data = np.random.default_rng(0).normal(size=(2048, 1024)).astype("float32")
    sim = QuantizationSimModel(
        keras.Model(inputs, outputs), config_file="tflite_int8"
    )
    sim.compute_encodings(data[:256])
    wide, out = sim.model.get_layer("wide"), sim.model.get_layer("out")
    probe = keras.Model(sim.model.inputs, [wide.output, out.output])
    x, y = (np.asarray(t) for t in probe([data]))
    expected = _numpy_integer_conv(out, x, wide.output_quantizers[0].encoding)
    np.testing.assert_array_equal(y, expected.astype(np.float32))


def test_training_keeps_the_float_path_and_its_gradients(sim, images):
    wrapper = sim.model.get_layer("pointwise")
    x = tf.constant(
        np.asarray(
            sim.model.get_layer("depthwise")(
                sim.model.get_layer("conv")(images[:4])
            )
        )
    )
    with tf.GradientTape() as tape:
        y = wrapper(x, training=True)
        loss = tf.reduce_sum(y * y)
    gradient = tape.gradient(loss, wrapper.layer.kernel)
    assert gradient is not None and np.any(np.asarray(gradient) != 0)
    # Inference and training outputs differ by float rounding only.
    inference = np.asarray(wrapper(x, training=False))
    step = float(wrapper.output_quantizers[0].encoding.delta)
    assert np.max(np.abs(inference - np.asarray(y))) <= step * 1.001


def test_sixteen_bit_inputs_take_the_float_path(images):
    # int16 activations accumulate past float32's 24 exact bits.
    keras.utils.set_random_seed(3)
    sim = QuantizationSimModel(_model(), config_file="tflite_int8")
    set_precision(sim, "depthwise", activation=16)
    sim.compute_encodings(images)
    wrapper = sim.model.get_layer("pointwise")
    x = tf.constant(images[:2, :8, :8, :1].repeat(16, axis=-1))
    assert integer_accumulation.integer_call(wrapper, x) is None
    assert (
        integer_accumulation.integer_call(
            sim.model.get_layer("conv"), tf.constant(images[:2])
        )
        is not None
    )


def test_exported_tflite_equals_the_sim_bit_for_bit(sim, images, tmp_path):
    exported = export_tflite(sim, tmp_path / "model.tflite")
    got = tflite_lib.run_tflite(exported.path, images)
    expected = np.asarray(sim.model.predict(images, verbose=0))
    np.testing.assert_array_equal(got, expected)
