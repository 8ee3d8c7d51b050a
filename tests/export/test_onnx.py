"""export_onnx: QDQ ONNX for onnxruntime, FP32 ONNX + encodings for QNN."""

import json
import os

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from aimet_keras import export_onnx
from aimet_keras.sim import QuantizationSimModel
from benchmarks import emulation


@pytest.fixture(scope="module")
def resnet_onnx(resnet_sim, tmp_path_factory):
    return export_onnx(resnet_sim, tmp_path_factory.mktemp("onnx") / "r.onnx")


# Every level onnxruntime offers; the default session runs at the last.
_LEVELS = (
    ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
)


def _run(path, images, level=None):
    """Runs ``path`` at the default session options, or at ``level``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if level is not None:
        options.graph_optimization_level = level
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def _run_emulated(path, images, cpu, tmp_path):
    """``path``'s outputs at default session options on an emulated CPU."""
    if not emulation.can_emulate():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs qemu-x86_64 (.ci/run installs qemu-user)")
        pytest.skip(
            "qemu-x86_64 (Debian's qemu-user) is not installed, so no other "
            "CPU can be emulated; .ci/run installs it and CI never skips"
        )
    return emulation.run_onnx_emulated(path, images, cpu, tmp_path)


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


@pytest.mark.parametrize("level", (None, *_LEVELS), ids=str)
def test_qdq_model_agrees_with_the_sim(
    resnet_onnx, resnet_sim_predictions, test_images, level
):
    images, labels = test_images
    got = _run(resnet_onnx.qdq_path, images, level)
    expected = resnet_sim_predictions
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.995
    gap = abs(
        np.mean(got.argmax(1) == labels) - np.mean(expected.argmax(1) == labels)
    )
    assert gap <= 0.003


def test_every_kernel_is_uint8_behind_a_dequantize(resnet_onnx, resnet_sim):
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
        # Symmetric levels shifted by 128: onnxruntime's u8u8 kernels.
        assert ints.dtype == np.uint8
        zero = initializers[dequantize.input[2]]
        assert zero.dtype == np.uint8 and np.all(zero == 128)
        levels = ints.astype(np.int32) - 128
        assert levels.min() >= -128 and levels.max() <= 127
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
                levels * scale.reshape(-1, 1, 1, 1), expected, atol=1e-6
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

    # The FP32 model holds float kernels: put each on its file's grid.
    _quantize_params_by_file(model, data["param_encodings"])

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


def _quantize_params_by_file(model, param_encodings):
    """Replaces each initializer the 0.6.1 file names by its values on the
    file's grid (per channel on the consumer's output-channel axis)."""
    axes = {
        n.input[1]: {"Conv": 0, "MatMul": 1}[n.op_type]
        for n in model.graph.node
        if n.op_type in ("Conv", "MatMul")
    }
    for init in model.graph.initializer:
        entries = param_encodings.get(init.name)
        if entries is None:
            continue
        values = numpy_helper.to_array(init).astype(np.float64)
        shape = [1] * values.ndim
        if len(entries) > 1:
            shape[axes[init.name]] = len(entries)
        scale = np.array([e["scale"] for e in entries]).reshape(shape)
        offset = np.array([e["offset"] for e in entries]).reshape(shape)
        top = 2 ** entries[0]["bitwidth"] - 1
        levels = np.clip(np.round(values / scale) - offset, 0, top)
        init.CopyFrom(
            numpy_helper.from_array(
                ((levels + offset) * scale).astype(np.float32), init.name
            )
        )


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


@pytest.fixture(scope="module")
def gelu_layer_norm_sim():
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
    return sim, data


def _within_an_output_step(sim, got, expected):
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    return np.mean(np.abs(got - expected) <= step * 1.001)


