"""The export example: int8 and 16x8 TFLite, QDQ ONNX, run and compared."""

import pathlib

import pytest

from tests.examples import run_example


# About a minute on two cores: tests/export covers the exporters.
@pytest.mark.slow
def test_exported_models_compute_what_their_sims_do(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    summary, stdout = run_example("export_tflite_onnx.py", tmp_path)
    assert "| int8 TFLite |" in stdout
    rows = {row["name"]: row for row in summary["rows"]}
    fp32 = rows["FP32 Keras"]["top1"]
    assert fp32 > 0.9
    for sim in ("W8A8 sim", "W16A8 sim"):
        assert rows[sim]["top1"] > fp32 - 0.01, sim
    for target, sim in (
        ("int8 TFLite", "W8A8 sim"),
        ("16x8 TFLite", "W16A8 sim"),
        ("ONNX QDQ", "W8A8 sim"),
    ):
        row = rows[target]
        assert row["reference"] == sim
        assert row["agrees_with_reference"] >= 0.995, target
        assert abs(row["top1"] - rows[sim]["top1"]) <= 0.005, target
        assert pathlib.Path(row["path"]).is_file(), target
    # 16-bit activations: within a fraction of an 8-bit output step.
    assert rows["16x8 TFLite"]["max_abs_diff"] < 0.004
    assert rows["ONNX FP32"]["agrees_with_reference"] >= 0.99
    assert pathlib.Path(rows["ONNX FP32"]["encodings"]).is_file()
    # Integer files are a fraction of the FP32 ONNX model.
    assert (
        rows["int8 TFLite"]["size_bytes"]
        < 0.4 * rows["ONNX FP32"]["size_bytes"]
    )
