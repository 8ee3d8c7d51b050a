"""The sensitivity plot, read back with ElementTree."""

import math
import os
import re
import xml.etree.ElementTree as ET

import pytest

from aimet_keras.compress.plot import plot_sensitivity

pytest.importorskip("matplotlib")

# Ratios given out of order: the plot sorts them.
_SCORES = {
    "conv1": {0.75: 0.86, 0.25: 0.41, 0.5: 0.78},
    "conv2": {0.25: 0.83, 0.5: 0.85, 0.75: 0.86},
    "dense<&>": {0.5: 0.6, 0.25: 0.2, 0.75: 0.7},
}


def _tag(element):
    return element.tag.split("}")[-1]


def _group(root, gid):
    found = [e for e in root.iter() if _tag(e) == "g" and e.get("id") == gid]
    return found[0] if found else None


def _ids(root, prefix):
    return [
        e.get("id")
        for e in root.iter()
        if _tag(e) == "g" and (e.get("id") or "").startswith(prefix)
    ]


def _dots(group):
    return [
        (float(e.get("x")), float(e.get("y")))
        for e in group.iter()
        if _tag(e) == "use"
    ]


def _texts(element):
    return ["".join(e.itertext()) for e in element.iter() if _tag(e) == "text"]


def _lines(root):
    """``{legend label: canvas points}``, in the order drawn."""
    labels = _texts(_group(root, "legend_1"))
    series = [_dots(_group(root, gid)) for gid in _ids(root, "series-")]
    return dict(zip(labels, series))


def _hline_y(root, index=0):
    path = next(e for e in _group(root, f"hline-{index}") if _tag(e) == "path")
    numbers = [float(n) for n in re.findall(r"-?[\d.]+", path.get("d"))]
    assert numbers[1] == numbers[3]
    return numbers[1]


def _plot(tmp_path, *args, **kwargs):
    path = plot_sensitivity(_SCORES, tmp_path / "s.svg", *args, **kwargs)
    return ET.parse(path).getroot()


def test_one_line_per_layer_sorted_by_ratio(tmp_path):
    root = _plot(tmp_path)
    lines = _lines(root)
    assert list(lines) == ["conv1", "conv2", "dense<&>"]
    assert len(_ids(root, "series-")) == 3
    for name, points in lines.items():
        assert len(points) == 3
        xs = [x for x, _ in points]
        assert xs == sorted(xs) and len(set(xs)) == 3
        # Scores rise with the ratio here, so the SVG y falls.
        ys = [y for _, y in points]
        assert ys == sorted(ys, reverse=True), name
    # Same ratios, same x, whichever layer.
    assert {tuple(x for x, _ in p) for p in lines.values()} == {
        tuple(x for x, _ in lines["conv1"])
    }
    # dense<&> at 0.25 scores lowest of all: the lowest point drawn.
    lowest = max((y, name) for name, p in lines.items() for _, y in p)
    assert lowest == (lines["dense<&>"][0][1], "dense<&>")
    texts = _texts(root)
    assert {"Per-layer sensitivity", "eval score"} <= set(texts)


def test_chosen_ratios_are_ringed_and_named(tmp_path):
    chosen = {"conv1": 1.0, "conv2": 0.25, "dense<&>": 0.5, "other": 0.5}
    root = _plot(tmp_path, chosen)
    lines = _lines(root)
    assert list(lines) == [
        "conv1 (left whole)",
        "conv2 (chosen 0.25)",
        "dense<&> (chosen 0.5)",
    ]
    # Series 1 and 2 are ringed, at their chosen point.
    assert _ids(root, "marker-") == ["marker-1", "marker-2"]
    for index, label, point in (
        (1, "conv2 (chosen 0.25)", 0),
        (2, "dense<&> (chosen 0.5)", 1),
    ):
        (ring,) = _dots(_group(root, f"marker-{index}"))
        assert ring == pytest.approx(lines[label][point])
    assert "dense&lt;&amp;&gt; (chosen 0.5)" in (tmp_path / "s.svg").read_text()


