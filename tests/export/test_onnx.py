"""export_onnx: QDQ ONNX for onnxruntime, FP32 ONNX + encodings for QNN."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from aimet_keras import export_onnx
from aimet_keras.sim import QuantizationSimModel


@pytest.fixture(scope="module")
def resnet_onnx(resnet_sim, tmp_path_factory):
    return export_onnx(resnet_sim, tmp_path_factory.mktemp("onnx") / "r.onnx")


def _run(path, images):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_writes_three_files_named_after_the_path(resnet_onnx):
    assert resnet_onnx.qdq_path.name == "r.onnx"
    assert resnet_onnx.fp32_path.name == "r.fp32.onnx"
    assert resnet_onnx.encodings_path.name == "r.fp32.encodings"
    assert sorted(p.name for p in resnet_onnx.qdq_path.parent.iterdir()) == [
        "r.fp32.encodings",
        "r.fp32.onnx",
        "r.onnx",
    ]
    assert resnet_onnx.changes == ()


def test_qdq_model_agrees_with_the_sim(
    resnet_onnx, resnet_sim_predictions, test_images
):
    images, labels = test_images
    got = _run(resnet_onnx.qdq_path, images)
    expected = resnet_sim_predictions
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.995
    gap = abs(
        np.mean(got.argmax(1) == labels) - np.mean(expected.argmax(1) == labels)
    )
    assert gap <= 0.003


def test_every_kernel_is_int8_behind_a_dequantize(resnet_onnx, resnet_sim):
    model = onnx.load(resnet_onnx.qdq_path)
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {
        i.name: numpy_helper.to_array(i) for i in model.graph.initializer
    }
    kernels = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul")]
    assert len(kernels) == 10
    wrappers = {w.name: w for w in resnet_sim.quant_wrappers()}
    for node in kernels:
        dequantize = producers[node.input[1]]
        assert dequantize.op_type == "DequantizeLinear"
        ints = initializers[dequantize.input[0]]
        assert ints.dtype == np.int8
        scale = initializers[dequantize.input[1]]
        if node.op_type == "Conv":
            # The sim's per-channel kernel, OIHW here, HWIO in Keras.
            layer = node.name.split("/")[1].rsplit("_", 1)[0]
            variable, quantizer = next(
                (v, q)
                for v, q in wrappers[layer].quantized_weights()
                if v.path.endswith("kernel")
            )
            expected = np.transpose(
                np.asarray(quantizer(variable)), (3, 2, 0, 1)
            )
            np.testing.assert_allclose(
                ints * scale.reshape(-1, 1, 1, 1), expected, atol=1e-6
            )


def test_activation_pairs_carry_the_sims_grids(resnet_onnx, resnet_sim):
    model = onnx.load(resnet_onnx.qdq_path)
    initializers = {
        i.name: numpy_helper.to_array(i) for i in model.graph.initializer
    }
    first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert first.input[0] == "image"
    scale, zero = initializers[first.input[1]], initializers[first.input[2]]
    encoding = resnet_sim.quant_wrappers()[0].input_quantizers[0].encoding
    assert float(scale) == pytest.approx(float(encoding.delta), rel=1e-6)
    assert int(zero) == -int(encoding.offset)


def test_fp32_model_and_encodings_use_the_same_names(resnet_onnx, resnet_sim):
    model = onnx.load(resnet_onnx.fp32_path)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"}
    names = {t for n in model.graph.node for t in [*n.input, *n.output]}
    names |= {i.name for i in model.graph.initializer}
    data = json.loads(resnet_onnx.encodings_path.read_text())
    activations, params = data["activation_encodings"], data["param_encodings"]
    assert "image" in activations and "probabilities" in activations
    assert len(params) == 10
    assert set(activations) <= names and set(params) <= names
    # Per-channel kernels: one entry per output channel, symmetric int8.
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    entries = params[conv.input[1]]
    initializer = next(
        i for i in model.graph.initializer if i.name == conv.input[1]
    )
    assert len(entries) == initializer.dims[0]
    assert all(
        e["is_symmetric"] == "True" and e["bitwidth"] == 8 for e in entries
    )


def test_fp32_model_applies_the_encodings_to_match_the_qdq_model(
    resnet_onnx, test_images
):
    """FP32 ONNX with its encodings' grids is the QDQ model (numpy QDQ)."""
    model = onnx.load(resnet_onnx.fp32_path)
    data = json.loads(resnet_onnx.encodings_path.read_text())
    from onnx import helper

    # Re-insert each activation encoding as Q/DQ by hand from the file.
    nodes, extra = [], []
    renamed = {}
    for name, (entry,) in data["activation_encodings"].items():
        scale = np.float32(entry["scale"])
        zero = np.uint8(-entry["offset"])
        extra += [
            numpy_helper.from_array(np.array(scale), f"{name}__s"),
            numpy_helper.from_array(np.array(zero), f"{name}__z"),
        ]
        nodes += [
            helper.make_node(
                "QuantizeLinear",
                [name, f"{name}__s", f"{name}__z"],
                [f"{name}__q"],
            ),
            helper.make_node(
                "DequantizeLinear",
                [f"{name}__q", f"{name}__s", f"{name}__z"],
                [f"{name}__dq"],
            ),
        ]
        renamed[name] = f"{name}__dq"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    graph_nodes = list(model.graph.node)
    del model.graph.node[:]
    # Q/DQ nodes right after their producers: topological by appending all
    # and letting onnx sort is not available, so place them first for the
    # graph input and after producers otherwise.
    placed = []
    for name in list(renamed):
        if name in {i.name for i in model.graph.input}:
            placed += [
                n
                for n in nodes
                if n.input[0] == name or n.input[0] == f"{name}__q"
            ]
    for node in graph_nodes:
        placed.append(node)
        for out in node.output:
            placed += [n for n in nodes if n.input[0] in (out, f"{out}__q")]
    model.graph.node.extend(placed)
    model.graph.initializer.extend(extra)
    for output in model.graph.output:
        if output.name in renamed:
            output.name = renamed[output.name]
    images, _ = test_images
    by_file = _run_model(model, images[:500])
    qdq = _run(resnet_onnx.qdq_path, images[:500])
    assert np.mean(by_file.argmax(1) == qdq.argmax(1)) >= 0.995


