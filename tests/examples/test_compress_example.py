"""The compression example: spatial SVD then channel pruning, then fit."""

import pytest

from tests.examples import run_example


# Three minutes on two cores: tests/compress covers each step it chains.
@pytest.mark.slow
def test_compress_and_finetune_runs_and_halves_the_macs(tmp_path):
    summary, stdout = run_example(
        "compress_and_finetune.py",
        tmp_path,
        "--quick",
        "--epochs",
        "1",
        "--candidates",
        "3",
    )
    assert "| + channel pruning |" in stdout
    original, svd, pruned, tuned = summary["rows"]
    assert 0.49 < pruned["macs_kept"] <= 0.5
    assert svd["macs_kept"] <= 0.75
    assert pruned["parameters"] < original["parameters"]
    # Even a quick run keeps most of the accuracy.
    assert pruned["accuracy"] > original["accuracy"] - 0.10
    assert tuned["macs_kept"] == pruned["macs_kept"]
    for name in (
        "resnet_compressed.keras",
        "resnet_finetuned.keras",
        "sensitivity_spatial_svd.svg",
        "sensitivity_channel_pruning.svg",
    ):
        assert (tmp_path / name).is_file(), name