def test_a_topped_up_ratio_is_ringed_on_the_line(tmp_path):
    """The search tops a layer up between candidates; with the original's
    score, lines end at 1.0 and the ring sits on the segment."""
    root = _plot(tmp_path, {"conv1": 0.6}, baseline=0.9)
    lines = _lines(root)
    line = lines["conv1 (chosen 0.6)"]
    assert len(line) == 4  # three candidates and the original at 1.0
    (x, y), *_ = _dots(_group(root, "marker-0"))
    (x0, y0), (x1, y1) = line[1], line[2]  # ratios 0.5 and 0.75
    assert x0 < x < x1
    assert y == pytest.approx(y0 + (y1 - y0) * (x - x0) / (x1 - x0), abs=0.01)
    assert _ids(root, "hline-") == ["hline-0"]  # the original's score
    assert "original" in _texts(_group(root, "legend_1"))
    assert _hline_y(root) == pytest.approx(line[3][1], abs=0.01)


def test_threshold_is_a_dashed_line_at_its_score(tmp_path):
    assert not _ids(_plot(tmp_path), "hline-")
    root = _plot(tmp_path, threshold=0.8)
    path = next(e for e in _group(root, "hline-0") if _tag(e) == "path")
    assert "stroke-dasharray" in path.get("style")
    y = _hline_y(root)
    conv1 = _lines(root)["conv1"]  # scores 0.41, 0.78, 0.86
    assert conv1[2][1] < y < conv1[1][1]
    assert y == pytest.approx(
        conv1[1][1] + (conv1[2][1] - conv1[1][1]) * (0.8 - 0.78) / 0.08,
        abs=0.01,
    )
    assert _texts(_group(root, "legend_1"))[-1] == "threshold"


def test_saved_tables_string_ratios_plot_the_same(tmp_path):
    # As CompressionStats.eval_scores and .ratios, and as the JSON table
    # compress_model saves (ratios as strings).
    scores = {"conv1": {0.25: 0.4, 0.5: 0.7}, "conv2": {0.25: 0.8, 0.5: 0.85}}
    ratios = {"conv1": 1.0, "conv2": 0.5}
    path = plot_sensitivity(scores, tmp_path / "a.svg", ratios)
    from_json = {
        name: {str(r): s for r, s in table.items()}
        for name, table in scores.items()
    }
    again = plot_sensitivity(from_json, tmp_path / "b.svg", ratios)
    assert path.read_text() == again.read_text()
    assert len(_ids(ET.parse(path).getroot(), "marker-")) == 1


def test_x_label_can_be_named(tmp_path):
    assert "input channels kept" in _texts(
        _plot(tmp_path, x_label="input channels kept")
    )
    assert "compression ratio (cost kept)" in _texts(_plot(tmp_path))


def test_a_flat_layer_and_a_single_ratio(tmp_path):
    scores = {"flat": {0.25: 0.5, 0.5: 0.5}, "one": {0.5: 0.5}}
    path = plot_sensitivity(scores, tmp_path / "s.svg", {"one": 0.5})
    lines = _lines(ET.parse(path).getroot())
    assert len(lines["flat"]) == 2 and len(lines["one (chosen 0.5)"]) == 1
    assert all(math.isfinite(v) for p in lines.values() for xy in p for v in xy)


def test_png(tmp_path):
    from matplotlib.image import imread

    path = plot_sensitivity(_SCORES, tmp_path / "s.png", {"conv2": 0.5})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(path).shape[2] in (3, 4)


@pytest.mark.parametrize(
    "scores, chosen, threshold, match",
    [
        ({"c": {0.5: math.nan}}, None, None, "'c' has score nan at ratio 0.5"),
        ({"c": {0.5: 0.1}}, None, math.inf, "hline 'threshold'"),
        ({"c": {0.5: 0.1}}, {"c": 0.0}, None, r"in \(0, 1\]"),
        ({"c": {}}, None, None, "non-empty"),
        ({}, None, None, "non-empty"),
    ],
)
def test_errors_leave_no_file(tmp_path, scores, chosen, threshold, match):
    with pytest.raises(ValueError, match=match):
        plot_sensitivity(scores, tmp_path / "s.svg", chosen, threshold)
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        plot_sensitivity(_SCORES, tmp_path / "s.pdf")
    assert os.listdir(tmp_path) == []


def test_a_missing_folder_leaves_no_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        plot_sensitivity(_SCORES, tmp_path / "no" / "s.svg")
    assert os.listdir(tmp_path) == []
