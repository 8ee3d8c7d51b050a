"""The documentation site builds, strictly, from the docstrings."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_docs_build_strictly_and_render_the_examples_as_code(tmp_path):
    environment = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"]
        + ["-d", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "api" / "sim" / "index.html").read_text()
    assert "QuantizationSimModel" in page
    # Doctests are code blocks, not Markdown text.
    assert "<code>&gt;&gt;&gt; model = zoo.load_model" in page
    assert (tmp_path / "index.html").read_text().count("Quickstart") >= 1
