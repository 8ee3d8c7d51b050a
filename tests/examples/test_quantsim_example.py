"""The QuantizationSimModel example: settings, export, reload."""

import pathlib

import pytest

from tests.examples import run_example


# About a minute on two cores: tests/sim covers each step it shows.
@pytest.mark.slow
def test_quantsim_example_exports_and_reloads_the_same_sim(tmp_path):
    summary, stdout = run_example("quantsim.py", tmp_path)
    assert "load_encodings_to_sim" in stdout
    rows = {row["setting"]: row["top1"] for row in summary["rows"]}
    fp32 = rows.pop("FP32")
    assert fp32 > 0.9
    for setting, top1 in rows.items():
        # W8A8 stays within a point of FP32, W4A8 within a few.
        allowed = 0.01 if setting.startswith("W8A8") else 0.06
        assert top1 > fp32 - allowed, setting
    # Per-channel grids matter at 4 bits.
    assert rows["W4A8 tf per-channel"] > rows["W4A8 tf per-tensor"]
    exported = summary["exported"]
    assert exported["encoding_version"] == "0.6.1"
    assert exported["param_encodings"] >= 10
    assert exported["activation_encodings"] >= 10
    # A fresh sim reading the encodings, and the exported .keras model,
    # compute what the original sim computed.
    for name, reproduced in summary["reproduced"].items():
        assert reproduced["max_abs_diff"] < 1e-6, name
        assert reproduced["top1_agreement"] == 1.0, name
    artifacts = summary["artifacts"]
    assert (pathlib.Path(artifacts["saved_model"]) / "saved_model.pb").is_file()
    for key in ("keras", "encodings"):
        assert pathlib.Path(artifacts[key]).is_file(), key
    for name in (
        "config_per_tensor.json",
        "config_per_channel.json",
        "sim_summary.txt",
    ):
        assert (tmp_path / name).is_file(), name
