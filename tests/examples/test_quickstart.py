"""The README's main job: W8A8 simulation of a shipped model, exported."""

import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Python-side notices (the library mutes them during its conversions) and
# the C++ lines of TensorFlow's graph passes (the script sets
# TF_CPP_MIN_LOG_LEVEL before TensorFlow loads). What remains is printed
# while TensorFlow loads, before any level applies: the oneDNN and CUDA
# notices, and TFLite's XNNPACK line.
_NOISE = re.compile(
    r"is deprecated|Instructions for updating|retracing|trackable_obj"
    r"|WARNING:absl|WARNING:tensorflow|UserWarning"
    r"|single_machine\.cc|devices\.cc|mlir_graph_optimization_pass"
    r"|tf_tfl_flatbuffer_helpers|op_level_cost_estimator"
)


def noise(output):
    """The lines of ``output`` that are TensorFlow's or a converter's."""
    return [line for line in output.splitlines() if _NOISE.search(line)]


def test_quickstart_runs_and_stays_close_to_fp32(tmp_path):
    environment = dict(os.environ)
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the script's to set
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "quickstart.py"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "quantized (simulated)" in result.stdout
    # The table, not TensorFlow's and the converters' notices.
    assert noise(result.stdout + result.stderr) == []
    # TensorFlow's start-up notices are held back too.
    assert "oneDNN custom operations" not in result.stderr
    assert "cuda drivers" not in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fp32_top1"] > 0.9
    # W8A8 lands within about a point of FP32 on these models.
    assert abs(summary["fp32_top1"] - summary["quantized_top1"]) < 0.01
    weights = summary["quantized_weights_bytes"]
    assert weights < summary["fp32_weights_bytes"] / 2
    encodings = json.loads((tmp_path / "resnet.encodings").read_text())
    assert encodings["version"] == "0.6.1"
    kernel = encodings["param_encodings"]["stem_conv/kernel:0"]
    assert len(kernel) == 16  # one entry per output channel
    # tflite_int8: strict symmetric weights (TFLite's -127..127).
    assert all(
        e["offset"] == -127 and e["is_symmetric"] == "True" for e in kernel
    )
    for entries in encodings["activation_encodings"].values():
        (entry,) = entries
        assert entry["min"] <= 0.0 <= entry["max"]
    assert (tmp_path / "resnet.keras").is_file()
    assert (tmp_path / "resnet" / "saved_model.pb").is_file()
    # The exported integer models compute what the sim predicted.
    assert "integer TFLite" in result.stdout
    assert summary["tflite_agrees_with_sim"] >= 0.995
    assert summary["onnx_agrees_with_sim"] >= 0.995
    assert abs(summary["tflite_top1"] - summary["quantized_top1"]) < 0.005
    sizes = summary["sizes_bytes"]
    assert sizes["tflite"] < summary["fp32_weights_bytes"] * 0.4
    for key in ("tflite", "onnx_qdq", "onnx_fp32", "onnx_encodings"):
        assert pathlib.Path(summary["artifacts"][key]).is_file(), key
