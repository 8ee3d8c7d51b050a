"""Encodings that name the ONNX copy's tensors load into the Keras sim."""

import json
import warnings

import keras
import numpy as np
import pytest

from aimet_keras import export_onnx
from aimet_keras.export import onnx as onnx_lib
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim.export import load_encodings


def _model(bias="zeros"):
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(
        4, 3, activation="relu", name="conv", bias_initializer=bias
    )(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def _sim(model, data, scale=1.0):
    sim = QuantizationSimModel(model)
    sim.compute_encodings(data * scale)
    return sim


def _load_and_compare(target, source, path, data):
    """Loads ``path`` into ``target`` (no quantizer may be left disabled)
    and checks it computes ``source``; returns what was set."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = load_encodings(target, path)
    np.testing.assert_array_equal(
        target.model.predict(data, verbose=0),
        source.model.predict(data, verbose=0),
    )
    return done


@pytest.mark.parametrize("version", ["0.6.1", "1.0.0", "2.0.0"])
def test_export_onnx_encodings_load_back_by_onnx_names(tmp_path, version):
    model = _model()
    data = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    data = data.astype("float32")
    source = _sim(model, data)
    result = export_onnx(source, tmp_path / "m.onnx", encoding_version=version)
    # Another calibration: loading must replace every grid with the file's.
    target = _sim(model, data, scale=3.0)
    done = _load_and_compare(target, source, result.encodings_path, data)
    assert len(done) == len(
        json.loads(result.encodings_path.read_text())[
            "encodings" if version == "2.0.0" else "param_encodings"
        ]
    ) + (
        0
        if version == "2.0.0"
        else len(
            json.loads(result.encodings_path.read_text())[
                "activation_encodings"
            ]
        )
    )


def test_onnx_tensor_names_name_every_tensor_of_the_file(tmp_path):
    model = _model()
    data = np.random.default_rng(1).uniform(size=(8, 8, 8, 1))
    sim = _sim(model, data.astype("float32"))
    result = export_onnx(sim, tmp_path / "m.onnx")
    names = onnx_lib.onnx_tensor_names(sim)
    written = json.loads(result.encodings_path.read_text())
    in_file = set(written["param_encodings"]) | set(
        written["activation_encodings"]
    )
    assert in_file <= set(names)
    # (Depthwise kernels: export_onnx maps them in a change of its own.)
    assert {"conv/kernel:0", "fc/kernel:0", "image:0"} <= set(names.values())


def test_a_file_naming_unknown_tensors_is_refused(tmp_path):
    model = _model()
    data = np.random.default_rng(2).uniform(size=(8, 8, 8, 1))
    sim = _sim(model, data.astype("float32"))
    path = tmp_path / "other.encodings"
    entry = [
        {
            "bitwidth": 8,
            "dtype": "int",
            "is_symmetric": "False",
            "max": 1.0,
            "min": 0.0,
            "offset": 0,
            "scale": 1 / 255,
        }
    ]
    path.write_text(
        json.dumps(
            {
                "version": "0.6.1",
                "activation_encodings": {"not_in_this_model:0": entry},
                "param_encodings": {},
            }
        )
    )
    with pytest.raises(ValueError, match="not_in_this_model"):
        load_encodings(sim, path)


@pytest.mark.parametrize(
    "config, scale",
    [("default", "any"), ("tflite_int8", "product"), ("tflite_int8", "any")],
)
def test_32_bit_bias_encodings_of_the_onnx_copy(tmp_path, config, scale):
    # AIMET's 2.0.0 files (export_int32_bias, its default) hold int32
    # encodings of the convolutions' biases, named as the ONNX copy's
    # (tf2onnx drops a bias of zeros), on input step x kernel step.
    model = _model(keras.initializers.RandomUniform(0.1, 0.3, seed=0))
    data = np.random.default_rng(3).uniform(size=(16, 8, 8, 1))
    data = data.astype("float32")
    source = QuantizationSimModel(model, config_file=config)
    source.compute_encodings(data)
    result = export_onnx(source, tmp_path / "m.onnx", encoding_version="2.0.0")
    names = onnx_lib.onnx_tensor_names(source)
    bias = next(n for n, ours in names.items() if ours == "conv/bias:0")
    steps = [1e-5] * 4
    if scale == "product":
        own = source.quant_wrappers()[0].param_quantizers["bias"].encoding
        steps = np.asarray(own.delta, np.float64).tolist()
    written = json.loads(result.encodings_path.read_text())
    written["encodings"].append(
        {"name": bias, "output_dtype": "int32", "y_scale": steps, "axis": 0}
    )
    path = tmp_path / "aimet.encodings"
    path.write_text(json.dumps(written))
    target = QuantizationSimModel(model, config_file=config)
    target.compute_encodings(data * 3.0)
    quantizer = target.quant_wrappers()[0].param_quantizers["bias"]
    if config == "default" or scale == "product":
        done = _load_and_compare(target, source, path, data)
        # Float biases stay float; a 32-bit one keeps input step x kernel
        # step (which the file's grid is).
        assert quantizer.enabled == (config == "tflite_int8")
        assert quantizer.tied_to_product == (config == "tflite_int8")
        assert ("conv/bias:0" in done) == (config == "tflite_int8")
        return
    # Another grid: the file's, as for any tied grid a file sets.
    load_encodings(target, path)
    assert not quantizer.tied_to_product
    np.testing.assert_allclose(quantizer.encoding.delta, steps, rtol=1e-6)


def test_an_unknown_name_among_onnx_names_is_the_one_named(tmp_path):
    model = _model()
    data = np.random.default_rng(4).uniform(size=(8, 8, 8, 1))
    sim = _sim(model, data.astype("float32"))
    result = export_onnx(sim, tmp_path / "m.onnx")
    written = json.loads(result.encodings_path.read_text())
    entry = next(iter(written["activation_encodings"].values()))
    written["activation_encodings"]["Conv__999:0"] = entry
    path = tmp_path / "other.encodings"
    path.write_text(json.dumps(written))
    with pytest.raises(ValueError, match=r"'Conv__999:0' is a tensor of nei"):
        load_encodings(sim, path)


def _aimet_style_file(tmp_path, sim, extra_scale):
    """export_onnx's 2.0.0 file plus what AIMET's 2.0.0 files add for the
    Conv outputs the Keras sim fuses with their Relu: the last Relu's
    output grid copied to its input (AIMET's export does this), and the
    first Relu's input with a grid of its own, ``extra_scale`` (a quantizer
    AIMET's sim has, as it has for depthwise Conv outputs)."""
    import onnx

    result = export_onnx(sim, tmp_path / "m.onnx", encoding_version="2.0.0")
    written = json.loads(result.encodings_path.read_text())
    by_name = {entry["name"]: entry for entry in written["encodings"]}
    fp32 = onnx.load(result.fp32_path)
    relus = [n for n in fp32.graph.node if n.op_type == "Relu"]
    assert len(relus) == 2 and all(n.output[0] in by_name for n in relus)
    copied, extra = relus[1].input[0], relus[0].input[0]
    written["encodings"] += [
        dict(by_name[relus[1].output[0]], name=copied),
        {"name": extra, "output_dtype": "uint8", "y_scale": extra_scale},
    ]
    path = tmp_path / "aimet.encodings"
    path.write_text(json.dumps(written))
    return path, copied, extra


def test_aimet_entries_for_tensors_the_sim_does_not_quantize_are_named(
    tmp_path,
):
    model = _model()
    data = np.random.default_rng(5).uniform(size=(16, 8, 8, 1))
    data = data.astype("float32")
    source = _sim(model, data)
    path, copied, extra = _aimet_style_file(tmp_path, source, 0.5)
    target = _sim(model, data, scale=3.0)
    with pytest.warns(UserWarning) as caught:
        load_encodings(target, path)
    (message,) = [str(w.message) for w in caught]
    assert "2 entries name tensors of the model's ONNX copy" in message
    assert "1 repeat the grid of a tensor the sim quantizes" in message
    assert f"{copied} (= " in message and "across Relu)" in message
    assert "1 are quantizers of AIMET's sim that this sim lacks" in message
    assert repr(extra) in message
    # Every quantizer of the sim took the file's grid: none was disabled.
    np.testing.assert_array_equal(
        target.model.predict(data, verbose=0),
        source.model.predict(data, verbose=0),
    )


def test_a_file_naming_only_tensors_the_sim_does_not_quantize_is_refused(
    tmp_path,
):
    model = _model()
    data = np.random.default_rng(6).uniform(size=(8, 8, 8, 1))
    sim = _sim(model, data.astype("float32"))
    path, copied, extra = _aimet_style_file(tmp_path, sim, 0.5)
    written = json.loads(path.read_text())
    written["encodings"] = [
        e for e in written["encodings"] if e["name"] in (copied, extra)
    ]
    path.write_text(json.dumps(written))
    with pytest.raises(ValueError, match="not a tensor of this sim"):
        load_encodings(sim, path)


def test_2_0_0_files_give_a_depthwise_kernels_channel_axis(tmp_path):
    # aimet-onnx refused sim.export's 2.0.0 file of the TFLite configs:
    # the per-channel depthwise kernel had no axis ("channel_axis must be
    # specified for 1-dimensional scale").
    inputs = keras.Input((8, 8, 3), name="image")
    model = keras.Model(
        inputs, keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    )
    sim = QuantizationSimModel(model, config_file="tflite_int8")
    sim.compute_encodings(
        np.random.default_rng(7).uniform(size=(4, 8, 8, 3)).astype("float32")
    )
    sim.export(tmp_path, "m", encoding_version="2.0.0")
    entries = json.loads((tmp_path / "m.encodings").read_text())["encodings"]
    (kernel,) = [e for e in entries if e["name"] == "dw/kernel:0"]
    assert len(kernel["y_scale"]) == 3
    assert kernel["axis"] == 2  # (height, width, channels, multiplier)
