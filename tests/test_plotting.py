"""Charts drawn with matplotlib, read back: SVG with ElementTree, PNG
decoded."""

import base64
import math
import os
import re
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from aimet_keras import plotting

matplotlib = pytest.importorskip("matplotlib")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _line(path, series, **kwargs):
    kwargs = {"title": "T", "x_label": "x", "y_label": "y", **kwargs}
    return plotting.line_chart(series, path, **kwargs)


def _bars(path, values, **kwargs):
    kwargs = {"title": "T", "x_label": "layer", "y_label": "v", **kwargs}
    return plotting.bar_chart(values, path, **kwargs)


def _tag(element):
    return element.tag.split("}")[-1]


def _root(path):
    return ET.parse(path).getroot()


def _group(root, gid):
    """The ``<g id=gid>``, or None."""
    found = [e for e in root.iter() if _tag(e) == "g" and e.get("id") == gid]
    assert len(found) <= 1, gid
    return found[0] if found else None


def _ids(root, prefix):
    return [
        e.get("id")
        for e in root.iter()
        if _tag(e) == "g" and (e.get("id") or "").startswith(prefix)
    ]


def _dots(group):
    """The canvas positions of a line's or a scatter's markers."""
    return [
        (float(e.get("x")), float(e.get("y")))
        for e in group.iter()
        if _tag(e) == "use"
    ]


def _vertices(group):
    """The canvas points of the first ``<path d=...>`` drawn in ``group``."""
    path = next(e for e in group if _tag(e) == "path")
    numbers = [float(n) for n in _NUMBER.findall(path.get("d"))]
    return list(zip(numbers[::2], numbers[1::2]))


def _texts(element):
    return ["".join(e.itertext()) for e in element.iter() if _tag(e) == "text"]


def _legend(root):
    return _texts(_group(root, "legend_1"))


def _ticks(root, axis):
    """An axis's tick values (``axis`` 1: x, 2: y)."""
    group = _group(root, f"matplotlib.axis_{axis}")
    labels = [
        _texts(e)[0]
        for e in group
        if re.fullmatch(r"[xy]tick_\d+", e.get("id") or "")
    ]
    assert labels
    return [float(t.replace("\u2212", "-")) for t in labels]


def test_one_line_per_series_through_every_point(tmp_path):
    path = _line(
        tmp_path / "c.svg",
        {"a": [(3, 1.0), (1, 2.0), (2, 0.5)], "b": [(1, 0.0), (4, 3.0)]},
        title="Scores",
        x_label="ratio",
        y_label="score",
    )
    assert path == tmp_path / "c.svg"
    root = _root(path)
    assert _tag(root) == "svg"
    assert _ids(root, "series-") == ["series-0", "series-1"]
    a, b = _group(root, "series-0"), _group(root, "series-1")
    assert len(_dots(a)) == 3 and len(_dots(b)) == 2
    # The line goes through the dots, sorted by x.
    np.testing.assert_allclose(_vertices(a), _dots(a), atol=1e-3)
    xs = [x for x, _ in _dots(a)]
    assert xs == sorted(xs) and len(set(xs)) == 3
    # Sorted by x the y are 2.0, 0.5, 1.0: higher values higher up.
    ys = [y for _, y in _dots(a)]
    assert ys[1] > ys[2] > ys[0]
    # Linear: equal steps in the data are equal steps on the canvas.
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=1e-3)
    texts = _texts(root)
    for text in ("Scores", "ratio", "score"):
        assert text in texts
    assert _legend(root) == ["a", "b"]
    strokes = {
        re.search(r"stroke: (#\w+)", _vertices_style(g)).group(1)
        for g in (a, b)
    }
    assert len(strokes) == 2
    assert not _ids(root, "hline-") and not _ids(root, "marker-")


def _vertices_style(group):
    return next(e for e in group if _tag(e) == "path").get("style")


def test_text_is_kept_literally_and_escaped(tmp_path):
    path = _line(
        tmp_path / "c.svg",
        {"plain": [(0, 1)], "a<&>b": [(1, 2)], "$x$\x01": [(2, 3)]},
        hlines={'limit "5"': 1.5},
        title="x < y & $z$",
    )
    raw = path.read_text()
    assert "a&lt;&amp;&gt;b" in raw and "x &lt; y &amp; $z$" in raw
    root = _root(path)
    assert _legend(root) == ["plain", "a<&>b", "$x$\ufffd", 'limit "5"']
    assert "x < y & $z$" in _texts(root)


