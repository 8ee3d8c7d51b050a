"""export_onnx holds the sim's kernels exactly, or says where it does not.

The QDQ kernels dequantize (in onnxruntime) to the sim's quantized kernels,
level -128 of a non-strict symmetric grid included; the FP32 model holds
the model's float kernels; 2.0.0 encodings give each per-channel kernel its
channel axis in the ONNX layout; whatever departs is in ``changes``.
"""

import json

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from onnx import numpy_helper

from aimet_keras import export_onnx
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import read_quantsim_config

# Each layer's kernel in ONNX's layout, written out here: Conv (and
# ConvTranspose) kernels HWIO to OIHW (IOHW), a depthwise kernel
# (h, w, C, M) to (C * M, 1, h, w), a Dense kernel as it is.
_TO_ONNX = {
    "Conv2D": lambda k: np.transpose(k, (3, 2, 0, 1)),
    "Conv2DTranspose": lambda k: np.transpose(k, (3, 2, 0, 1)),
    "DepthwiseConv2D": lambda k: np.transpose(k, (2, 3, 0, 1)).reshape(
        k.shape[2] * k.shape[3], 1, *k.shape[:2]
    ),
    "Dense": lambda k: k,
}
# The output-channel axis of each ONNX kernel op's weight.
_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}


def _per_channel_config(strict=False):
    """AIMET's default config with per-channel, non-strict symmetric
    kernels everywhere (Dense too)."""
    config = read_quantsim_config("default")
    config["defaults"]["per_channel_quantization"] = "True"
    config["defaults"]["strict_symmetric"] = str(strict)
    return config


