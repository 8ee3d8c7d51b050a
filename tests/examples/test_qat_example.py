"""The QAT and AdaRound example: two training scripts that end in TFLite."""

import pathlib

import pytest

from tests.examples import run_example


# Two to four minutes on two cores: tests/qat and tests/ptq cover its steps.
@pytest.mark.slow
def test_qat_and_adaround_example_exports_both_models(tmp_path):
    summary, _ = run_example(
        "qat_and_adaround.py", tmp_path, "--epochs", "1", timeout=900
    )
    for key in ("qat_tflite", "adaround_tflite"):
        assert pathlib.Path(summary[key]).is_file(), key
    # W4A8 on these nets stays within a few points of FP32.
    assert summary["w4a8_after_qat"] > summary["fp32"] - 0.03
    assert summary["w4a8_adaround"] > summary["fp32_after_epoch"] - 0.03
