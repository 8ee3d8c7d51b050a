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


def _model():
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def _sim(model, data, scale=1.0):
    sim = QuantizationSimModel(model)
    sim.compute_encodings(data * scale)
    return sim


@pytest.mark.parametrize("version", ["0.6.1", "1.0.0", "2.0.0"])
def test_export_onnx_encodings_load_back_by_onnx_names(tmp_path, version):
    model = _model()
    data = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    data = data.astype("float32")
    source = _sim(model, data)
    result = export_onnx(source, tmp_path / "m.onnx", encoding_version=version)
    # Another calibration: loading must replace every grid with the file's.
    target = _sim(model, data, scale=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no quantizer left disabled
        done = load_encodings(target, result.encodings_path)
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
    np.testing.assert_array_equal(
        target.model.predict(data, verbose=0),
        source.model.predict(data, verbose=0),
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
