"""Float formats (fp16, bf16, fp8 E4M3/E5M2) against ml_dtypes' casts."""

import json

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras import export_onnx
from aimet_keras import export_tflite
from aimet_keras.export import encodings as encodings_lib
from aimet_keras.ptq import choose_mixed_precision
from aimet_keras.ptq import set_precision
from aimet_keras.quant import float_encoding
from aimet_keras.quant import float_formats
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import TensorQuantizer

_NUMPY_TYPES = {
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
}


def _values():
    rng = np.random.default_rng(0)
    spread = [rng.normal(size=20000) * 10.0**k for k in range(-8, 6)]
    edges = [0.0, -0.0, 2.0**-9, 2.0**-10, 3 * 2.0**-11, 448, 464, 465, 480]
    edges += [57344, 61440, 1e6, -1e6, 1.0625, 1.1875, 15.5, 17.0]
    return np.concatenate(spread + [np.array(edges)]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(float_formats.FORMATS))
def test_fake_cast_matches_ml_dtypes(name):
    fmt = float_formats.FORMATS[name]
    x = _values()
    # ml_dtypes turns overflow into NaN or inf; the sim saturates as ONNX's
    # QuantizeLinear(saturate=1) does, so compare within the finite range.
    clipped = np.clip(x, -fmt.largest, fmt.largest) if not fmt.is_cast else x
    with np.errstate(over="ignore"):  # fp16 overflows to inf, as the sim
        expected = clipped.astype(_NUMPY_TYPES[name]).astype(np.float32)
    got = float_formats.float_quantize_dequantize(tf.constant(x), fmt).numpy()
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[finite], expected[finite])


def test_largest_values_are_the_ocp_ones():
    formats = float_formats.FORMATS
    assert formats["fp8_e4m3"].largest == 448.0
    assert formats["fp8_e5m2"].largest == 57344.0
    assert formats["fp16"].largest == 65504.0