def test_hline_is_drawn_at_its_value(tmp_path):
    path = _line(
        tmp_path / "c.svg", {"s": [(0, 0.0), (1, 1.0)]}, hlines={"t": 0.25}
    )
    root = _root(path)
    (low, high) = _dots(_group(root, "series-0"))
    hline = _group(root, "hline-0")
    assert "stroke-dasharray" in _vertices_style(hline)
    (x1, y1), (x2, y2) = _vertices(hline)
    assert y1 == y2 == pytest.approx(low[1] + 0.25 * (high[1] - low[1]))
    # Across the whole plot, past the first and last points.
    assert x1 < low[0] and x2 > high[0]
    # Named at its end and in the legend.
    assert _texts(root).count("t") == 2 and _legend(root) == ["s", "t"]


def test_hline_outside_the_data_widens_the_axis(tmp_path):
    path = _line(
        tmp_path / "c.svg", {"s": [(0, 1.0), (1, 2.0)]}, hlines={"t": 9}
    )
    root = _root(path)
    (_, y), _ = _vertices(_group(root, "hline-0"))
    assert y < min(y for _, y in _dots(_group(root, "series-0")))
    assert max(_ticks(root, 2)) >= 9


def test_marker_rings_the_chosen_point(tmp_path):
    path = _line(
        tmp_path / "c.svg",
        {"a": [(0, 1), (1, 3), (2, 2)], "b": [(0, 0), (2, 1)]},
        markers={"b": (2, 1)},
    )
    root = _root(path)
    assert _ids(root, "marker-") == ["marker-1"]
    (ring,) = _dots(_group(root, "marker-1"))
    assert ring == pytest.approx(_dots(_group(root, "series-1"))[1])
    assert _legend(root) == ["a", "b"]
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
    with pytest.raises(ValueError, match=r"markers\['a'\]"):
        _line(tmp_path / "c.svg", {"a": [(0, 1)]}, markers={"a": (bad, 1)})
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


def test_constant_series_and_single_point(tmp_path):
    path = _line(
        tmp_path / "c.svg",
        {"flat": [(0, 0.7), (1, 0.7), (2, 0.7)], "one": [(1, 0.7)]},
    )
    root = _root(path)
    flat = _dots(_group(root, "series-0"))
    assert len({y for _, y in flat}) == 1
    ticks = _ticks(root, 2)
    # A range around the value, so the line is inside, not on an edge.
    assert min(ticks) < 0.7 < max(ticks)
    only = _line(tmp_path / "d.svg", {"zero": [(0, 0)]})
    (point,) = _dots(_group(_root(only), "series-0"))
    assert all(math.isfinite(v) for v in point)


def test_many_series_stay_distinct(tmp_path):
    series = {f"s{i}": [(0, i), (1, i + 1)] for i in range(12)}
    root = _root(_line(tmp_path / "c.svg", series))
    styles = {_vertices_style(_group(root, f"series-{i}")) for i in range(12)}
    assert len(styles) == 12
    assert _legend(root) == list(series)


def test_x_tick_labels_name_the_positions(tmp_path):
    names = [f"block{i}/conv" for i in range(40)]
    series = {
        "w8": [(i, 30 + i % 3) for i in range(40)],
        "w4": [(i, 20 - i % 5) for i in range(40)],
    }
    path = _line(
        tmp_path / "c.svg",
        series,
        x_tick_labels=names,
        markers={"w4": (7, 18)},
    )
    root = _root(path)
    axis = _group(root, "matplotlib.axis_1")
    texts = [e for e in axis.iter() if _tag(e) == "text" and e.text in names]
    assert [e.text for e in texts] == names
    assert all("rotate(-60" in e.get("transform") for e in texts)
    # Each label sits under its point.
    dots = _dots(_group(root, "series-0"))
    assert len(dots) == 40
    few = _root(_line(tmp_path / "d.svg", {"a": [(0, 1)]}))
    assert _width(root) > 1.25 * _width(few)
    with pytest.raises(ValueError, match=r"series 'a', point 0 has x 3"):
        _line(tmp_path / "e.svg", {"a": [(3, 1)]}, x_tick_labels=["a", "b"])
    with pytest.raises(ValueError, match="x_tick_labels is empty"):
        _line(tmp_path / "e.svg", {"a": [(0, 1)]}, x_tick_labels=[])
    with pytest.raises(TypeError, match="list of strings"):
        _line(tmp_path / "e.svg", {"a": [(0, 1)]}, x_tick_labels="ab")
    assert not (tmp_path / "e.svg").exists()


