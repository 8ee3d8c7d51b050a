"""A fixed seed gives byte-identical exports, in one process and across
processes; two sims of one model, built side by side or in two threads, do
not interfere."""

import json
import pathlib
import subprocess
import sys
import threading

import keras
import numpy as np

from aimet_keras.export import export_onnx
from aimet_keras.export import export_tflite
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim.export import sim_encodings

REPO = pathlib.Path(__file__).parents[2]


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # Named: Keras numbers unnamed models ("functional_3"), and the name
    # scopes every exported op.
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs, name="net")


def _data():
    return np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("f4")


def export_everything(folder):
    """Builds, calibrates and exports; ``{file name: bytes}`` written."""
    folder = pathlib.Path(folder)
    sim = QuantizationSimModel(_model(), config_file="tflite_int8")
    sim.compute_encodings(_data())
    encodings = sim.export(folder, "model")["encodings"]
    tflite = export_tflite(sim, folder / "model.tflite").path
    onnx = export_onnx(sim, folder / "model.onnx")
    paths = [encodings, tflite, onnx.qdq_path, onnx.fp32_path]
    paths.append(onnx.encodings_path)
    return {path.name: path.read_bytes() for path in paths}


def test_two_runs_in_one_process_write_identical_bytes(tmp_path):
    first = export_everything(tmp_path / "a")
    second = export_everything(tmp_path / "b")
    assert sorted(first) == sorted(second) and len(first) == 5
    for name, content in first.items():
        assert content == second[name], name


def test_another_process_writes_identical_bytes(tmp_path):
    here = export_everything(tmp_path / "here")
    script = (
        "import sys; from tests.export.test_determinism import "
        "export_everything; export_everything(sys.argv[1])"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "there")],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    for name, content in here.items():
        assert (tmp_path / "there" / name).read_bytes() == content, name


def _encodings(sim):
    return json.dumps(sim_encodings(sim), sort_keys=True)


def test_two_sims_of_one_model_do_not_interfere():
    model, data = _model(), _data()
    alone = QuantizationSimModel(model, default_param_bw=4)
    alone.compute_encodings(data)
    expected = _encodings(alone)
    # Two more sims of the same model, one at other bit widths, built and
    # calibrated side by side: neither changes the other or the model.
    weights = [w.copy() for w in model.get_weights()]
    four = QuantizationSimModel(model, default_param_bw=4)
    eight = QuantizationSimModel(model, default_param_bw=8)
    four.compute_encodings(data)
    eight.compute_encodings(data[::-1] * 2)
    assert _encodings(four) == expected
    assert _encodings(eight) != expected
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_sims_calibrated_in_two_threads_match_the_serial_ones():
    model, data = _model(), _data()
    scaled = data * 3
    serial = []
    for batch in (data, scaled):
        sim = QuantizationSimModel(model)
        sim.compute_encodings(batch)
        serial.append(_encodings(sim))
    sims = [QuantizationSimModel(model) for _ in range(2)]
    errors = []

    def calibrate(sim, batch):
        try:
            sim.compute_encodings(batch)
        except Exception as error:  # reported below, not lost in a thread
            errors.append(error)

    threads = [
        threading.Thread(target=calibrate, args=(sim, batch))
        for sim, batch in zip(sims, (data, scaled))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [_encodings(sim) for sim in sims] == serial
