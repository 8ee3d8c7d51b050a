"""Unit tests of the benchmark harness. They never assert a time."""

import json

import pytest

from benchmarks import harness
from benchmarks import suites
from benchmarks.__main__ import main

MACHINE = {
    "date_utc": "2026-01-01T00:00:00+00:00",
    "tensorflow": "x",
    "keras": "y",
    "python": "3",
    "cpu_count": 2,
    "cpus_usable": 2,
    "load_average_1m": 1.0,
}


def test_time_median_warms_up_then_returns_positive_seconds():
    calls = []
    result = harness.time_median(lambda: calls.append(1), repeats=5, warmup=2)
    assert isinstance(result, float) and result > 0
    assert len(calls) == 2 + 5


def test_time_interleaved_alternates_candidates_after_warmup():
    order = []
    samples = harness.time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")},
        repeats=5,
        warmup=1,
    )
    assert order == ["a", "b"] + ["a", "b"] * 5
    assert {k: len(v) for k, v in samples.items()} == {"a": 5, "b": 5}


@pytest.mark.parametrize("repeats, warmup", [(4, 1), (5, 0)])
def test_time_median_rejects_too_few_runs(repeats, warmup):
    with pytest.raises(ValueError, match="repeats|warm up"):
        harness.time_median(lambda: None, repeats=repeats, warmup=warmup)


def test_ratio_handles_missing_values():
    assert harness.ratio(3.0, 1.5) == 2.0
    assert harness.ratio(None, 1.0) is None
    assert harness.ratio(1.0, 0.0) is None


def test_markdown_table_pads_and_formats():
    text = harness.markdown_table(
        ["name", "ms", "ok"],
        [["qdq", 1.23456, True], ["a|b", None, False]],
        formats={"ms": "{:.2f}"},
    )
    assert text.splitlines() == [
        "| name | ms   | ok  |",
        "|------|------|-----|",
        "| qdq  | 1.23 | yes |",
        "| a\\|b | —    | no  |",
    ]


def test_markdown_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="2 cells"):
        harness.markdown_table(["a", "b", "c"], [[1, 2]])


def _report(quick=False):
    table = harness.Table("T", ["x", "y"], notes=["a note"]).add_row(
        1, float("nan")
    )
    return harness.Report("demo", [table], {"n": 1}, quick=quick)


def test_write_results_writes_markdown_and_json(tmp_path):
    md_path, json_path = harness.write_results(_report(), tmp_path, MACHINE)
    assert (md_path.name, json_path.name) == ("demo.md", "demo.json")
    assert "### T" in md_path.read_text() and "- a note" in md_path.read_text()
    document = json.loads(json_path.read_text())
    assert document["machine"]["cpu_count"] == 2
    assert document["tables"][0]["rows"] == [{"x": 1, "y": None}]  # NaN -> null
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo.json",
        "demo.md",
    ]


def test_quick_results_do_not_overwrite_full_ones(tmp_path):
    md_path, _ = harness.write_results(_report(quick=True), tmp_path, MACHINE)
    assert md_path.name == "demo-quick.md"


def test_failed_write_keeps_previous_results_and_no_temp_files(
    tmp_path, monkeypatch
):
    md_path, json_path = harness.write_results(_report(), tmp_path, MACHINE)
    before = (md_path.read_text(), json_path.read_text())

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(harness.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        harness.write_results(harness.Report("demo"), tmp_path, MACHINE)
    assert (md_path.read_text(), json_path.read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo.json",
        "demo.md",
    ]


def test_cli_lists_every_suite(capsys):
    assert main(["list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(suites.SUITES)


def test_unknown_suite_names_the_known_ones():
    with pytest.raises(ValueError, match="grid"):
        suites.get_suite("nope")


def test_a_run_writes_to_scratch_unless_asked_to_update(tmp_path, monkeypatch):
    class Suite:
        @staticmethod
        def run(quick=False):
            return harness.Report("grid")

    committed = tmp_path / "committed"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(suites, "get_suite", lambda name: Suite)
    monkeypatch.setattr(harness, "RESULTS_DIR", committed)
    assert main(["run", "--suite", "grid"]) == 0
    assert (tmp_path / "artifacts/benchmark_results/grid.md").is_file()
    assert not committed.exists()
    assert main(["run", "--suite", "grid", "--update-results"]) == 0
    assert (committed / "grid.md").is_file()


def test_a_partial_run_is_written_beside_the_whole_suite(tmp_path, monkeypatch):
    class Suite:
        @staticmethod
        def run(quick=False, names=None):
            return harness.Report("compression_real", extra={"names": names})

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(suites, "get_suite", lambda name: Suite)
    argv = ["run", "--suite", "compression_real", "--only", "MobileNetV2"]
    assert main(argv) == 0
    written = tmp_path / "artifacts/benchmark_results"
    assert sorted(p.name for p in written.iterdir()) == [
        "compression_real-MobileNetV2.json",
        "compression_real-MobileNetV2.md",
    ]
    assert (
        '"MobileNetV2"'
        in (written / "compression_real-MobileNetV2.json").read_text()
    )


def test_only_is_refused_by_a_suite_that_runs_everything(
    tmp_path, monkeypatch, capsys
):
    class Suite:
        @staticmethod
        def run(quick=False):
            raise AssertionError("must not run")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(suites, "get_suite", lambda name: Suite)
    assert main(["run", "--suite", "grid", "--only", "x"]) == 2
    assert "drop --only" in capsys.readouterr().err
    assert not (tmp_path / "artifacts").exists()
