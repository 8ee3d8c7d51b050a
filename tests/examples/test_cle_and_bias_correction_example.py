"""The DFQ example: BN folding, cross-layer equalization, bias correction."""

import pytest

from tests.examples import run_example


# One to three minutes on two cores: tests/ptq covers each step.
@pytest.mark.slow
def test_cle_and_bias_correction_recover_per_tensor_w4(tmp_path):
    summary, stdout = run_example("cle_and_bias_correction.py", tmp_path)
    assert "| W4A8 | BN fold + CLE |" in stdout
    fp32 = summary["fp32"]
    assert fp32 > 0.9
    assert summary["folded_batch_norms"] > 0
    assert summary["cls_sets"] > 0
    spread = summary["weight_range_spread"]
    assert spread["equalized"] < 0.8 * spread["folded"]
    top1 = {(r["precision"], r["steps"]): r["top1"] for r in summary["rows"]}
    for (precision, steps), accuracy in top1.items():
        if precision == "W8A8":
            assert accuracy > fp32 - 0.01, steps
    fold = top1["W4A8", "BN fold"]
    cle = top1["W4A8", "BN fold + CLE"]
    corrected = top1["W4A8", "BN fold + CLE + bias correction"]
    # Per-tensor 4-bit weights lose many points; CLE wins back several,
    # bias correction more.
    assert fold < fp32 - 0.05
    assert cle > fold + 0.03
    assert corrected > cle + 0.01
    assert corrected > fp32 - 0.03
    assert summary["rows"][-1]["corrected_layers"] > 0
