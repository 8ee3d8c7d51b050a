"""Slow tests that run the example scripts as a user would."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_example(script, out, *arguments, timeout=600):
    """Runs ``examples/<script>`` with ``--out out``; returns its summary.

    Returns:
        ``(summary dict, stdout)``; fails the test with the script's stderr
        when it exits non-zero.
    """
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--out", str(out)]
        + list(arguments),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((pathlib.Path(out) / "summary.json").read_text()), (
        result.stdout
    )
