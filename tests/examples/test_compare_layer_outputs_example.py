"""The layer-output example: where an exported TFLite model departs."""

import pytest

from tests.examples import run_example


# Under a minute on two cores: tests/export covers layer_outputs.
@pytest.mark.slow
def test_compare_layer_outputs_finds_departures(tmp_path):
    summary, stdout = run_example("compare_layer_outputs.py", tmp_path)
    assert "first layer more than a step apart" in stdout
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
