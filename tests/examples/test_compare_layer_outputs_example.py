"""The layer-output example: where an exported TFLite model departs."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


# Under a minute on two cores: tests/export covers layer_outputs.
@pytest.mark.slow
def test_compare_layer_outputs_finds_departures(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "compare_layer_outputs.py"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "first layer more than a step apart" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    comparisons = summary["comparisons"]
    # The tflite_int8 sim is what TFLite computes: no layer departs.
    matched = comparisons["sim (tflite_int8) vs TFLite"]
    assert matched["first_departure"] is None
    assert matched["worst_off_fraction"] < 0.01
    assert matched["compared_layers"] >= 10
    assert matched["changes"] == []
    # The htp sim is not: the exporter says where, and a layer departs.
    htp = comparisons["sim (htp) vs TFLite"]
    assert htp["changes"]
    assert htp["first_departure"] is not None
    assert htp["worst_off_fraction"] > 0.01
    # Quantization noise against FP32 exceeds a step somewhere.
    assert comparisons["FP32 vs sim (tflite_int8)"]["first_departure"]
    saved = summary["saved_layer_outputs"]
    assert saved["sim"] > saved["tflite"] > 0
    assert (
        len(list((tmp_path / "layers" / "tflite").glob("*.npy")))
        == (saved["tflite"])
    )
