"""Our files in aimet-onnx's strict load, AIMET's in ours (needs the
aimet-onnx environment of ``benchmarks/peers/setup_aimet_onnx.sh``; skipped
without it)."""

import pathlib

import keras
import numpy as np
import pytest

from benchmarks.suites import aimet_conformance
from benchmarks.suites import aimet_onnx as aimet_onnx_suite


def _aimet_python():
    try:
        return aimet_onnx_suite._aimet_python()
    except RuntimeError as error:
        pytest.skip(str(error))


def _model():
    # Non-zero biases, as trained: tf2onnx drops an all-zero one, and a
    # bare MatMul takes the config's MatMul settings (symmetric output in
    # tflite_int8), which a Keras Dense does not.
    bias = {"bias_initializer": keras.initializers.RandomUniform(0.1, 0.3)}
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv", **bias)(
        inputs
    )
    x = keras.layers.Conv2D(6, 3, name="conv2", **bias)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(3, name="fc", **bias)(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(x))


@pytest.mark.parametrize("config", ["tflite_int8", "tflite_16x8"])
def test_strict_symmetric_configs_pass_aimets_strict_load(config, tmp_path):
    # aimet-onnx refused these before: 2.0.0 kernels written with zero point
    # 0 (AIMET writes strict grids with -1), and every asymmetric activation
    # (its own strict_symmetric flag; the peer clears it, see _align).
    python = _aimet_python()
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 8, 8, 1)).astype("float32")
    calibration = rng.uniform(size=(32, 8, 8, 1)).astype("float32")
    np.savez(tmp_path / "data.npz", images=images, calibration=calibration)
    folder = tmp_path / config
    folder.mkdir()
    rows = aimet_conformance._case(
        python, "tiny", _model(), config, folder, images, calibration
    )
    assert [row["version"] for row in rows] == ["0.6.1", "1.0.0", "2.0.0"]
    for row in rows:
        assert row["validator"] == "pass", row
        assert row["strict"] == "pass", row["mismatches"]
        assert row["to_aimet"][0] == 1.0
        assert row["disabled"] == [], row  # no quantizer silently off
        assert row["loaded"] > 0 and row["from_aimet"][0] >= 0.95
    # The control: AIMET's own 0.6.1/1.0.0 files pass the same load; its
    # 2.0.0 one holds 32-bit biases this config does not quantize.
    assert [row["own"] for row in rows[:2]] == ["pass", "pass"]
    assert "enabled" in rows[2]["own"]
    written = pathlib.Path(folder / "aimet_2.0.0.encodings").read_text()
    assert '"int32"' in written  # and ours read it (rows[2]["loaded"])
    # sim.export's 2.0.0 file on the ONNX copy: its 32-bit biases meet
    # aimet-onnx's disabled bias quantizers, as AIMET's own file does, and
    # nothing else differs; leniently loaded, aimet-onnx computes ours.
    assert rows[2]["keras_strict"] == "refused (2 enabled); top-1 = 100.00%"
    assert all(
        set(m) == {"quantizer_name", "enabled_mismatch"}
        for m in rows[2]["keras_load"]["mismatches"]
    )
