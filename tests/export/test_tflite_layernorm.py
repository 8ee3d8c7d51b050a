"""LayerNormalization in integer TFLite: decomposed in the sim and the file."""

import math

import keras
import numpy as np
import pytest

from aimet_keras import export_tflite
from aimet_keras.export import layer_outputs as layer_outputs_lib
from aimet_keras.export import tflite as tflite_lib
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import layer_norm as layer_norm_lib
from tests.export import run_tflite

_OPTIONS = {
    "int8": {"config_file": "tflite_int8"},
    "16x8": {"config_file": "tflite_16x8", "default_output_bw": 16},
}


def _interpreter(exported):
    return tflite_lib.load_interpreter(model_path=str(exported.path))


def _assert_integer(ops):
    """No op but the boundary (de)quantize reads or writes a float."""
    for name, inputs, outputs in ops:
        if name not in ("QUANTIZE", "DEQUANTIZE"):
            assert not any(d.startswith("float") for d in inputs + outputs)


def _norm_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 12), name="x")
    x = keras.layers.Dense(16, name="fc1")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    outputs = keras.layers.Dense(6, name="fc2")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    norm = model.get_layer("ln")
    norm.gamma.assign(rng.uniform(0.5, 1.5, 16))
    norm.beta.assign(rng.normal(size=16) * 0.2)
    return model


def _data(shape=(5, 12)):
    rng = np.random.default_rng(0)
    return (2 * rng.normal(size=(128, *shape))).astype("float32")


@pytest.fixture(scope="module")
def int8_sim():
    sim = QuantizationSimModel(_norm_model(), **_OPTIONS["int8"])
    sim.compute_encodings(_data())
    return sim


def _qdq(values, encoding):
    delta, offset = float(encoding.delta), float(encoding.offset)
    levels = np.clip(
        np.round(values / delta) - offset, 0, 2**encoding.bitwidth - 1
    )
    return (levels + offset) * delta


def _numpy_layer_norm(x, wrapper):
    """The decomposition's math in numpy, on the sim's grids."""
    grid = {k: q.encoding for k, q in wrapper.internal_quantizers.items()}
    weights = {v.name: np.asarray(q(v)) for v, q in wrapper.quantized_weights()}
    channels = x.shape[-1]
    x = x.astype(np.float64)
    mean = _qdq(x.mean(-1, keepdims=True), grid["mean"])
    centred = _qdq(x - mean, grid["centred"])
    sums = _qdq((centred**2).sum(-1, keepdims=True), grid["sum_squares"])
    floor = channels * wrapper.layer.epsilon
    rsqrt = _qdq(1 / np.sqrt(np.maximum(sums, floor)), grid["rsqrt"])
    normalized = _qdq(centred * rsqrt, grid["normalized"])
    out = normalized * math.sqrt(channels) * weights["gamma"] + weights["beta"]
    return _qdq(out, wrapper.output_quantizers[0].encoding)


def test_tflite_configs_quantize_the_inner_tensors(int8_sim):
    norm = int8_sim.model.get_layer("ln")
    assert tuple(norm.internal_quantizers) == layer_norm_lib.LAYER_NORM_TENSORS
    assert all(q.enabled for q in norm.internal_quantizers.values())
    # Zero point 0 for the matmul operand (XNNPACK needs it).
    assert int(norm.internal_quantizers["centred"].encoding.offset) == -127


def test_sim_matches_a_numpy_reference_of_the_decomposition(int8_sim):
    data = _data()[:32]
    outputs = layer_outputs_lib.sim_layer_outputs(int8_sim, data)
    expected = _numpy_layer_norm(outputs["fc1"], int8_sim.model.get_layer("ln"))
    step = layer_outputs_lib.output_steps(int8_sim)["ln"]
    # float32 against float64 sums: a level apart at a rounding tie at most.
    close = np.abs(outputs["ln"] - expected) <= step * 1.001
    assert close.mean() >= 0.999


def test_default_config_keeps_layer_norm_whole():
    sim = QuantizationSimModel(_norm_model(), quant_scheme="tf")
    sim.compute_encodings(_data())
    norm = sim.model.get_layer("ln")
    assert norm.internal_quantizers == {}
    # One op: its input through the layer's own computation (with float
    # gamma, a level apart where the sim's 8-bit gamma rounds across).
    outputs = layer_outputs_lib.sim_layer_outputs(sim, _data()[:8])
    expected = norm.output_quantizers[0](norm.layer(outputs["fc1"]))
    step = layer_outputs_lib.output_steps(sim)["ln"]
    assert np.max(np.abs(outputs["ln"] - expected)) <= step * 1.001


def test_decomposition_with_quantizers_off_is_the_layer():
    norm = keras.layers.LayerNormalization(epsilon=1e-6)
    x = _data((7, 24))[:4]
    expected = np.asarray(norm(x))
    with layer_norm_lib.layer_norm_hooks(norm, lambda name, t: t):
        got = np.asarray(norm(x))
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_int8_export_is_integer_and_follows_the_sim(int8_sim, tmp_path):
    exported = export_tflite(int8_sim, tmp_path / "m.tflite")
    assert exported.changes == ()
    ops = tflite_lib.tflite_ops(_interpreter(exported))
    names = [name for name, _, _ in ops]
    for op in ("MEAN", "SUB", "BATCH_MATMUL", "RSQRT", "MUL"):
        assert op in names
    _assert_integer(ops)
    data = _data()
    got = run_tflite(exported.path, data)
    expected = int8_sim.model.predict(data, verbose=0)
    step = layer_outputs_lib.output_steps(int8_sim)["fc2"]
    difference = np.abs(got - expected) / step
    assert np.mean(difference <= 1.001) >= 0.99
    assert difference.max() <= 4.001


