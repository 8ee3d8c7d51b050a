"""SVG charts without a dependency: line and bar charts for analysis reports.

Analysis features (compression sensitivity, per-layer quantization error)
draw their pictures here rather than through matplotlib, which aimet_keras
does not depend on. A chart is one standalone SVG file that any browser
opens. Its elements carry classes (``series``, ``point``, ``marker``,
``hline``, ``legend``, ``bar``, ``title``, ``x-label``, ``y-label``) and
``data-label`` attributes, so tests and style sheets can find them.

Files are written atomically: the chart is drawn in full first, written to
a temporary file beside ``path`` and moved over it, so a failure leaves no
partial file (and no file at all where there was none).

Example:

>>> import os, tempfile
>>> folder = tempfile.TemporaryDirectory()
>>> path = line_chart(
...     {"train": [(1, 0.9), (2, 0.5), (3, 0.4)]},
...     os.path.join(folder.name, "loss.svg"),
...     title="Loss", x_label="epoch", y_label="loss")
>>> path.name, path.read_text().count("<polyline")
('loss.svg', 1)
>>> folder.cleanup()
"""

import math
import os
import pathlib
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping

__all__ = ["bar_chart", "line_chart"]

_SVG_NS = "http://www.w3.org/2000/svg"
# Tableau's ten colours; past ten series they repeat with a dash pattern.
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_DASHES = (None, "7 3", "2 3", "9 3 2 3")
_HLINE_COLOUR = "#333333"
_HLINE_DASH = "6 4"
_GRID = "#e4e4e4"
_FONT = "sans-serif"
_CHAR_WIDTH = 7  # rough width of one 12px character
_PLOT_WIDTH = 560
_PLOT_HEIGHT = 320
_TOP = 44
_ENTRY_HEIGHT = 18
# Characters XML 1.0 cannot hold; they become U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def line_chart(
    series,
    path,
    *,
    title,
    x_label,
    y_label,
    hlines=None,
    markers=None,
):
    """Writes a line chart of one or more series as an SVG file.

    Each series is a polyline through its points (sorted by x) with a dot
    on each point, in its own colour; a legend on the right names the
    series and the reference lines. Both axes get ticks at round values
    (steps of 1, 2, 2.5 or 5 times a power of ten) that cover every point,
    reference line and marker. A single point or a constant series gets a
    range around its value.

    Args:
        series: ``{label: [(x, y), ...]}``, at least one series of at least
            one point; labels are shown with ``str``.
        path: the ``.svg`` file to write; its folder must exist.
        title: the chart's title.
        x_label: the x axis's label.
        y_label: the y axis's label.
        hlines: ``{label: y}``: dashed horizontal reference lines, labelled
            at their right end and in the legend. Defaults to None.
        markers: ``{series label: (x, y)}``: one point per series to
            highlight with a filled ring in the series' colour (for
            example the value chosen). Defaults to None.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for no series, an empty series, a NaN or infinite
            coordinate (naming the series and the point), or a marker for
            a series not in ``series``.
        TypeError: for a point that is not a pair of numbers.
        OSError: when the file cannot be written (nothing is left behind).

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = line_chart(
    ...     {"a": [(0.25, 0.5), (0.5, 0.8)], "b": [(0.25, 0.7), (0.5, 0.9)]},
    ...     os.path.join(folder.name, "scores.svg"),
    ...     title="Scores", x_label="ratio", y_label="score",
    ...     hlines={"threshold": 0.75}, markers={"a": (0.5, 0.8)})
    >>> text = path.read_text()
    >>> text.count("<polyline"), text.count('class="hline"')
    (2, 1)
    >>> folder.cleanup()
    """
    lines = _check_series(series)
    references = [
        (_text(label), _number(f"hline {label!r}", y))
        for label, y in (hlines or {}).items()
    ]
    highlighted = {}
    for key, point in (markers or {}).items():
        if key not in series:
            raise ValueError(
                f"markers names series {key!r}, which series does not have; "
                f"series: {list(series)}."
            )
        highlighted[key] = _point(f"markers[{key!r}]", point)

    # 1. Ranges and ticks that hold every point, line and marker.
    xs = [x for _, _, points in lines for x, _ in points]
    ys = [y for _, _, points in lines for _, y in points]
    xs += [x for x, _ in highlighted.values()]
    ys += [y for _, y in highlighted.values()] + [y for _, y in references]
    x_ticks, x_text = _ticks(xs)
    y_ticks, y_text = _ticks(ys)

    # 2. The canvas: room for the y tick labels and the legend.
    legend_labels = [label for _, label, _ in lines]
    legend_labels += [label for label, _ in references]
    legend_width = 48 + _CHAR_WIDTH * max(len(t) for t in legend_labels)
    left = 52 + _CHAR_WIDTH * max(len(y_text(t)) for t in y_ticks)
    legend_height = _ENTRY_HEIGHT * len(legend_labels) + 10
    width = left + _PLOT_WIDTH + 24 + legend_width
    height = _TOP + max(_PLOT_HEIGHT, legend_height) + 60
    box = (left, _TOP, _PLOT_WIDTH, _PLOT_HEIGHT)
    sx = _scale(x_ticks, left, _PLOT_WIDTH)
    sy = _scale(y_ticks, _TOP + _PLOT_HEIGHT, -_PLOT_HEIGHT)

    # 3. Axes, then reference lines, series and markers on top.
    root = _canvas(width, height, title)
    _axes(root, box, y_ticks, sy, y_text, x_label, y_label)
    for tick in x_ticks:
        x = sx(tick)
        _add(
            root,
            "line",
            cls="grid",
            x1=x,
            x2=x,
            y1=_TOP,
            y2=_TOP + _PLOT_HEIGHT,
            stroke=_GRID,
        )
        _add(
            root,
            "text",
            x_text(tick),
            cls="tick-label",
            x=x,
            y=_TOP + _PLOT_HEIGHT + 18,
            text_anchor="middle",
        )
    for label, y in references:
        _across(
            root,
            box,
            sy(y),
            cls="hline",
            data_label=label,
            stroke=_HLINE_COLOUR,
            stroke_width=1.5,
            stroke_dasharray=_HLINE_DASH,
        )
        _add(
            root,
            "text",
            label,
            cls="hline-label",
            x=left + _PLOT_WIDTH - 4,
            y=sy(y) - 5,
            text_anchor="end",
            fill=_HLINE_COLOUR,
        )
    for index, (_, label, points) in enumerate(lines):
        colour, dash = _style(index)
        group = _add(root, "g", cls="series", data_label=label)
        _add(
            group,
            "polyline",
            points=" ".join(f"{sx(x):.2f},{sy(y):.2f}" for x, y in points),
            fill="none",
            stroke=colour,
            stroke_width=2,
            stroke_dasharray=dash,
        )
        for x, y in points:
            dot = _add(
                group,
                "circle",
                cls="point",
                cx=sx(x),
                cy=sy(y),
                r=3,
                fill=colour,
            )
            _add(dot, "title", f"{label}: ({x:g}, {y:g})")
    for index, (key, label, _) in enumerate(lines):
        if key not in highlighted:
            continue
        colour = _style(index)[0]
        x, y = highlighted[key]
        ring = _add(root, "g", cls="marker", data_label=label)
        _add(ring, "title", f"{label}: ({x:g}, {y:g})")
        _add(
            ring,
            "circle",
            cx=sx(x),
            cy=sy(y),
            r=8,
            fill="none",
            stroke=colour,
            stroke_width=2.5,
        )
        _add(ring, "circle", cx=sx(x), cy=sy(y), r=4.5, fill=colour)

    # 4. The legend: a swatch and a label per series and reference line.
    legend = _add(root, "g", cls="legend")
    swatch_x = left + _PLOT_WIDTH + 24
    entries = [
        (label, *_style(i), True) for i, (_, label, _) in enumerate(lines)
    ]
    entries += [
        (label, _HLINE_COLOUR, _HLINE_DASH, False) for label, _ in references
    ]
    for row, (label, colour, dash, dot) in enumerate(entries):
        y = _TOP + 10 + row * _ENTRY_HEIGHT
        entry = _add(legend, "g", cls="legend-entry", data_label=label)
        _add(
            entry,
            "line",
            x1=swatch_x,
            x2=swatch_x + 28,
            y1=y,
            y2=y,
            stroke=colour,
            stroke_width=2,
            stroke_dasharray=dash,
        )
        if dot:
            _add(entry, "circle", cx=swatch_x + 14, cy=y, r=3, fill=colour)
        _add(entry, "text", label, x=swatch_x + 36, y=y + 4)
    return _write(root, path)


