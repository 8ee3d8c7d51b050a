"""The AutoQuant example: stops at BN folding at W8A8, goes on at W4A8."""

import pathlib

import pytest

from tests.examples import run_example


# About two minutes on two cores: tests/ptq covers auto_quant itself.
@pytest.mark.slow
def test_autoquant_example_stops_where_accuracy_holds(tmp_path):
    summary, stdout = run_example("autoquant.py", tmp_path)
    fp32 = summary["fp32_test_top1"]
    assert fp32 > 0.9
    w8a8, w4a8 = summary["runs"]
    # W8A8 per-channel: BN folding holds, nothing else is tried.
    assert w8a8["step"] == "batch_norm_fold"
    assert [e["step"] for e in w8a8["report"]] == ["batch_norm_fold"]
    assert (
        w8a8["accuracy"]
        >= w8a8["fp32_accuracy"] - summary["allowed_accuracy_drop"]
    )
    assert w8a8["test_top1"] > fp32 - 0.015
    # W4A8 per-tensor: folding alone loses many points, later steps win
    # them back; the chosen step is the best one tried.
    steps = [e["step"] for e in w4a8["report"]]
    assert steps[:2] == ["batch_norm_fold", "cross_layer_equalization"]
    assert w4a8["report"][0]["drop"] > 0.05
    assert w4a8["accuracy"] == max(e["accuracy"] for e in w4a8["report"])
    assert w4a8["accuracy"] > w4a8["report"][0]["accuracy"] + 0.05
    assert w4a8["test_top1"] > fp32 - 0.03
    for run in (w8a8, w4a8):
        assert pathlib.Path(run["encodings"]).is_file(), run["name"]
