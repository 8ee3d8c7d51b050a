"""The W4A4 block reconstruction example, against plain W4A4."""

import pathlib

import pytest

from tests.examples import run_example


# One to two minutes on two cores: tests/ptq covers reconstruct_blocks.
@pytest.mark.slow
def test_block_reconstruction_beats_plain_w4a4(tmp_path):
    summary, stdout = run_example("block_reconstruction_w4a4.py", tmp_path)
    fp32, nearest, searched, reconstructed = (
        row["top1"] for row in summary["rows"]
    )
    assert fp32 > 0.9
    assert nearest < fp32 - 0.02  # plain W4A4 loses points
    assert searched >= nearest
    assert reconstructed > nearest + 0.01
    assert reconstructed > fp32 - 0.04
    blocks = summary["blocks"]
    assert len(blocks) >= 3
    assert sum(b["error_after"] for b in blocks) < 0.9 * sum(
        b["error_before"] for b in blocks
    )
    artifacts = summary["artifacts"]
    for key in ("keras", "encodings"):
        assert pathlib.Path(artifacts[key]).is_file(), key