def _heavy_tailed_kernels(model, seed=0):
    """Student-t kernels: tf_enhanced clips their tails, so the sim uses
    its grid's lowest level, -128."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for weight in layer.weights:
            if weight.path.endswith("kernel"):
                values = 0.1 * rng.standard_t(2, size=weight.shape)
                weight.assign(values.astype("float32"))


def _mixed_model():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(
        3, depth_multiplier=2, padding="same", name="depthwise"
    )(x)
    x = keras.layers.Conv2DTranspose(4, 2, strides=2, name="up")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    model = keras.Model(inputs, outputs)
    _heavy_tailed_kernels(model)
    return model


@pytest.fixture(scope="module")
def mixed():
    """A calibrated per-channel sim of the mixed model, its data and the
    float model."""
    model = _mixed_model()
    data = np.random.default_rng(1).normal(size=(64, 8, 8, 3))
    data = data.astype("float32")
    sim = QuantizationSimModel(
        model, quant_scheme="tf_enhanced", config_file=_per_channel_config()
    )
    sim.compute_encodings(data)
    return sim, data, model


@pytest.fixture(scope="module")
def mixed_export(mixed, tmp_path_factory):
    sim, *_ = mixed
    path = tmp_path_factory.mktemp("onnx") / "mixed.onnx"
    return export_onnx(sim, path, encoding_version="2.0.0")


def _sim_kernels(sim):
    """``{layer: (class name, quantized kernel, float kernel, encoding)}``,
    ONNX layout."""
    found = {}
    for wrapper in sim.quant_wrappers():
        for variable, quantizer in wrapper.quantized_weights():
            if variable.path.endswith("kernel") and quantizer.enabled:
                to_onnx = _TO_ONNX[type(wrapper.layer).__name__]
                found[wrapper.name] = (
                    type(wrapper.layer).__name__,
                    to_onnx(np.asarray(quantizer(variable))),
                    to_onnx(np.asarray(variable)),
                    quantizer.encoding,
                )
    return found


def _dequantized_by_onnxruntime(model, dequantize):
    """The output of one DequantizeLinear node of ``model``, run alone."""
    initializers = {i.name: i for i in model.graph.initializer}
    node = helper.make_node(
        "DequantizeLinear",
        list(dequantize.input),
        ["out"],
        **{a.name: helper.get_attribute_value(a) for a in dequantize.attribute},
    )
    graph = helper.make_graph(
        [node],
        "dequantize",
        [],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)],
        [initializers[name] for name in dequantize.input],
    )
    alone = helper.make_model(graph, opset_imports=model.opset_import)
    session = ort.InferenceSession(
        alone.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {})[0]


def _qdq_kernels(path):
    """``[(kernel op, DequantizeLinear, its integers, dequantized)]``."""
    model = onnx.load(path)
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in _CHANNEL_AXIS:
            continue
        dequantize = producers.get(node.input[1])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        if dequantize.input[0] not in initializers:
            continue  # an activation's pair, not a kernel
        ints = numpy_helper.to_array(initializers[dequantize.input[0]])
        values = _dequantized_by_onnxruntime(model, dequantize)
        found.append((node, dequantize, ints, values))
    return found


def _which(kernels, values):
    """The layer whose quantized kernel ``values`` are."""
    (layer,) = [
        name
        for name, (_, quantized, _, _) in kernels.items()
        if quantized.shape == values.shape
        and np.allclose(quantized, values, rtol=1e-6, atol=0)
    ]
    return layer


def test_every_kernel_dequantizes_to_the_sims_levels_exactly(
    mixed, mixed_export
):
    sim, *_ = mixed
    kernels = _sim_kernels(sim)
    model = onnx.load(mixed_export.qdq_path)
    inits = {i.name: i for i in model.graph.initializer}
    seen, lowest = set(), 0
    for node, dequantize, ints, values in _qdq_kernels(mixed_export.qdq_path):
        # Which layer: its quantized kernel is what onnxruntime dequantizes.
        layer = _which(kernels, values)
        _, quantized, _, encoding = kernels[layer]
        zero = numpy_helper.to_array(inits[dequantize.input[2]])
        scale = numpy_helper.to_array(inits[dequantize.input[1]])
        axis = _CHANNEL_AXIS[node.op_type]
        assert helper.get_attribute_value(dequantize.attribute[0]) == axis
        shape = [1] * ints.ndim
        shape[axis] = -1
        levels = ints.astype(np.int64) - zero.astype(np.int64).reshape(shape)
        np.testing.assert_allclose(
            scale, np.asarray(encoding.delta, np.float32), rtol=1e-7
        )
        expected = np.round(quantized / scale.reshape(shape))
        np.testing.assert_array_equal(levels, expected)
        lowest += int(np.sum(levels == -128))
        seen.add(layer)
    assert seen == set(kernels), "kernels left float in the QDQ model"
    # tf_enhanced clips the kernels' tails: the sim uses level -128.
    assert lowest > 0


def test_fp32_model_holds_the_float_kernels(mixed, mixed_export):
    sim, *_ = mixed
    kernels = _sim_kernels(sim)
    qdq = {
        node.name: _which(kernels, values)
        for node, _, _, values in _qdq_kernels(mixed_export.qdq_path)
    }
    model = onnx.load(mixed_export.fp32_path)
    initializers = {
        i.name: numpy_helper.to_array(i) for i in model.graph.initializer
    }
    held = {}
    for node in model.graph.node:
        if node.op_type in _CHANNEL_AXIS and node.name in qdq:
            held[qdq[node.name]] = initializers[node.input[1]]
    assert set(held) == set(kernels)
    for layer, values in held.items():
        np.testing.assert_array_equal(values, kernels[layer][2], layer)


def test_fp32_model_computes_the_float_model(mixed, mixed_export):
    _, data, model = mixed
    session = ort.InferenceSession(
        str(mixed_export.fp32_path), providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {"image": data})[0]
    expected = model.predict(data, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_2_0_0_axis_is_the_onnx_channel_axis(mixed_export):
    model = onnx.load(mixed_export.fp32_path)
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    axes = {
        node.input[1]: _CHANNEL_AXIS[node.op_type]
        for node in model.graph.node
        if node.op_type in _CHANNEL_AXIS
    }
    data = json.loads(mixed_export.encodings_path.read_text())
    entries = {e["name"]: e for e in data["encodings"]}
    kernels = [name for name in axes if name in entries]
    assert len(kernels) == 4
    for name in kernels:
        entry = entries[name]
        assert entry["axis"] == axes[name], name
        assert len(entry["y_scale"]) == shapes[name][axes[name]], name
    assert {axes[name] for name in kernels} == {0, 1}


def test_qdq_model_follows_the_sim_and_says_nothing_changed(
    mixed, mixed_export
):
    sim, data, _ = mixed
    assert mixed_export.changes == ()
    session = ort.InferenceSession(
        str(mixed_export.qdq_path), providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {"image": data})[0]
    expected = sim.model.predict(data, verbose=0)
    step = float(sim.model.get_layer("fc").output_quantizers[0].encoding.delta)
    assert np.mean(np.abs(got - expected) <= step * 1.001) >= 0.99


def test_strict_grids_keep_their_levels(tmp_path):
    """A strict symmetric grid has no level -128 and none appears."""
    model = _mixed_model()
    data = np.random.default_rng(1).normal(size=(32, 8, 8, 3))
    data = data.astype("float32")
    sim = QuantizationSimModel(
        model,
        quant_scheme="tf_enhanced",
        config_file=_per_channel_config(strict=True),
    )
    sim.compute_encodings(data)
    exported = export_onnx(sim, tmp_path / "strict.onnx")
    kernels = _sim_kernels(sim)
    found = _qdq_kernels(exported.qdq_path)
    assert {_which(kernels, values) for *_, values in found} == set(kernels)
    for _, _, ints, _ in found:
        assert ints.min() >= 1  # uint8 at zero point 128: level -127
    assert exported.changes == ()


def test_weights_folded_into_other_constants_are_named(tmp_path):
    """PReLU's alpha is folded by tf2onnx (``-alpha``): the export says so."""
    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(8, name="fc1")(inputs)
    x = keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25), name="prelu"
    )(x)
    outputs = keras.layers.Dense(3, name="fc2")(x)
    sim = QuantizationSimModel(
        keras.Model(inputs, outputs), config_file="tflite_int8"
    )
    sim.compute_encodings(
        np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    )
    exported = export_onnx(sim, tmp_path / "prelu.onnx")
    (change,) = exported.changes
    assert change.startswith("prelu weight 'alpha': no kernel")
    assert "no entry" in change
    data = json.loads(exported.encodings_path.read_text())
    assert len(data["param_encodings"]) == 2  # the two Dense kernels


