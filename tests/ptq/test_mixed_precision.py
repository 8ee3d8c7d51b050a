"""Manual mixed precision: the chosen layers' quantizers take the new
bitwidth, before or after calibration, and the export carries it."""

import json

import keras
import numpy as np
import pytest

from aimet_keras.ptq import set_precision
from aimet_keras.sim import QuantizationSimModel


def _residual_model():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, name="fc1")(inputs)
    # ``x + y`` in a functional graph: an "Add" op, not a keras.layers.Add.
    x = x + inputs
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = keras.layers.Dense(4, name="fc2")(x)
    return keras.Model(inputs, outputs)


def _data():
    return np.random.default_rng(0).normal(size=(32, 8)).astype("float32")


def _bitwidths(sim):
    return {
        q.name: q.bitwidth
        for w in sim.quant_wrappers()
        for q in w.quantizers
        if q.enabled
    }


def test_op_types_names_classes_and_callables_select_layers():
    sim = QuantizationSimModel(_residual_model(), quant_scheme="tf")
    add = next(n for n, s in sim.specs.items() if s.op_type == "Add")
    changed = set_precision(
        sim,
        ["Add", keras.layers.LayerNormalization, lambda x: x.name == "fc2"],
        activation=16,
    )
    # The Add's second input is the model input, quantized: an activation
    # of the layer too.
    assert changed == [
        f"{add}_input1",
        f"{add}_output0",
        "norm_output0",
        "fc2_output0",
    ]
    assert set_precision(sim, "fc1", param=4) == ["fc1_kernel"]
    bits = _bitwidths(sim)
    assert bits["fc1_kernel"] == 4 and bits["fc2_kernel"] == 8
    assert bits["fc1_output0"] == 8 and bits[f"{add}_output0"] == 16


def test_before_calibration_the_grids_have_the_new_bitwidth(tmp_path):
    sim = QuantizationSimModel(_residual_model(), quant_scheme="tf")
    set_precision(sim, "LayerNormalization", activation=16)
    sim.compute_encodings(_data())
    assert (
        sim.model.get_layer("norm").output_quantizers[0].encoding.bitwidth == 16
    )
    sim.export(str(tmp_path), "model")
    encodings = json.loads((tmp_path / "model.encodings").read_text())
    bits = {
        name: entry[0]["bitwidth"]
        for name, entry in encodings["activation_encodings"].items()
    }
    assert sorted(set(bits.values())) == [8, 16]


def _only_norm_output(sim):
    # Only the LayerNorm's output quantized: the model's error is its own.
    quantizer = sim.model.get_layer("norm").output_quantizers[0]
    for wrapper in sim.quant_wrappers():
        for other in wrapper.quantizers:
            other.enabled = other is quantizer
    return quantizer


def test_after_calibration_the_grid_is_the_one_calibration_gives():
    model, data = _residual_model(), _data()
    sim = QuantizationSimModel(model, quant_scheme="tf")
    quantizer = _only_norm_output(sim)
    sim.compute_encodings(data)
    before = quantizer.encoding
    error_8 = np.abs(sim.model.predict(data, verbose=0) - model(data)).max()
    set_precision(sim, "norm", activation=16)
    after = quantizer.encoding
    assert after.bitwidth == 16
    np.testing.assert_allclose(after.min, before.min, atol=before.delta)
    np.testing.assert_allclose(after.max, before.max, atol=before.delta)
    fresh = QuantizationSimModel(model, quant_scheme="tf")
    set_precision(fresh, "norm", activation=16)
    expected = _only_norm_output(fresh)
    fresh.compute_encodings(data)
    expected = expected.encoding
    np.testing.assert_allclose(after.min, expected.min, rtol=1e-6)
    np.testing.assert_allclose(after.max, expected.max, rtol=1e-6)
    # The retraced model runs the 16-bit grid.
    error_16 = np.abs(sim.model.predict(data, verbose=0) - model(data)).max()
    assert error_16 < error_8 / 100


def test_no_matching_layer_is_an_error():
    sim = QuantizationSimModel(_residual_model())
    with pytest.raises(ValueError, match="no layer of the sim matches"):
        set_precision(sim, "Conv", activation=16)
    with pytest.raises(TypeError, match="not a layer name"):
        set_precision(sim, [3], activation=16)


def test_weights_after_calibration_get_grids_from_the_weights():
    sim = QuantizationSimModel(_residual_model(), quant_scheme="tf")
    sim.compute_encodings(_data())
    assert set_precision(sim, "fc1", param=4) == ["fc1_kernel"]
    quantizer = sim.model.get_layer("fc1").param_quantizers["kernel"]
    encoding = quantizer.encoding
    assert encoding.bitwidth == 4
    kernel = sim.model.get_layer("fc1").layer.kernel.numpy()
    # Symmetric min/max of the weight, on 4 bits.
    np.testing.assert_allclose(encoding.max, np.abs(kernel).max(), rtol=0.2)
    levels = np.unique(quantizer(kernel).numpy())
    assert len(levels) <= 16


def test_weight_bits_leave_32_bit_biases_alone():
    # tflite_int8 quantizes biases to 32 bits: a 4-bit weight setting must
    # not turn them into 4-bit grids.
    sim = QuantizationSimModel(_residual_model(), config_file="tflite_int8")
    assert set_precision(sim, "fc1", param=4) == ["fc1_kernel"]
    quantizers = sim.model.get_layer("fc1").param_quantizers
    assert quantizers["bias"].bitwidth == 32
    assert quantizers["kernel"].bitwidth == 4
    sim.compute_encodings(_data())
    assert quantizers["bias"].encoding.bitwidth == 32