def bar_chart(values, path, *, title, x_label, y_label):
    """Writes a bar chart of one value per category as an SVG file.

    Bars rise from zero (negative values hang below it), in the order
    given; the y axis gets ticks at round values and always includes zero.
    Category labels are turned 45 degrees when there are more than eight
    or they would not fit under their bars.

    Args:
        values: ``{category: value}``, at least one; categories are shown
            with ``str``.
        path: the ``.svg`` file to write; its folder must exist.
        title: the chart's title.
        x_label: the category axis's label.
        y_label: the value axis's label.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for no values or a NaN or infinite value (naming the
            category).
        TypeError: for a value that is not a number.
        OSError: when the file cannot be written (nothing is left behind).

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = bar_chart(
    ...     {"conv1": 1200, "conv2": 3400, "dense": 560},
    ...     os.path.join(folder.name, "macs.svg"),
    ...     title="MACs per layer", x_label="layer", y_label="MACs")
    >>> path.read_text().count('class="bar"')
    3
    >>> folder.cleanup()
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError(
            f"values is {values!r}; use a non-empty {{category: value}} dict."
        )
    bars = [
        (_text(key), _number(f"category {key!r}", value))
        for key, value in values.items()
    ]
    y_ticks, y_text = _ticks([0.0] + [value for _, value in bars])
    count = len(bars)
    plot_width = max(_PLOT_WIDTH, 24 * count)
    slot = plot_width / count
    longest = max(len(label) for label, _ in bars)
    rotate = count > 8 or longest * _CHAR_WIDTH > slot
    label_height = 5 * longest + 12 if rotate else 16
    left = 52 + _CHAR_WIDTH * max(len(y_text(t)) for t in y_ticks)
    width = left + plot_width + 30
    height = _TOP + _PLOT_HEIGHT + label_height + 48
    box = (left, _TOP, plot_width, _PLOT_HEIGHT)
    sy = _scale(y_ticks, _TOP + _PLOT_HEIGHT, -_PLOT_HEIGHT)

    root = _canvas(width, height, title)
    _axes(root, box, y_ticks, sy, y_text, x_label, y_label, label_height)
    zero = sy(0.0)
    for index, (label, value) in enumerate(bars):
        centre = left + (index + 0.5) * slot
        bar = _add(
            root,
            "rect",
            cls="bar",
            data_label=label,
            x=centre - 0.35 * slot,
            y=min(zero, sy(value)),
            width=0.7 * slot,
            height=abs(sy(value) - zero),
            fill=_PALETTE[0],
        )
        _add(bar, "title", f"{label}: {value:g}")
        below = _TOP + _PLOT_HEIGHT + 16
        text = _add(root, "text", label, cls="category", x=centre, y=below)
        if rotate:
            text.set("text-anchor", "end")
            text.set("transform", f"rotate(-45 {centre:.2f} {below - 4:.2f})")
        else:
            text.set("text-anchor", "middle")
    _across(root, box, zero, cls="baseline", stroke="#000000")
    return _write(root, path)


def _check_series(series):
    """``[(key, label, points sorted by x)]``, every coordinate finite."""
    if not isinstance(series, Mapping) or not series:
        raise ValueError(
            f"series is {series!r}; use a non-empty "
            "{label: [(x, y), ...]} dict."
        )
    lines = []
    for key, points in series.items():
        if isinstance(points, (str, bytes)) or not len(points):
            raise ValueError(
                f"series {key!r} is {points!r}; use a non-empty list of "
                "(x, y) pairs."
            )
        checked = [
            _point(f"series {key!r}, point {index}", point)
            for index, point in enumerate(points)
        ]
        lines.append((key, _text(key), sorted(checked, key=lambda p: p[0])))
    return lines


def _point(where, point):
    """``point`` as two finite floats; errors begin with ``where``."""
    try:
        if isinstance(point, (str, bytes)):
            raise TypeError
        x, y = (float(value) for value in point)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{where} is {point!r}; use an (x, y) pair of numbers."
        ) from error
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(
            f"{where} is ({x!r}, {y!r}); a chart needs finite numbers, not "
            "NaN or inf."
        )
    return x, y


def _number(where, value):
    """``value`` as a finite float; errors begin with ``where``."""
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where} is {value!r}; use a number.") from error
    if not math.isfinite(number):
        raise ValueError(
            f"{where} is {number!r}; a chart needs finite numbers, not NaN "
            "or inf."
        )
    return number


def _ticks(values, count=6):
    """Round tick values covering ``values``, and a formatter for them."""
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    if not math.isfinite(high - low):
        raise ValueError(
            f"The values span {low:g} to {high:g}, more than a float holds; "
            "scale them down."
        )
    raw = (high - low) / (count - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = power * next(
        nice for nice in (1, 2, 2.5, 5, 10) if raw / power <= nice * 1.000001
    )
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    ticks = [k * step for k in range(first, last + 1)]
    decimals = next(
        (d for d in range(7) if abs(round(step, d) - step) <= step * 1e-6),
        None,
    )
    if decimals is None or max(abs(t) for t in ticks) >= 1e7:
        return ticks, lambda value: f"{value:.3g}"
    return ticks, lambda value: f"{round(value, decimals) + 0.0:.{decimals}f}"


def _scale(ticks, start, length):
    """Maps the span of ``ticks`` onto ``start`` .. ``start + length``."""
    low, high = ticks[0], ticks[-1]
    return lambda value: start + (value - low) / (high - low) * length


def _style(index):
    """A series' colour and dash pattern (None: solid)."""
    colours = len(_PALETTE)
    dash = _DASHES[(index // colours) % len(_DASHES)]
    return _PALETTE[index % colours], dash


def _canvas(width, height, title):
    """The ``<svg>`` root with a white background and the title."""
    root = ET.Element(
        "svg",
        {
            "xmlns": _SVG_NS,
            "width": str(width),
            "height": str(height),
            "viewBox": f"0 0 {width} {height}",
            "font-family": _FONT,
            "font-size": "12",
        },
    )
    _add(root, "rect", width="100%", height="100%", fill="#ffffff")
    _add(
        root,
        "text",
        title,
        cls="title",
        x=width / 2,
        y=26,
        text_anchor="middle",
        font_size=15,
        font_weight="bold",
    )
    return root


def _axes(root, box, y_ticks, sy, y_text, x_label, y_label, below=16):
    """The frame, y grid and tick labels, and both axis labels.

    ``below`` is the height taken under the plot by the x tick labels.
    """
    left, top, width, height = box
    for tick in y_ticks:
        y = sy(tick)
        _across(root, box, y, cls="grid", stroke=_GRID)
        _add(
            root,
            "text",
            y_text(tick),
            cls="tick-label",
            x=left - 8,
            y=y + 4,
            text_anchor="end",
        )
    _add(
        root,
        "rect",
        cls="frame",
        x=left,
        y=top,
        width=width,
        height=height,
        fill="none",
        stroke="#000000",
    )
    _add(
        root,
        "text",
        x_label,
        cls="x-label",
        x=left + width / 2,
        y=top + height + below + 28,
        text_anchor="middle",
    )
    middle = top + height / 2
    _add(
        root,
        "text",
        y_label,
        cls="y-label",
        x=18,
        y=middle,
        text_anchor="middle",
        transform=f"rotate(-90 18 {middle:.2f})",
    )


def _across(root, box, y, **attributes):
    """A horizontal line across the plot ``box`` at canvas height ``y``."""
    left, _, width, _ = box
    return _add(
        root, "line", x1=left, x2=left + width, y1=y, y2=y, **attributes
    )


def _add(parent, tag, text=None, **attributes):
    """Appends an element; ``cls`` sets ``class``, ``_`` in names is ``-``.

    Attributes set to None are left out; numbers get two decimals.
    """
    element = ET.SubElement(parent, tag)
    for name, value in attributes.items():
        if value is None:
            continue
        name = "class" if name == "cls" else name.replace("_", "-")
        if isinstance(value, float):
            value = f"{value:.2f}"
        element.set(name, _text(value))
    if text is not None:
        element.text = _text(text)
    return element


def _text(value):
    """``str(value)`` with the characters XML cannot hold replaced."""
    return _NOT_XML.sub("\ufffd", str(value))


def _write(root, path):
    """Writes the SVG beside ``path``, then moves it over ``path``."""
    text = ET.tostring(root, encoding="unicode")
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # Opened before the try: a missing folder raises with nothing created.
    file = open(temporary, "x", encoding="utf-8")
    try:
        with file:
            file.write('<?xml version="1.0" encoding="UTF-8"?>\n')
            file.write(text + "\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
