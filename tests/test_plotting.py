"""SVG charts, read back with ElementTree."""

import math
import os
import xml.etree.ElementTree as ET

import pytest

from aimet_keras import plotting


def _line(path, series, **kwargs):
    kwargs = {"title": "T", "x_label": "x", "y_label": "y", **kwargs}
    return plotting.line_chart(series, path, **kwargs)


def _tagged(root, cls):
    return [e for e in root.iter() if e.get("class") == cls]


def _tag(element):
    return element.tag.split("}")[-1]


def _polyline(group):
    (line,) = [e for e in group if _tag(e) == "polyline"]
    return [tuple(map(float, p.split(","))) for p in line.get("points").split()]


def _series(root):
    return {g.get("data-label"): _polyline(g) for g in _tagged(root, "series")}


def _frame(root):
    (frame,) = _tagged(root, "frame")
    x, y = float(frame.get("x")), float(frame.get("y"))
    return x, y, x + float(frame.get("width")), y + float(frame.get("height"))


def _inside(root, points):
    left, top, right, bottom = _frame(root)
    return all(left <= x <= right and top <= y <= bottom for x, y in points)


def test_one_polyline_per_series_with_every_point(tmp_path):
    path = _line(
        tmp_path / "c.svg",
        {"a": [(3, 1.0), (1, 2.0), (2, 0.5)], "b": [(1, 0.0), (4, 3.0)]},
    )
    assert path == tmp_path / "c.svg"
    root = ET.parse(path).getroot()
    assert _tag(root) == "svg"
    lines = _series(root)
    assert {k: len(v) for k, v in lines.items()} == {"a": 3, "b": 2}
    for group in _tagged(root, "series"):
        assert len(_tagged(group, "point")) == len(_polyline(group))
    colours = {e.get("stroke") for e in root.iter() if _tag(e) == "polyline"}
    assert len(colours) == 2
    assert _inside(root, [p for v in lines.values() for p in v])


def test_points_are_sorted_by_x_and_higher_y_is_higher_up(tmp_path):
    data = [(0.5, 0.2), (0.1, 0.9), (0.9, 0.4), (0.3, 0.6)]
    root = ET.parse(_line(tmp_path / "c.svg", {"s": data})).getroot()
    svg = _series(root)["s"]
    xs = [x for x, _ in svg]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    # Sorted by x the data's y is 0.9, 0.6, 0.2, 0.4: the SVG y (growing
    # downward) must order the same points the opposite way.
    ys = [y for _, y in svg]
    by_data = [y for _, y in sorted(data)]
    assert sorted(range(4), key=lambda i: by_data[i]) == sorted(
        range(4), key=lambda i: -ys[i]
    )
    # Linear: equal steps in the data are equal steps on the canvas.
    (x1, y1), (x2, y2), (x3, _), _ = svg
    assert x2 - x1 == pytest.approx(x3 - x2)


def test_legend_names_every_series_and_line_escaped(tmp_path):
    path = _line(
        tmp_path / "c.svg",
        {"plain": [(0, 1)], "a<&>b": [(1, 2)]},
        hlines={'limit "5"': 1.5},
        title="x < y & z",
    )
    raw = path.read_text()
    assert "a&lt;&amp;&gt;b" in raw and "x &lt; y &amp; z" in raw
    root = ET.parse(path).getroot()
    (legend,) = _tagged(root, "legend")
    texts = [e.text for e in legend.iter() if _tag(e) == "text"]
    assert texts == ["plain", "a<&>b", 'limit "5"']
    assert _tagged(root, "title")[0].text == "x < y & z"


def test_hline_is_drawn_at_its_value(tmp_path):
    path = _line(
        tmp_path / "c.svg", {"s": [(0, 0.0), (1, 1.0)]}, hlines={"t": 0.25}
    )
    root = ET.parse(path).getroot()
    (low, high) = _series(root)["s"]
    (hline,) = _tagged(root, "hline")
    assert hline.get("data-label") == "t"
    assert hline.get("stroke-dasharray")
    y = float(hline.get("y1"))
    assert y == float(hline.get("y2"))
    assert y == pytest.approx(low[1] + 0.25 * (high[1] - low[1]), abs=0.01)
    left, _, right, _ = _frame(root)
    assert float(hline.get("x1")) == left and float(hline.get("x2")) == right