def test_16x8_export_is_integer_and_reports_the_rsqrt_table(tmp_path):
    sim = QuantizationSimModel(_norm_model(), **_OPTIONS["16x8"])
    sim.compute_encodings(_data())
    exported = export_tflite(sim, tmp_path / "m.tflite", mode="16x8")
    assert any("RSQRT" in change for change in exported.changes)
    _assert_integer(tflite_lib.tflite_ops(_interpreter(exported)))
    data = _data()
    got = run_tflite(exported.path, data)
    expected = sim.model.predict(data, verbose=0)
    # TFLite's int16 RSQRT is a lookup table (about 0.5% off near the top
    # of its range): within 1% of the output's range.
    span = float(np.ptp(expected))
    assert np.max(np.abs(got - expected)) <= 0.01 * span
    assert np.mean(np.abs(got - expected) <= 0.002 * span) >= 0.9


def test_default_config_is_refused_with_the_fix(tmp_path):
    sim = QuantizationSimModel(_norm_model(), quant_scheme="tf")
    sim.compute_encodings(_data())
    with pytest.raises(ValueError, match=r"'ln'.*tflite_int8.*export_onnx"):
        export_tflite(sim, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_normalization_over_another_axis_is_refused_naming_it(tmp_path):
    inputs = keras.Input((5, 12), name="x")
    x = keras.layers.LayerNormalization(axis=1, name="ln_time")(inputs)
    outputs = keras.layers.Dense(3, name="fc")(x)
    sim = QuantizationSimModel(
        keras.Model(inputs, outputs), "tf", **_OPTIONS["int8"]
    )
    sim.compute_encodings(_data())
    with pytest.raises(ValueError, match=r"'ln_time'.*last axis"):
        export_tflite(sim, tmp_path / "m.tflite")


def _transformer_block(activation="gelu"):
    """A pre-norm encoder block, tiny: LayerNorm, attention, GELU MLP."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 16), name="tokens")
    x = keras.layers.Dense(16, name="embed")(inputs)
    y = keras.layers.LayerNormalization(epsilon=1e-6, name="ln1")(x)
    y = keras.layers.MultiHeadAttention(2, 8, name="attention")(y, y)
    x = keras.layers.Add(name="add1")([x, y])
    y = keras.layers.LayerNormalization(epsilon=1e-6, name="ln2")(x)
    y = keras.layers.Dense(32, name="mlp1")(y)
    y = keras.layers.Activation(activation, name="mlp_activation")(y)
    y = keras.layers.Dense(16, name="mlp2")(y)
    x = keras.layers.Add(name="add2")([x, y])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    model = keras.Model(inputs, outputs)
    # Trained models' biases are not zero: the bias must stay inside the
    # integer FULLY_CONNECTED.
    for layer in model.layers:
        for weight in layer.weights:
            if "bias" in weight.path:
                weight.assign(np.full(weight.shape, 0.1, "float32"))
    return model


@pytest.mark.parametrize("mode", ["int8", "16x8"])
def test_transformer_block_exports_integer_and_follows_the_sim(tmp_path, mode):
    # TFLite has no int16 GELU.
    model = _transformer_block("gelu" if mode == "int8" else "relu")
    sim = QuantizationSimModel(model, **_OPTIONS[mode])
    data = _data((6, 16))
    sim.compute_encodings(data)
    exported = export_tflite(sim, tmp_path / "m.tflite", mode=mode)
    _assert_integer(tflite_lib.tflite_ops(_interpreter(exported)))
    got = run_tflite(exported.path, data)
    expected = sim.model.predict(data, verbose=0)
    step = layer_outputs_lib.output_steps(sim)["logits"]
    difference = np.abs(got - expected) / step
    # 16x8: TFLite's int16 RSQRT is a table, within about 0.5% (a few
    # steps of a 16-bit grid).
    steps = 1.001 if mode == "int8" else 4.001
    assert np.mean(difference <= steps) >= 0.95
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.95


def _three_way_add():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 12), name="x")
    branches = [keras.layers.Dense(8, name=f"fc{i}")(inputs) for i in range(3)]
    outputs = keras.layers.Add(name="add3")(branches)
    return keras.Model(inputs, outputs)


def test_three_input_add_quantizes_its_partial_sum_and_exports_integer(
    tmp_path,
):
    # TFLite's ADD takes two inputs: the partial sum is an int8 tensor.
    default = QuantizationSimModel(_three_way_add(), quant_scheme="tf")
    assert default.model.get_layer("add3").internal_quantizers == {}
    sim = QuantizationSimModel(_three_way_add(), **_OPTIONS["int8"])
    sim.compute_encodings(_data())
    add = sim.model.get_layer("add3")
    assert list(add.internal_quantizers) == ["sum_2"]
    exported = export_tflite(sim, tmp_path / "m.tflite")
    _assert_integer(tflite_lib.tflite_ops(_interpreter(exported)))
    data = _data()
    got = run_tflite(exported.path, data)
    expected = sim.model.predict(data, verbose=0)
    step = layer_outputs_lib.output_steps(sim)["add3"]
    assert np.mean(np.abs(got - expected) <= step * 1.001) >= 0.99