def _width(root):
    return float(root.get("width").removesuffix("pt"))


def _box(group):
    xs, ys = zip(*_vertices(group))
    return min(xs), min(ys), max(xs), max(ys)


def test_bar_heights_and_sign(tmp_path):
    path = _bars(tmp_path / "b.svg", {"a": 2.0, "b": 4.0, "c&<": -1.0})
    root = _root(path)
    assert _ids(root, "bar-") == ["bar-0", "bar-1", "bar-2"]
    boxes = [_box(_group(root, f"bar-{i}")) for i in range(3)]
    heights = [bottom - top for _, top, _, bottom in boxes]
    assert heights[1] == pytest.approx(2 * heights[0], abs=0.01)
    assert heights[2] == pytest.approx(heights[0] / 2, abs=0.01)
    (_, zero), _ = _vertices(_group(root, "baseline"))
    # Positive bars end on the baseline, the negative one starts there.
    assert boxes[0][3] == pytest.approx(zero, abs=0.01)
    assert boxes[2][1] == pytest.approx(zero, abs=0.01)
    # In the order given, left to right, named underneath.
    assert boxes[0][0] < boxes[1][0] < boxes[2][0]
    texts = _texts(root)
    assert {"a", "b", "c&<", "T", "layer", "v"} <= set(texts)


def test_many_bars_lie_as_rows_first_at_the_top(tmp_path):
    values = {f"layer_{i}": float(i + 1) for i in range(20)}
    root = _root(_bars(tmp_path / "b.svg", values))
    boxes = [_box(_group(root, f"bar-{i}")) for i in range(20)]
    lengths = [right - left for left, _, right, _ in boxes]
    assert lengths[9] == pytest.approx(10 * lengths[0], rel=1e-3)
    tops = [top for _, top, _, _ in boxes]
    assert tops == sorted(tops)
    axis = _texts(_group(root, "matplotlib.axis_2"))
    assert axis[: len(values)] == list(values) and axis[-1] == "layer"
    # Eight or fewer short names stand upright; more are turned.
    upright = _root(_bars(tmp_path / "u.svg", {"a": 1, "b": 2}))
    turned = _root(_bars(tmp_path / "t.svg", {f"n{i}": i for i in range(9)}))
    assert _turns(upright, ["a", "b"]) == {"rotate(-0"}
    assert _turns(turned, [f"n{i}" for i in range(9)]) == {"rotate(-45"}
    # All zero: bars of no height, no division by zero.
    flat = _root(_bars(tmp_path / "z.svg", {"a": 0}))
    _, top, _, bottom = _box(_group(flat, "bar-0"))
    assert top == bottom


def _turns(root, names):
    return {
        e.get("transform").split()[0]
        for e in root.iter()
        if _tag(e) == "text" and e.text in names
    }


def test_bar_chart_nan_names_the_category(tmp_path):
    with pytest.raises(ValueError, match="category 'b'"):
        _bars(tmp_path / "b.svg", {"a": 1, "b": math.nan})
    with pytest.raises(TypeError, match="category 'a'"):
        _bars(tmp_path / "b.svg", {"a": "tall"})
    with pytest.raises(ValueError, match="non-empty"):
        _bars(tmp_path / "b.svg", {})
    assert os.listdir(tmp_path) == []


def _histograms():
    rng = np.random.default_rng(0)
    return {
        f"layer{i}": np.histogram(rng.normal(size=500) * (i + 1), 20)[::-1]
        for i in range(3)
    }


def test_histogram_grid_panels_and_ranges(tmp_path):
    histograms = _histograms()
    path = plotting.histogram_grid(
        histograms,
        tmp_path / "h.svg",
        title="Activations",
        ranges={"layer1": (-1.0, 2.0)},
        columns=2,
    )
    root = _root(path)
    assert _ids(root, "hist-") == ["hist-0", "hist-1", "hist-2"]
    assert _ids(root, "range-") == ["range-1-min", "range-1-max"]
    texts = _texts(root)
    assert {"Activations", "count (log scale)", *histograms} <= set(texts)
    # Two columns, two rows: panels 0 and 2 share a left edge.
    lefts = [_box(_group(root, f"hist-{i}"))[0] for i in range(3)]
    assert lefts[0] == pytest.approx(lefts[2]) and lefts[1] > lefts[0]
    # The range lines stand where -1 and 2 fall in the bins.
    edges, _ = histograms["layer1"]
    left, _, right, _ = _box(_group(root, "hist-1"))
    for end, value in (("min", -1.0), ("max", 2.0)):
        (x1, y1), (x2, y2) = _vertices(_group(root, f"range-1-{end}"))
        fraction = (value - edges[0]) / (edges[-1] - edges[0])
        assert x1 == x2 == pytest.approx(left + fraction * (right - left))
        assert y1 != y2
    # The tallest bin is the highest step.
    edges, counts = histograms["layer0"]
    outline = _vertices(_group(root, "hist-0"))
    top = min(y for _, y in outline)
    x = min(x for x, y in outline if y == top)
    left, _, right, _ = _box(_group(root, "hist-0"))
    tallest = edges[np.argmax(counts)]
    fraction = (tallest - edges[0]) / (edges[-1] - edges[0])
    assert x == pytest.approx(left + fraction * (right - left), abs=0.01)


