"""The tf.distribute example: two replicas calibrate as one device does."""

import pathlib

import pytest

from tests.examples import run_example


# One to three minutes on two cores: tests/sim/test_distributed.py covers
# uneven shards, observers and fit.
@pytest.mark.slow
def test_distributed_calibration_matches_one_device(tmp_path):
    summary, stdout = run_example("distributed_calibration.py", tmp_path)
    assert summary["replicas"] == 2
    single, distributed = summary["sims"].values()
    assert single["replicas"] == 1
    assert distributed["replicas"] == 2
    assert summary["encoded_tensors"] >= 20
    assert summary["tensors_in_one_file_only"] == []
    assert summary["max_encoding_difference"] <= 1e-6
    assert abs(single["top1"] - distributed["top1"]) <= 0.001
    assert distributed["top1"] > summary["fp32"] - 0.01
    for sim in (single, distributed):
        assert pathlib.Path(sim["encodings"]).is_file()