@pytest.mark.parametrize("level", (None, *_LEVELS), ids=str)
def test_gelu_and_layer_norm_export_and_follow_the_sim(
    gelu_layer_norm_sim, tmp_path, level
):
    sim, data = gelu_layer_norm_sim
    exported = export_onnx(sim, tmp_path / "m.onnx")
    got = _run(exported.qdq_path, data, level)
    expected = sim.model.predict(data, verbose=0)
    assert _within_an_output_step(sim, got, expected) >= 0.98


@pytest.mark.parametrize("cpu", sorted(emulation.EMULATED_CPUS))
def test_matmuls_compute_the_same_on_other_cpus(
    gelu_layer_norm_sim, tmp_path, cpu
):
    _skip_if_native(cpu)
    sim, data = gelu_layer_norm_sim
    exported = export_onnx(sim, tmp_path / "m.onnx")
    got = _run_emulated(exported.qdq_path, data, cpu, tmp_path)
    expected = sim.model.predict(data, verbose=0)
    assert _within_an_output_step(sim, got, expected) >= 0.98


def test_onnxruntime_runs_the_kernels_in_integers(resnet_onnx, tmp_path):
    """The pairs fuse into integer kernels, all on uint8 x uint8."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    )
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(
        str(resnet_onnx.qdq_path), options, providers=["CPUExecutionProvider"]
    )
    model = onnx.load(tmp_path / "optimized.onnx")
    types = {i.name: i.data_type for i in model.graph.initializer}
    fused = [
        n for n in model.graph.node if n.op_type in ("QLinearConv", "QGemm")
    ]
    assert len(fused) == 10
    assert not [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    # QLinearConv's and QGemm's weight is input 3.
    assert {types[n.input[3]] for n in fused} == {onnx.TensorProto.UINT8}


def _cpu_flags():
    """This CPU's feature flags (empty where /proc/cpuinfo is unreadable)."""
    try:
        return set(open("/proc/cpuinfo").read().split())
    except OSError:
        return set()


def _skip_if_native(cpu):
    # An AVX2 host without AVX-512 or VNNI is the emulated "avx2" CPU: the
    # native runs of the other ONNX tests already run that kind's kernels.
    flags = _cpu_flags()
    native_avx2 = "avx2" in flags and not flags & {
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
    }
    if cpu == "avx2" and native_avx2:
        pytest.skip(
            "this host is an AVX2 CPU without AVX-512 or VNNI, the kind "
            "emulated here: the native ONNX runs already test its kernels"
        )