def test_histogram_grid_scales_and_empty_bins(tmp_path):
    edges = np.linspace(0, 1, 5)
    histograms = {
        "sparse": (edges, np.array([100, 0, 0, 1])),
        "empty": (edges, np.zeros(4)),
    }
    log = _root(
        plotting.histogram_grid(histograms, tmp_path / "a.svg", title="T")
    )
    linear = _root(
        plotting.histogram_grid(
            histograms, tmp_path / "b.svg", title="T", log=False
        )
    )
    assert "count" in _texts(linear) and "count" not in _texts(log)

    def heights(root):
        _, top, _, bottom = _box(_group(root, "hist-0"))
        ys = sorted({y for _, y in _vertices(_group(root, "hist-0"))})
        return [bottom - y for y in ys[:-1]]

    # 100 against 1: on the log scale the small bin still shows.
    tall, short = heights(log)
    assert 0.1 < short / tall < 0.5
    tall, short = heights(linear)
    assert short / tall == pytest.approx(0.01, abs=1e-3)


@pytest.mark.parametrize(
    "histograms, ranges, columns, match",
    [
        ({}, None, 4, "non-empty"),
        ({"a": ([0, 1], [1, 2])}, None, 4, "'a'.* 2 bin edges and 2 counts"),
        ({"a": ([0, 2, 1], [1, 2])}, None, 4, "'a'.* do not increase"),
        ({"a": ([0, 1, 2], [1, -2])}, None, 4, "'a'.* negative"),
        ({"a": ([0, 1, 2], [1, math.nan])}, None, 4, "'a'.* NaN or inf"),
        ({"a": ([0, 1], [1])}, {"b": (0, 1)}, 4, "'b'"),
        ({"a": ([0, 1], [1])}, {"a": (1, 0)}, 4, "lo > hi"),
        ({"a": ([0, 1], [1])}, None, 0, "columns"),
    ],
)
def test_histogram_grid_refuses(tmp_path, histograms, ranges, columns, match):
    with pytest.raises(ValueError, match=match):
        plotting.histogram_grid(
            histograms,
            tmp_path / "h.svg",
            title="T",
            ranges=ranges,
            columns=columns,
        )
    assert os.listdir(tmp_path) == []


def test_channel_ranges_bars_from_min_to_max(tmp_path):
    mins = np.array([-1.0, -4.0, 0.0, -0.5])
    maxs = np.array([1.0, 4.0, 2.0, -0.5])
    path = plotting.channel_ranges(
        {"before": (mins, maxs), "after": (mins / 2, maxs / 2)},
        tmp_path / "c.svg",
        title="conv1",
        y_label="kernel",
    )
    root = _root(path)
    assert len(_ids(root, "channels-0-")) == len(_ids(root, "channels-1-")) == 4
    assert {"conv1", "before", "after", "kernel"} <= set(_texts(root))

    def spans(panel):
        boxes = [_box(_group(root, f"channels-{panel}-{c}")) for c in range(4)]
        return boxes, [bottom - top for _, top, _, bottom in boxes]

    before, heights = spans(0)
    assert heights[1] == pytest.approx(4 * heights[0], abs=0.01)
    assert heights[2] == pytest.approx(heights[0], abs=0.01)
    assert heights[3] == 0
    # Channel 0 is centred on zero, channel 2 sits on it.
    assert before[0][1] + before[0][3] == pytest.approx(2 * before[2][3])
    # One y axis for both panels: halved ranges are half the height.
    after, halved = spans(1)
    assert halved == pytest.approx([h / 2 for h in heights], abs=0.01)
    assert after[0][0] > before[3][2]  # side by side
    assert "kernel" not in _texts(_group(root, "axes_2"))


