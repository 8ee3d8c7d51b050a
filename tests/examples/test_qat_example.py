"""The QAT and AdaRound example: two training scripts that end in TFLite."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


# Two to four minutes on two cores: tests/qat and tests/ptq cover its steps.
@pytest.mark.slow
def test_qat_and_adaround_example_exports_both_models(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "qat_and_adaround.py"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("qat_tflite", "adaround_tflite"):
        assert pathlib.Path(summary[key]).is_file(), key
    # W4A8 on these nets stays within a few points of FP32.
    assert summary["w4a8_after_qat"] > summary["fp32"] - 0.03
    assert summary["w4a8_adaround"] > summary["fp32_after_epoch"] - 0.03