def _host_has_vnni():
    """Whether this CPU has VNNI (onnxruntime's u8s8 kernels are exact)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return True  # ARM's int8 dot products accumulate in 32 bits
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni"})


def test_int8_kernels_on_request_say_where_they_depart(
    gelu_layer_norm_sim, tmp_path
):
    sim, data = gelu_layer_norm_sim
    exported = export_onnx(sim, tmp_path / "m.onnx", weight_dtype="int8")
    model = onnx.load(exported.qdq_path)
    kernels = [
        numpy_helper.to_array(i)
        for i in model.graph.initializer
        if i.name.endswith("_quantized")
    ]
    assert [k.dtype for k in kernels] == [np.int8, np.int8]
    # The LayerNormalization's gamma, folded by tf2onnx, is the other one.
    folded, change = exported.changes
    assert folded.startswith("ln weight 'gamma': no kernel")
    assert "without VNNI" in change and "weight_dtype='uint8'" in change
    default = _run(export_onnx(sim, tmp_path / "u.onnx").qdq_path, data)
    if _host_has_vnni():
        # The same values as the default export's (without VNNI the int8
        # kernels depart, as the change says: the onnx_cpus benchmark).
        np.testing.assert_array_equal(_run(exported.qdq_path, data), default)
    with pytest.raises(ValueError, match="weight_dtype='int4'"):
        export_onnx(sim, tmp_path / "x.onnx", weight_dtype="int4")


def test_asymmetric_kernels_become_uint8_with_their_zero_points(tmp_path):
    import keras

    from aimet_keras.sim import read_quantsim_config

    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(8, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(3, name="fc2")(x)
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(0).normal(size=(128, 6)).astype("float32")
    config = read_quantsim_config("tflite_int8")
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


@pytest.mark.parametrize("cpu", sorted(emulation.EMULATED_CPUS))
def test_qdq_model_computes_the_same_on_other_cpus(
    resnet_onnx, resnet_sim, resnet_sim_predictions, test_images, cpu, tmp_path
):
    _skip_if_native(cpu)
    images = test_images[0][:500]
    native = _run(resnet_onnx.qdq_path, images)
    emulated = _run_emulated(resnet_onnx.qdq_path, images, cpu, tmp_path)
    # The same integer kernels' results, up to one output step where a
    # float requantization rounds the other way.
    assert _within_an_output_step(resnet_sim, emulated, native) >= 0.999
    expected = resnet_sim_predictions[:500].argmax(1)
    assert np.mean(emulated.argmax(1) == expected) >= 0.995


def test_kernels_of_ops_tf2onnx_renames_are_quantized_too(tmp_path):
    """The transformer's position conv becomes a Conv named ``Conv__<n>``."""
    from aimet_keras import zoo

    sim = QuantizationSimModel(
        zoo.load_model("transformer", compile=False), config_file="tflite_int8"
    )
    sim.compute_encodings(zoo.load_fashion_mnist_slice("calibration")[0][:64])
    exported = export_onnx(sim, tmp_path / "m.onnx")
    model = onnx.load(exported.qdq_path)
    producers = {out: node for node in model.graph.node for out in node.output}
    kernels = [
        n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")
    ]
    initializers = {i.name for i in model.graph.initializer}
    assert any(n.name.startswith("Conv__") for n in kernels)
    # No kernel left float (onnxruntime would quantize it on a grid of its
    # own): every constant kernel is the sim's, behind a DequantizeLinear.
    assert not [n.name for n in kernels if n.input[1] in initializers]
    constant = [
        n
        for n in kernels
        if n.input[1] in producers
        and producers[n.input[1]].op_type == "DequantizeLinear"
        and producers[n.input[1]].input[0] in initializers
    ]
    assert len(constant) == 15
    # Only the LayerNormalizations' gammas, which tf2onnx folds into other
    # constants, are held as the sim's values without an encoding.
    (change,) = exported.changes
    names, _, reason = change.partition(": ")
    assert all(n.endswith("weight 'gamma'") for n in names.split(", "))
    assert len(names.split(", ")) == 5 and "no entry" in reason


@pytest.mark.parametrize("level", [_LEVELS[0], _LEVELS[-1]])
def test_average_pooling_rounds_ties_as_the_sim_does(tmp_path, level):
    # TFLite's int8 average pooling rounds a tie away from the signed
    # integer zero, and the tflite_int8 sim with it; ONNX Runtime rounds
    # ties to even, fused (QLinearAveragePool) or not: an eighth of a 2x2
    # window's means a step apart without the export's nudge. The pools
    # read the quantized input, which every runtime holds alike (a
    # convolution's own roundings would put some windows a step apart).
    inputs = keras.Input((12, 12, 6), name="x")
    pooled = keras.layers.AveragePooling2D(2, name="pool")(inputs)
    same = keras.layers.AveragePooling2D(
        3, strides=1, padding="same", name="pool_same"
    )(inputs)
    sim = QuantizationSimModel(
        keras.Model(inputs, [pooled, same]), config_file="tflite_int8"
    )
    images = np.random.default_rng(0).normal(size=(32, 12, 12, 6))
    images = images.astype("float32")
    sim.compute_encodings(images)
    exported = export_onnx(sim, tmp_path / "pool.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(
        str(exported.qdq_path), options, providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {session.get_inputs()[0].name: images})
    expected = sim.model.predict(images, verbose=0)
    pool = sim.model.get_layer("pool").output_quantizers[0]
    step = float(pool.encoding.delta)
    for name, a, b in zip(("pool", "pool_same"), got, expected):
        # Integer means: the same level everywhere, ties included.
        assert np.max(np.abs(a - b)) < step / 2, name