def test_scaled_cast_saturates_and_stops_the_gradient_there():
    fmt = float_formats.FORMATS["fp8_e4m3"]
    x = tf.constant([0.52, 3.2, 100.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = float_formats.float_quantize_dequantize(x, fmt, scale=0.01)
    np.testing.assert_allclose(y.numpy(), [0.52, 3.2, 4.48], rtol=1e-6)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [1, 1, 0])


def test_quantizer_calibrates_the_fp8_scale_from_the_largest_magnitude():
    x = np.random.default_rng(1).normal(size=4096).astype("float32") * 3
    quantizer = TensorQuantizer(8, data_type="float", quant_scheme="tf")
    quantizer.observing = True
    quantizer(x)
    quantizer.compute_encoding()
    quantizer.observing = False
    encoding = quantizer.encoding
    assert encoding.float_format.name == "fp8_e4m3"
    # The tf scheme: the largest magnitude maps to 448.
    largest = float(encoding.delta) * 448
    np.testing.assert_allclose(largest, np.abs(x).max(), rtol=1e-6)
    scale = np.float32(encoding.delta)
    expected = (x / scale).astype(ml_dtypes.float8_e4m3fn).astype("float32")
    np.testing.assert_array_equal(quantizer(x).numpy(), expected * scale)


def test_per_channel_fp8_weights_scale_each_channel():
    w = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
    w *= np.array([0.01, 1.0, 100.0, 1e4], "float32")
    quantizer = TensorQuantizer(
        8, data_type="float", exponent_bits=5, axis=-1, quant_scheme="tf"
    )
    quantizer.observing = True
    quantizer(w)
    quantizer.compute_encoding()
    quantizer.observing = False
    scales = np.asarray(quantizer.encoding.delta, np.float32)
    assert scales.shape == (4,)
    expected = (w / scales).astype(ml_dtypes.float8_e5m2).astype("float32")
    np.testing.assert_allclose(
        quantizer(w).numpy(), expected * scales, rtol=1e-6
    )


def _model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(3).normal(size=(32, 8, 8, 3)).astype("f4")


@pytest.mark.parametrize("data_type", ["fp8_e4m3", "fp8_e5m2", "bf16"])
def test_sim_in_a_float_format_exports_2_0_0_and_reloads(
    data, data_type, tmp_path
):
    keras.utils.set_random_seed(0)
    model = _model()
    sim = QuantizationSimModel(model, default_data_type=data_type)
    sim.compute_encodings(data)
    quantized = sim.model.predict(data, verbose=0)
    fp32 = model.predict(data, verbose=0)
    assert not np.array_equal(quantized, fp32)
    np.testing.assert_allclose(quantized, fp32, atol=0.25 * np.abs(fp32).max())
    files = sim.export(tmp_path, "model", encoding_version="2.0.0")
    entries = json.loads(files["encodings"].read_text())
    dtypes = {e["output_dtype"] for e in entries["encodings"]}
    expected = float_formats.FORMATS[data_type].onnx_dtype
    assert dtypes == {expected}
    reloaded = QuantizationSimModel(model)  # int8 until the file says
    reloaded.load_encodings_to_sim(files["encodings"])
    np.testing.assert_array_equal(
        reloaded.model.predict(data, verbose=0), quantized
    )


def test_fp8_needs_2_0_0_and_the_exports_refuse_it(data, tmp_path):
    sim = QuantizationSimModel(_model(), default_data_type="fp8_e4m3")
    sim.compute_encodings(data)
    with pytest.raises(ValueError, match=r"fp8_e4m3.*version 2\.0\.0"):
        sim.export(tmp_path / "a", "model", encoding_version="0.6.1")
    assert not (tmp_path / "a" / "model.encodings").exists()
    with pytest.raises(ValueError, match="fp8_e4m3"):
        export_tflite(sim, tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="fp8_e4m3"):
        export_onnx(sim, tmp_path / "model.onnx")


def test_encoding_files_read_float8_scales():
    encoding = float_encoding(8, 5, scale=[0.5, 0.25])
    data = encodings_lib.encodings_to_dict(
        {"k": encoding}, {}, version="2.0.0", axes={"k": 3}
    )
    assert data["encodings"][0] == {
        "name": "k",
        "output_dtype": "float8e5m2",
        "y_scale": [0.5, 0.25],
        "axis": 3,
    }
    params, _ = encodings_lib.encodings_from_dict(data, param_names=["k"])
    assert params["k"].float_format.name == "fp8_e5m2"
    np.testing.assert_array_equal(params["k"].delta, [0.5, 0.25])


def test_set_precision_switches_between_integer_and_float_types(data):
    keras.utils.set_random_seed(0)
    sim = QuantizationSimModel(_model())
    sim.compute_encodings(data)
    int8 = sim.model.predict(data, verbose=0)
    names = set_precision(sim, "conv", activation="fp8_e4m3", param="bf16")
    assert names
    conv = sim.model.get_layer("conv")
    assert conv.output_quantizers[0].type_name == "fp8_e4m3"
    assert conv.param_quantizers["kernel"].type_name == "bf16"
    # The fp8 scale comes from the statistics of the last calibration.
    assert conv.output_quantizers[0].encoding.delta is not None
    mixed = sim.model.predict(data, verbose=0)
    assert not np.array_equal(mixed, int8)
    set_precision(sim, "conv", activation="int8", param="int8")
    np.testing.assert_array_equal(sim.model.predict(data, verbose=0), int8)
    with pytest.raises(ValueError, match="not a data type"):
        set_precision(sim, "conv", activation="fp7")


def test_amp_takes_float_candidates(data, tmp_path):
    keras.utils.set_random_seed(0)
    model = _model()
    sim = QuantizationSimModel(model, default_output_bw=16, default_param_bw=16)
    sim.compute_encodings(data)
    reference = model.predict(data, verbose=0)

    def score(candidate_model):
        out = candidate_model.predict(data, verbose=0)
        return -float(np.mean((out - reference) ** 2))

    result = choose_mixed_precision(
        sim,
        [(16, 16), ("fp16", "fp16"), ((8, "float"), (8, "float"))],
        score,
        allowed_accuracy_drop=1.0,
        results_dir=tmp_path,
        verbose=0,
    )
    sides = {side for chosen in result.chosen.values() for side in chosen}
    assert sides <= {16, "fp16", "fp8_e4m3"}
    assert result.relative_cost < 1.0  # a generous drop allows the cheapest
    sensitivity = next(iter(result.sensitivity.values()))
    assert set(sensitivity) == {"a16w16", "afp16wfp16", "afp8_e4m3wfp8_e4m3"}