@pytest.mark.parametrize(
    "ranges, match",
    [
        ({}, "non-empty"),
        ({"p": ([0, 1], [1])}, r"\['p'\] has 2 mins and 1 maxs"),
        ({"p": ([0, 2], [1, 1])}, r"\['p'\]: channel 1 has min 2"),
        ({"p": ([0, math.inf], [1, 1])}, r"\['p'\] mins holds NaN or inf"),
        ({"p": ([[0]], [[1]])}, r"\['p'\] mins has shape \(1, 1\)"),
        ({"p": [0, 1, 2]}, "not a pair"),
    ],
)
def test_channel_ranges_refuses(tmp_path, ranges, match):
    with pytest.raises(ValueError, match=match):
        plotting.channel_ranges(ranges, tmp_path / "c.svg", title="T")
    assert os.listdir(tmp_path) == []


def test_pareto_chart(tmp_path):
    points = [(8, 0.91, "w8a8"), (4, 0.87, "w4a8"), (6, 0.85, ""), (2, 0.5, "")]
    path = plotting.pareto_chart(
        points,
        tmp_path / "p.svg",
        title="Trade-off",
        x_label="bits",
        y_label="accuracy",
        front=[(8, 0.91), (2, 0.5), (4, 0.87)],
        chosen=(4, 0.87),
    )
    root = _root(path)
    dots = _dots(_group(root, "points"))
    assert len(dots) == 4
    texts = _texts(root)
    assert {"w8a8", "w4a8", "Trade-off", "bits", "accuracy"} <= set(texts)
    assert "chosen (4, 0.87)" in texts
    assert _legend(root) == ["candidates", "Pareto front", "chosen"]
    # The front goes through its points, sorted by x.
    front = _vertices(_group(root, "front"))
    np.testing.assert_allclose(front, [dots[3], dots[1], dots[0]], atol=1e-3)
    (ring,) = _dots(_group(root, "chosen"))
    assert ring == pytest.approx(dots[1])
    bare = _root(
        plotting.pareto_chart(
            points[:1], tmp_path / "q.svg", title="T", x_label="x", y_label="y"
        )
    )
    assert _group(bare, "front") is None and _group(bare, "chosen") is None
    assert _legend(bare) == ["candidates"]


def test_pareto_chart_refuses(tmp_path):
    def chart(points, **kwargs):
        plotting.pareto_chart(
            points,
            tmp_path / "p.svg",
            title="T",
            x_label="x",
            y_label="y",
            **kwargs,
        )

    with pytest.raises(ValueError, match="non-empty"):
        chart([])
    with pytest.raises(TypeError, match=r"points\[1\]"):
        chart([(1, 2, "a"), (1, 2)])
    with pytest.raises(ValueError, match=r"points\[0\] is \(nan, 2.0\)"):
        chart([(math.nan, 2, "a")])
    with pytest.raises(ValueError, match=r"front\[1\]"):
        chart([(1, 2, "a")], front=[(1, 2), (math.inf, 3)])
    with pytest.raises(TypeError, match="chosen"):
        chart([(1, 2, "a")], chosen=(1, 2, 3))
    assert os.listdir(tmp_path) == []


def _every_chart(folder, suffix):
    """Each chart once, written as ``suffix``."""
    edges, counts = np.linspace(-1, 1, 9), np.arange(8)
    return [
        _line(folder / f"line{suffix}", {"a": [(0, 1), (1, 2)]}),
        _bars(folder / f"bars{suffix}", {"a": 1, "b": 2}),
        plotting.histogram_grid(
            {"a": (edges, counts)}, folder / f"hist{suffix}", title="T"
        ),
        plotting.channel_ranges(
            {"a": (-counts, counts)}, folder / f"ranges{suffix}", title="T"
        ),
        plotting.pareto_chart(
            [(1, 2, "a")],
            folder / f"pareto{suffix}",
            title="T",
            x_label="x",
            y_label="y",
        ),
    ]


def test_png_files_decode(tmp_path):
    from matplotlib.image import imread

    paths = _every_chart(tmp_path, ".png")
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[-8:-4] == b"IEND"
        image = imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        # Not blank: a white background with something drawn on it.
        assert image[..., :3].min() < 0.5 and image[..., :3].max() == 1.0
    # 8 x 4.8 inches at 120 dpi.
    assert imread(paths[0]).shape[:2] == (576, 960)
    uppercase = _line(tmp_path / "UP.PNG", {"a": [(0, 1)]})
    assert uppercase.read_bytes()[:4] == b"\x89PNG"