def test_a_kernel_whose_layout_is_ambiguous_is_named(tmp_path):
    """Quantized, the kernel is its own transpose; its floats are not: the
    FP32 model cannot know which float kernel it holds, and says so."""
    inputs = keras.Input((2,), name="x")
    outputs = keras.layers.Dense(2, use_bias=False, name="fc")(inputs)
    model = keras.Model(inputs, outputs)
    kernel = np.array([[1.0, 0.5], [0.502, 1.0]], np.float32)
    model.get_layer("fc").kernel.assign(kernel)
    sim = QuantizationSimModel(model, quant_scheme="tf")
    sim.compute_encodings(
        np.random.default_rng(0).normal(size=(16, 2)).astype("float32")
    )
    quantizer = sim.model.get_layer("fc").param_quantizers["kernel"]
    quantized = np.asarray(quantizer(kernel))
    np.testing.assert_array_equal(quantized, quantized.T)  # the premise
    exported = export_onnx(sim, tmp_path / "m.onnx")
    (change,) = exported.changes
    assert change.startswith("fc weight 'kernel': several layouts")
    fp32 = onnx.load(exported.fp32_path)
    (held,) = [numpy_helper.to_array(i) for i in fp32.graph.initializer]
    np.testing.assert_allclose(held, quantized, rtol=1e-6)


def test_int8_kernels_keep_level_minus_128(mixed, tmp_path):
    sim, *_ = mixed
    exported = export_onnx(sim, tmp_path / "m.onnx", weight_dtype="int8")
    found = _qdq_kernels(exported.qdq_path)
    assert len(found) == 4
    assert all(ints.dtype == np.int8 for _, _, ints, _ in found)
    assert min(int(ints.min()) for _, _, ints, _ in found) == -128
    # The only change is the one int8 kernels always bring.
    (change,) = exported.changes
    assert "without VNNI" in change