def test_hline_outside_the_data_widens_the_axis(tmp_path):
    path = _line(
        tmp_path / "c.svg", {"s": [(0, 1.0), (1, 2.0)]}, hlines={"t": 9}
    )
    root = ET.parse(path).getroot()
    (hline,) = _tagged(root, "hline")
    y = float(hline.get("y1"))
    assert _inside(root, [(_frame(root)[0], y)])
    assert y < min(y for _, y in _series(root)["s"])


def test_marker_rings_the_chosen_point(tmp_path):
    path = _line(
        tmp_path / "c.svg",
        {"a": [(0, 1), (1, 3), (2, 2)], "b": [(0, 0), (2, 1)]},
        markers={"a": (1, 3)},
    )
    root = ET.parse(path).getroot()
    (marker,) = _tagged(root, "marker")
    assert marker.get("data-label") == "a"
    centres = {
        (float(c.get("cx")), float(c.get("cy")))
        for c in marker.iter()
        if _tag(c) == "circle"
    }
    assert centres == {_series(root)["a"][1]}
    with pytest.raises(ValueError, match="'c'"):
        _line(tmp_path / "d.svg", {"a": [(0, 1)]}, markers={"c": (0, 1)})
    assert not (tmp_path / "d.svg").exists()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_names_the_series_and_point(tmp_path, bad):
    with pytest.raises(ValueError, match=r"series 'b', point 1 is \(2.0, "):
        _line(
            tmp_path / "c.svg",
            {"a": [(0, 1)], "b": [(1, 1), (2, bad)]},
        )
    with pytest.raises(ValueError, match="hline 't'"):
        _line(tmp_path / "c.svg", {"a": [(0, 1)]}, hlines={"t": bad})
    assert os.listdir(tmp_path) == []


def test_malformed_input_is_refused(tmp_path):
    with pytest.raises(TypeError, match="series 'a', point 0"):
        _line(tmp_path / "c.svg", {"a": [(0, 1, 2)]})
    with pytest.raises(TypeError, match="series 'a', point 1"):
        _line(tmp_path / "c.svg", {"a": [(0, 1), "xy"]})
    with pytest.raises(ValueError, match="series 'a'"):
        _line(tmp_path / "c.svg", {"a": []})
    with pytest.raises(ValueError, match="non-empty"):
        _line(tmp_path / "c.svg", {})
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_no_file(tmp_path):
    missing = tmp_path / "missing" / "c.svg"
    with pytest.raises(FileNotFoundError):
        _line(missing, {"a": [(0, 1)]})
    assert os.listdir(tmp_path) == []
    # The target is a folder: the move fails and the temporary file goes.
    (tmp_path / "c.svg").mkdir()
    with pytest.raises(OSError):
        _line(tmp_path / "c.svg", {"a": [(0, 1)]})
    assert os.listdir(tmp_path) == ["c.svg"]
    assert os.listdir(tmp_path / "c.svg") == []


def test_a_failed_chart_keeps_the_old_file(tmp_path):
    path = _line(tmp_path / "c.svg", {"a": [(0, 1)]})
    before = path.read_text()
    with pytest.raises(ValueError):
        _line(path, {"a": [(0, math.nan)]})
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["c.svg"]