def test_data_uri_embeds_the_file(tmp_path):
    for suffix, mime in ((".png", "image/png"), (".svg", "image/svg+xml")):
        path = _line(tmp_path / f"c{suffix}", {"a": [(0, 1)]})
        uri = plotting.data_uri(path)
        head, encoded = uri.split(",", 1)
        assert head == f"data:{mime};base64"
        assert base64.b64decode(encoded) == path.read_bytes()
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        plotting.data_uri(tmp_path / "c.pdf")


@pytest.mark.parametrize("name", ["c.pdf", "c.jpg", "c", "c.svg.txt"])
def test_other_suffixes_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match=rf"{name}.*\.png or \.svg"):
        _line(tmp_path / name, {"a": [(0, 1)]})
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        _bars(tmp_path / name, {"a": 1})
    assert os.listdir(tmp_path) == []


def test_the_same_chart_writes_the_same_file(tmp_path):
    series = {"a": [(0, 1), (1, 2)], "b": [(0, 2)]}
    first = _line(tmp_path / "a.svg", series, hlines={"t": 1})
    second = _line(tmp_path / "b.svg", series, hlines={"t": 1})
    assert first.read_bytes() == second.read_bytes()


def test_a_failed_write_leaves_no_file(tmp_path):
    missing = tmp_path / "missing" / "c.svg"
    with pytest.raises(FileNotFoundError):
        _line(missing, {"a": [(0, 1)]})
    assert os.listdir(tmp_path) == []
    # The target is a folder: the move fails and the temporary file goes.
    (tmp_path / "c.png").mkdir()
    with pytest.raises(OSError):
        _line(tmp_path / "c.png", {"a": [(0, 1)]})
    assert os.listdir(tmp_path) == ["c.png"]
    assert os.listdir(tmp_path / "c.png") == []


def test_a_failed_chart_keeps_the_old_file(tmp_path):
    path = _line(tmp_path / "c.svg", {"a": [(0, 1)]})
    before = path.read_bytes()
    with pytest.raises(ValueError):
        _line(path, {"a": [(0, math.nan)]})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.svg"]


def test_an_interrupted_move_keeps_the_old_file(tmp_path, monkeypatch):
    path = _line(tmp_path / "c.png", {"a": [(0, 1)]})
    before = path.read_bytes()

    def fail(source, target):
        assert os.path.getsize(source) > 0  # drawn in full first
        raise OSError("disk full")

    monkeypatch.setattr(plotting.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _line(path, {"b": [(0, 2)]})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.png"]


def test_drawing_failure_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def fail(*args, **kwargs):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(RuntimeError, match="renderer broke"):
        _line(tmp_path / "c.svg", {"a": [(0, 1)]})
    assert os.listdir(tmp_path) == []


def test_settings_are_put_back(tmp_path):
    before = dict(matplotlib.rcParams)
    _line(tmp_path / "c.svg", {"a": [(0, 1)]})
    assert dict(matplotlib.rcParams) == before


def test_threads_draw_the_same_charts(tmp_path):
    def charts(folder):
        folder.mkdir()
        return [
            _line(folder / "c.svg", {"a": [(0, 1), (1, 2)]}, hlines={"t": 1}),
            _bars(folder / "b.svg", {"a": 1, "b": 2}),
        ]

    expected = [p.read_bytes() for p in charts(tmp_path / "serial")]
    results = {}

    def draw(index):
        try:
            paths = charts(tmp_path / f"thread{index}")
            results[index] = [p.read_bytes() for p in paths]
        except BaseException as error:  # reported below
            results[index] = error

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: expected for i in range(3)}


_HEADLESS = """
import sys
import aimet_keras.plotting as plotting
assert "matplotlib" not in sys.modules, "imported with the module"
path = plotting.line_chart(
    {"a": [(0, 1), (1, 2)]}, sys.argv[1], title="T", x_label="x", y_label="y")
assert "matplotlib.pyplot" not in sys.modules
print(path.stat().st_size)
"""


def test_headless_without_a_backend_or_display(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPLBACKEND", "DISPLAY", "WAYLAND_DISPLAY")
    }
    out = subprocess.run(
        [sys.executable, "-c", _HEADLESS, str(tmp_path / "c.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 0


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ModuleNotFoundError, match=r'"aimet-keras\[plot\]"'):
        _line(tmp_path / "c.svg", {"a": [(0, 1)]})
    assert os.listdir(tmp_path) == []
