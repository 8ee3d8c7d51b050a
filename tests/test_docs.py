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
    # The user guide: a page per feature, linked to the API reference.
    guide = {
        "quantsim": "sim/#aimet_keras.sim.quantsim.QuantizationSimModel",
        "ptq": "ptq/#aimet_keras.ptq.adaround.AdaroundParameters",
        "qat": "qat/#aimet_keras.qat.callbacks.ExportBestEpoch",
        "export": "export/#aimet_keras.export.tflite.export_tflite",
        "analysis": "analysis/#aimet_keras.analysis.QuantAnalyzer",
        "zoo": "zoo/#aimet_keras.zoo.load_quantized",
        "compression": "compress/#aimet_keras.compress.greedy.compress_model",
        "real_models": "graph/#aimet_keras.graph.prepare.prepare_model",
        "migration": "ptq/#aimet_keras.ptq.bias_correction.correct_bias",
        "troubleshooting": "graph/#aimet_keras.graph.legacy.from_tf_keras",
    }
    for name, api_link in guide.items():
        html = (tmp_path / "guide" / name / "index.html").read_text()
        assert f"api/{api_link}" in html, name
        if name not in ("migration", "troubleshooting"):
            # Measured numbers, each table citing its results file.
            assert "benchmarks/results/" in html, name
            assert '<span class="kn">' in html, name  # code examples
    migration = tmp_path / "guide" / "migration" / "index.html"
    assert "tfmot" in migration.read_text()
    # The features that had no equivalent now link to theirs.
    assert "api/ptq/#aimet_keras.ptq.amp.choose_mixed_precision" in (
        migration.read_text()
    )
    assert "api/analysis/#aimet_keras.analysis.QuantAnalyzer" in (
        migration.read_text()
    )
    # The API pages hold the new entry points.
    for page, anchor in (
        ("ptq", "aimet_keras.ptq.amp.MixedPrecisionResult"),
        ("zoo", "aimet_keras.zoo.recipe"),
        ("zoo", "aimet_keras.zoo.quantized_variants"),
        ("zoo", "aimet_keras.zoo.inject_outlier_channel"),
        ("plotting", "aimet_keras.plotting.pareto_chart"),
    ):
        html = (tmp_path / "api" / page / "index.html").read_text()
        assert f'id="{anchor}"' in html, anchor
    troubleshooting = tmp_path / "guide" / "troubleshooting" / "index.html"
    assert "The sim is not calibrated" in troubleshooting.read_text()
    assert "guide/troubleshooting/" in (tmp_path / "index.html").read_text()