def test_an_interrupted_move_keeps_the_old_file(tmp_path, monkeypatch):
    path = _line(tmp_path / "c.svg", {"a": [(0, 1)]})
    before = path.read_text()

    def fail(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(plotting.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _line(path, {"b": [(0, 2)]})
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["c.svg"]


def test_constant_series_and_single_point(tmp_path):
    path = _line(
        tmp_path / "c.svg",
        {"flat": [(0, 0.7), (1, 0.7), (2, 0.7)], "one": [(1, 0.7)]},
    )
    root = ET.parse(path).getroot()
    lines = _series(root)
    assert len({y for _, y in lines["flat"]}) == 1
    assert _inside(root, lines["flat"] + lines["one"])
    left, top, right, bottom = _frame(root)
    # The flat line sits inside the frame, not on its edge.
    assert top < lines["flat"][0][1] < bottom
    only = _line(tmp_path / "d.svg", {"zero": [(0, 0)]})
    (point,) = _series(ET.parse(only).getroot())["zero"]
    assert all(math.isfinite(v) for v in point)


def test_ticks_are_round_and_cover_the_data(tmp_path):
    path = _line(tmp_path / "c.svg", {"s": [(0.13, -3.7), (0.87, 41.2)]})
    root = ET.parse(path).getroot()
    labels = [float(e.text) for e in _tagged(root, "tick-label")]
    # x ticks follow the y ticks; split where the values drop back.
    split = next(i for i in range(1, len(labels)) if labels[i] < labels[i - 1])
    for ticks, low, high in (
        (labels[split:], 0.13, 0.87),
        (labels[:split], -3.7, 41.2),
    ):
        steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
        assert len(steps) == 1
        (step,) = steps
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 9) in (1, 2, 2.5, 5)
        assert ticks[0] <= low and ticks[-1] >= high
        assert 3 <= len(ticks) <= 12


def test_characters_xml_cannot_hold_are_replaced(tmp_path):
    path = _line(tmp_path / "c.svg", {"a\x01b": [(0, 1)]})
    root = ET.parse(path).getroot()
    assert _tagged(root, "series")[0].get("data-label") == "a\ufffdb"


def test_many_series_stay_distinct(tmp_path):
    series = {f"s{i}": [(0, i), (1, i + 1)] for i in range(12)}
    root = ET.parse(_line(tmp_path / "c.svg", series)).getroot()
    styles = {
        (e.get("stroke"), e.get("stroke-dasharray"))
        for e in root.iter()
        if _tag(e) == "polyline"
    }
    assert len(styles) == 12


def _bars(root):
    return {
        r.get("data-label"): (float(r.get("y")), float(r.get("height")))
        for r in _tagged(root, "bar")
    }


def test_bar_chart_heights_and_sign(tmp_path):
    path = plotting.bar_chart(
        {"a": 2.0, "b": 4.0, "c&<": -1.0},
        tmp_path / "b.svg",
        title="T",
        x_label="layer",
        y_label="v",
    )
    root = ET.parse(path).getroot()
    bars = _bars(root)
    assert list(bars) == ["a", "b", "c&<"]
    assert bars["b"][1] == pytest.approx(2 * bars["a"][1], abs=0.02)
    assert bars["c&<"][1] == pytest.approx(bars["a"][1] / 2, abs=0.02)
    (baseline,) = _tagged(root, "baseline")
    zero = float(baseline.get("y1"))
    # Positive bars end on the baseline, the negative one starts there.
    assert bars["a"][0] + bars["a"][1] == pytest.approx(zero, abs=0.01)
    assert bars["c&<"][0] == pytest.approx(zero, abs=0.01)
    assert not any(e.get("transform") for e in _tagged(root, "category"))


def test_bar_chart_turns_many_labels(tmp_path):
    values = {f"layer_{i}": float(i) for i in range(12)}
    path = plotting.bar_chart(
        values, tmp_path / "b.svg", title="T", x_label="x", y_label="y"
    )
    root = ET.parse(path).getroot()
    categories = _tagged(root, "category")
    assert [e.text for e in categories] == list(values)
    assert all("rotate(-45" in e.get("transform") for e in categories)
    # All zero: a range around zero, no division by zero.
    flat = plotting.bar_chart(
        {"a": 0}, tmp_path / "z.svg", title="T", x_label="x", y_label="y"
    )
    assert _bars(ET.parse(flat).getroot())["a"][1] == 0


def test_bar_chart_nan_names_the_category(tmp_path):
    with pytest.raises(ValueError, match="category 'b'"):
        plotting.bar_chart(
            {"a": 1, "b": math.nan},
            tmp_path / "b.svg",
            title="T",
            x_label="x",
            y_label="y",
        )
    assert os.listdir(tmp_path) == []