def _run_model(model, images):
    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_16_bit_grids_are_refused(tmp_path):
    import keras

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    sim = QuantizationSimModel(model, default_output_bw=16)
    sim.compute_encodings(np.random.rand(8, 4).astype("float32"))
    with pytest.raises(ValueError, match="16-bit.*mode='16x8'"):
        export_onnx(sim, tmp_path / "m.onnx")
    uncalibrated = QuantizationSimModel(model)
    with pytest.raises(ValueError, match="not calibrated"):
        export_onnx(uncalibrated, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset 13"):
        export_onnx(sim, tmp_path / "m.onnx", opset=11)
    assert list(tmp_path.iterdir()) == []


def test_gelu_and_layer_norm_export_and_follow_the_sim(tmp_path):
    """Exact GELU (TF's Erfc, which tf2onnx lacks) and LayerNormalization."""
    import keras

    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(8, name="fc1")(inputs)
    x = keras.layers.Activation("gelu", name="gelu")(x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    outputs = keras.layers.Dense(3, name="fc2")(x)
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(0).normal(size=(256, 6)).astype("float32")
    sim = QuantizationSimModel(model, config_file="tflite_int8")
    sim.compute_encodings(data)
    exported = export_onnx(sim, tmp_path / "m.onnx")
    got = _run(exported.qdq_path, data)
    expected = sim.model.predict(data, verbose=0)
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    assert np.mean(np.abs(got - expected) <= step * 1.001) >= 0.98


def test_asymmetric_kernels_become_uint8_with_their_zero_points(tmp_path):
    import keras

    from aimet_keras.sim import load_quantsim_config

    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(8, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(3, name="fc2")(x)
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(0).normal(size=(128, 6)).astype("float32")
    source = load_quantsim_config("tflite_int8").source
    config = json.loads(__import__("pathlib").Path(source).read_text())
    config["defaults"]["params"]["is_symmetric"] = "False"
    sim = QuantizationSimModel(model, config_file=config)
    sim.compute_encodings(data)
    exported = export_onnx(sim, tmp_path / "m.onnx")
    onnx_model = onnx.load(exported.qdq_path)
    kernels = [
        i for i in onnx_model.graph.initializer if i.name.endswith("_quantized")
    ]
    assert len(kernels) == 2
    assert all(numpy_helper.to_array(k).dtype == np.uint8 for k in kernels)
    got = _run(exported.qdq_path, data)
    expected = sim.model.predict(data, verbose=0)
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    assert np.max(np.abs(got - expected)) <= step * 1.001
