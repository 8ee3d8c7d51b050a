"""Charts for analysis reports, drawn with matplotlib (an optional extra).

Analysis features (compression sensitivity, per-layer quantization error,
activation histograms, cross-layer equalization, AutoQuant's trade-offs)
draw their pictures here. matplotlib is imported only when a chart is
drawn, so ``import aimet_keras`` never loads it; install it with
``pip install "aimet-keras[plot]"``.

Every chart is drawn on its own ``matplotlib.figure.Figure`` with the Agg
canvas, never through ``pyplot``: it leaves no global figure behind, needs
no display and no ``MPLBACKEND``, and works from threads (drawing takes a
lock, as matplotlib's settings are global).

The file format comes from the path's suffix: ``.png`` (120 dpi) or
``.svg``. SVG keeps text as ``<text>`` elements, and the drawn artists
carry ids (``series-0``, ``hline-0``, ``marker-0``, ``bar-0``,
``baseline``, ``hist-0``, ``range-0-min``, ``range-0-max``,
``channels-0-0``, ``points``, ``front``, ``chosen``: ``<g id="...">``), so
tests and style sheets can find them. :func:`data_uri` embeds a written
chart in a self-contained HTML page.

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
>>> text = path.read_text()
>>> path.name, 'id="series-0"' in text, ">Loss</text>" in text
('loss.svg', True, True)
>>> folder.cleanup()
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import os
import pathlib
import re
import secrets
import threading
import typing
from collections.abc import Mapping

import numpy as np

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "bar_chart",
    "channel_ranges",
    "data_uri",
    "histogram_grid",
    "line_chart",
    "pareto_chart",
]

_DPI = 120
_FORMATS = {".png": "image/png", ".svg": "image/svg+xml"}
# Text stays text in SVG; ids are stable, so one chart gives one file.
_RC = {"svg.fonttype": "none", "svg.hashsalt": "aimet_keras"}
# Tableau's ten colours (matplotlib's default cycle); past ten series they
# repeat with a dash pattern.
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
_DASHES = ("-", "--", ":", "-.")
_REFERENCE = "#333333"
_HIGHLIGHT = "#d62728"
_MAX_WIDTH = 48  # inches: 5760 pixels at 120 dpi
_LEGEND_ROWS = 24
_MANY_BARS = 12
# Characters XML 1.0 cannot hold; they become U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LOCK = threading.Lock()


def line_chart(
    series: Mapping[object, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    *,
    title: str,
    x_label: str,
    y_label: str,
    hlines: Mapping[object, float] | None = None,
    markers: Mapping[object, tuple[float, float]] | None = None,
    x_tick_labels: Sequence[str] | None = None,
) -> pathlib.Path:
    """Writes a line chart of one or more series.

    Each series is a line through its points (sorted by x) with a dot on
    each point, in its own colour; a legend on the right names the series
    and the reference lines. The axes cover every point, reference line and
    marker; a single point or a constant series gets a range around it.

    Args:
        series: ``{label: [(x, y), ...]}``, at least one series of at least
            one point; labels are shown with ``str``. In SVG, series ``i``
            (in the order given) has the id ``series-i``.
        path: the ``.png`` or ``.svg`` file to write; its folder must
            exist.
        title: the chart's title.
        x_label: the x axis's label.
        y_label: the y axis's label.
        hlines: ``{label: y}``: dashed horizontal reference lines, labelled
            at their right end and in the legend (ids ``hline-i``).
            Defaults to None.
        markers: ``{series label: (x, y)}``: one point per series to ring
            in the series' colour, such as the value chosen (id
            ``marker-i``, ``i`` the series' index). Defaults to None.
        x_tick_labels: names for the x positions, such as layer names: x
            values are then the positions ``0 .. len(x_tick_labels) - 1``,
            the ticks show the names (turned, and the chart widens with
            their number). Defaults to None (numeric x).

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for a suffix other than ``.png`` or ``.svg``, no
            series, an empty series, a NaN or infinite coordinate (naming
            the series and the point), a marker for a series not in
            ``series``, empty ``x_tick_labels`` or an x outside their
            positions.
        TypeError: for a point that is not a pair of numbers.
        ModuleNotFoundError: when matplotlib is not installed.
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
    >>> [f'id="{i}"' in text for i in ("series-1", "hline-0", "marker-0")]
    [True, True, True]
    >>> error = line_chart(
    ...     {"conv1": [(0, 0.1)], "dense": [(1, 0.3)]},
    ...     os.path.join(folder.name, "error.png"),
    ...     title="Error per layer", x_label="layer", y_label="SQNR",
    ...     x_tick_labels=["conv1", "dense"])
    >>> error.read_bytes()[:4]
    b'\\x89PNG'
    >>> folder.cleanup()
    """
    path, fmt = _target(path)
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
    names = None
    if x_tick_labels is not None:
        names = _tick_names(x_tick_labels)
        where = [
            (f"series {key!r}, point {i}", x)
            for key, _, points in lines
            for i, (x, _) in enumerate(points)
        ]
        where += [(f"markers[{k!r}]", x) for k, (x, _) in highlighted.items()]
        for what, x in where:
            if not -0.5 <= x <= len(names) - 0.5:
                raise ValueError(
                    f"{what} has x {x:g}, outside the {len(names)} "
                    f"x_tick_labels; x is a position 0 .. {len(names) - 1}."
                )

    width, height = 8.0, 4.8
    if names:
        width = min(_MAX_WIDTH, max(width, 2.5 + 0.2 * len(names)))
        height += 0.06 * min(60, max(len(n) for n in names))
    entries = len(lines) + len(references)
    columns = math.ceil(entries / _LEGEND_ROWS)
    width = min(_MAX_WIDTH, width + 1.6 * (columns - 1))
    with _drawing() as new_figure:
        figure = new_figure((width, height))
        axes = figure.add_subplot()
        for index, (key, label, points) in enumerate(lines):
            colour, dash = _style(index)
            xs, ys = zip(*points)
            axes.plot(
                xs,
                ys,
                color=colour,
                linestyle=dash,
                linewidth=2,
                marker="o",
                markersize=4,
                label=label,
                gid=f"series-{index}",
            )
            if key in highlighted:
                x, y = highlighted[key]
                axes.plot(
                    [x],
                    [y],
                    linestyle="none",
                    marker="o",
                    markersize=13,
                    markerfacecolor="none",
                    markeredgecolor=colour,
                    markeredgewidth=2.5,
                    label="_marker",
                    zorder=3,
                    gid=f"marker-{index}",
                )
        # After the series, for the legend; drawn under them (zorder).
        for index, (label, y) in enumerate(references):
            axes.axhline(
                y,
                color=_REFERENCE,
                linestyle="--",
                linewidth=1.5,
                label=label,
                zorder=1.5,
                gid=f"hline-{index}",
            )
            axes.annotate(
                label,
                (1, y),
                xycoords=axes.get_yaxis_transform(),
                xytext=(-4, 3),
                textcoords="offset points",
                ha="right",
                va="bottom",
                color=_REFERENCE,
                fontsize="small",
            )
        _label(axes, title, x_label, y_label)
        if names:
            axes.set_xticks(
                range(len(names)),
                names,
                rotation=60 if len(names) > 1 else 0,
                ha="right" if len(names) > 1 else "center",
                rotation_mode="anchor",
                fontsize="small",
            )
            axes.set_xlim(-0.5, len(names) - 0.5)
        axes.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            borderaxespad=0,
            fontsize="small",
            ncols=columns,
        )
        return _save(figure, path, fmt)


def bar_chart(
    values: Mapping[object, float],
    path: str | os.PathLike,
    *,
    title: str,
    x_label: str,
    y_label: str,
) -> pathlib.Path:
    """Writes a bar chart of one value per category.

    Bars start at zero (negative values go the other way), in the order
    given. Up to twelve categories stand as columns, their names turned
    when there are more than eight or they are long; more lie as rows, the
    first at the top, and the chart grows taller with their number
    (``x_label`` then names the vertical axis and ``y_label`` the
    horizontal one).

    Args:
        values: ``{category: value}``, at least one; categories are shown
            with ``str``. In SVG, bar ``i`` has the id ``bar-i`` and the
            zero line ``baseline``.
        path: the ``.png`` or ``.svg`` file to write; its folder must
            exist.
        title: the chart's title.
        x_label: the category axis's label.
        y_label: the value axis's label.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for a suffix other than ``.png`` or ``.svg``, no values
            or a NaN or infinite value (naming the category).
        TypeError: for a value that is not a number.
        ModuleNotFoundError: when matplotlib is not installed.
        OSError: when the file cannot be written (nothing is left behind).

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = bar_chart(
    ...     {"conv1": 1200, "conv2": 3400, "dense": 560},
    ...     os.path.join(folder.name, "macs.svg"),
    ...     title="MACs per layer", x_label="layer", y_label="MACs")
    >>> text = path.read_text()
    >>> sum(f'id="bar-{i}"' in text for i in range(3)), ">conv2</text>" in text
    (3, True)
    >>> folder.cleanup()
    """
    path, fmt = _target(path)
    if not isinstance(values, Mapping) or not values:
        raise ValueError(
            f"values is {values!r}; use a non-empty {{category: value}} dict."
        )
    bars = [
        (_text(key), _number(f"category {key!r}", value))
        for key, value in values.items()
    ]
    labels, heights = zip(*bars)
    count = len(bars)
    longest = max(len(label) for label in labels)
    across = count > _MANY_BARS
    if across:
        size = (8.0, min(_MAX_WIDTH, 1.5 + 0.28 * count))
    else:
        size = (max(6.4, 1.5 + 0.6 * count), 4.8)
    with _drawing() as new_figure:
        figure = new_figure(size)
        axes = figure.add_subplot()
        if across:
            drawn = axes.barh(range(count), heights, color=_PALETTE[0])
            axes.set_yticks(range(count), labels, fontsize="small")
            axes.invert_yaxis()
            axes.axvline(0, color="black", linewidth=1, gid="baseline")
            _label(axes, title, y_label, x_label, grid="x")
        else:
            drawn = axes.bar(range(count), heights, color=_PALETTE[0])
            turn = count > 8 or longest > 60 / count
            axes.set_xticks(
                range(count),
                labels,
                rotation=45 if turn else 0,
                ha="right" if turn else "center",
                rotation_mode="anchor",
            )
            axes.axhline(0, color="black", linewidth=1, gid="baseline")
            _label(axes, title, x_label, y_label, grid="y")
        for index, patch in enumerate(drawn):
            patch.set_gid(f"bar-{index}")
        return _save(figure, path, fmt)


def histogram_grid(
    histograms: Mapping[object, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str,
    ranges: Mapping[object, tuple[float, float]] | None = None,
    columns: int = 4,
    log: bool = True,
) -> pathlib.Path:
    """Writes one small histogram per name, in a grid.

    Each panel is a filled step histogram titled with its name, such as
    one layer's activations; ``ranges`` marks the quantization grid's
    minimum and maximum on a panel with two vertical lines, so clipped
    tails and unused levels show.

    Args:
        histograms: ``{name: (bin_edges, counts)}``, at least one; each a
            1-D array, ``len(bin_edges) == len(counts) + 1``, the edges
            increasing and the counts finite and not negative (as
            ``numpy.histogram`` returns them, in either order). In SVG,
            panel ``i`` (in the order given) has the id ``hist-i``.
        path: the ``.png`` or ``.svg`` file to write; its folder must
            exist.
        title: the chart's title.
        ranges: ``{name: (lo, hi)}``: the grid's ``min`` and ``max`` to
            draw on that panel (ids ``range-i-min`` and ``range-i-max``).
            Defaults to None.
        columns: panels per row, at least 1. Defaults to 4.
        log: count on a log scale, which shows the tails of activation
            histograms; empty bins are left out. Defaults to True.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for a suffix other than ``.png`` or ``.svg``, no
            histograms, mismatched lengths, decreasing edges, a negative,
            NaN or infinite value (naming the histogram), a range for a
            name not in ``histograms`` or with ``lo > hi``, or
            ``columns < 1``.
        TypeError: for a range that is not a pair of numbers.
        ModuleNotFoundError: when matplotlib is not installed.
        OSError: when the file cannot be written (nothing is left behind).

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> rng = np.random.default_rng(0)
    >>> relu = np.histogram(np.maximum(rng.normal(size=1000), 0), bins=32)
    >>> conv = np.histogram(rng.normal(size=1000), bins=32)
    >>> path = histogram_grid(
    ...     {"relu": relu[::-1], "conv": conv[::-1]},
    ...     os.path.join(folder.name, "activations.svg"),
    ...     title="Activations", ranges={"conv": (-2.5, 2.5)})
    >>> text = path.read_text()
    >>> [f'id="{i}"' in text for i in ("hist-1", "range-1-min", "range-1-max")]
    [True, True, True]
    >>> ">relu</text>" in text
    True
    >>> folder.cleanup()
    """
    path, fmt = _target(path)
    if not isinstance(histograms, Mapping) or not histograms:
        raise ValueError(
            f"histograms is {histograms!r}; use a non-empty "
            "{name: (bin_edges, counts)} dict."
        )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns is {columns!r}; use an int of at least 1.")
    panels = []
    for name, where, edges, counts in _array_pairs(
        histograms, "histograms", ("bin_edges", "counts")
    ):
        if len(edges) != len(counts) + 1 or not len(counts):
            raise ValueError(
                f"{where} has {len(edges)} bin edges and {len(counts)} "
                "counts; use one edge more than counts, and a count at "
                "least."
            )
        if np.any(np.diff(edges) <= 0):
            raise ValueError(f"{where} has bin edges that do not increase.")
        if np.any(counts < 0):
            raise ValueError(f"{where} has a negative count.")
        panels.append((name, _text(name), edges, counts))
    lines = {}
    for name, pair in (ranges or {}).items():
        if name not in histograms:
            raise ValueError(
                f"ranges names {name!r}, which histograms does not have; "
                f"histograms: {list(histograms)}."
            )
        lo, hi = _point(f"ranges[{name!r}]", pair)
        if lo > hi:
            raise ValueError(f"ranges[{name!r}] is ({lo:g}, {hi:g}): lo > hi.")
        lines[name] = (lo, hi)

    across = min(columns, len(panels))
    rows = math.ceil(len(panels) / across)
    size = (min(_MAX_WIDTH, 0.4 + 3.2 * across), 0.9 + 2.5 * rows)
    with _drawing() as new_figure:
        figure = new_figure(size)
        figure.suptitle(_text(title))
        figure.supxlabel("value", fontsize="small")
        figure.supylabel(
            "count (log scale)" if log else "count", fontsize="small"
        )
        for index, (name, label, edges, counts) in enumerate(panels):
            axes = figure.add_subplot(rows, across, index + 1)
            shown, baseline = counts, 0
            logarithmic = log and np.any(counts > 0)
            if logarithmic:
                # Bars rise from half the smallest count; empty bins stay
                # flat on that line.
                baseline = counts[counts > 0].min() / 2
                shown = np.maximum(counts, baseline)
            axes.stairs(
                shown,
                edges,
                baseline=baseline,
                fill=True,
                color=_PALETTE[0],
                gid=f"hist-{index}",
            )
            if logarithmic:
                axes.set_yscale("log")
            if name in lines:
                for end, x in zip(("min", "max"), lines[name]):
                    axes.axvline(
                        x,
                        color=_HIGHLIGHT,
                        linestyle="--",
                        linewidth=1.2,
                        gid=f"range-{index}-{end}",
                    )
            axes.set_title(label, fontsize=9)
            axes.tick_params(labelsize=7)
        return _save(figure, path, fmt)


def channel_ranges(
    ranges: Mapping[object, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str,
    y_label: str = "weight",
) -> pathlib.Path:
    """Writes each output channel's range as a bar, one panel per label.

    The picture cross-layer equalization is about: per-channel weight
    ranges that differ by orders of magnitude share one quantization grid
    badly. Each channel is a vertical bar from its minimum to its maximum
    (x: the channel's index); the panels sit side by side on one y axis,
    so "before" and "after" compare at a glance.

    Args:
        ranges: ``{panel label: (mins, maxs)}``, at least one; ``mins`` and
            ``maxs`` are 1-D arrays of one finite value per channel, the
            same length, ``mins <= maxs``. In SVG, panel ``i``'s bar for
            channel ``j`` has the id ``channels-i-j``.
        path: the ``.png`` or ``.svg`` file to write; its folder must
            exist.
        title: the chart's title.
        y_label: what the values are. Defaults to ``"weight"``.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for a suffix other than ``.png`` or ``.svg``, no
            panels, no channels, mismatched lengths, a NaN or infinite
            value, or a minimum above its maximum (naming the panel).
        ModuleNotFoundError: when matplotlib is not installed.
        OSError: when the file cannot be written (nothing is left behind).

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> w = np.random.default_rng(0).normal(size=(3, 3, 8, 16))
    >>> w *= np.geomspace(0.01, 10, 16)
    >>> flat = w.reshape(-1, 16)
    >>> path = channel_ranges(
    ...     {"before": (flat.min(0), flat.max(0)),
    ...      "after": (flat.min(0) / 3, flat.max(0) / 3)},
    ...     os.path.join(folder.name, "cle.svg"), title="conv1 weights")
    >>> text = path.read_text()
    >>> text.count('id="channels-1-'), ">after</text>" in text
    (16, True)
    >>> folder.cleanup()
    """
    path, fmt = _target(path)
    if not isinstance(ranges, Mapping) or not ranges:
        raise ValueError(
            f"ranges is {ranges!r}; use a non-empty "
            "{panel label: (mins, maxs)} dict."
        )
    panels = []
    for key, where, mins, maxs in _array_pairs(
        ranges, "ranges", ("mins", "maxs")
    ):
        if len(mins) != len(maxs) or not len(mins):
            raise ValueError(
                f"{where} has {len(mins)} mins and {len(maxs)} maxs; use "
                "one of each per channel, and a channel at least."
            )
        above = np.flatnonzero(mins > maxs)
        if above.size:
            raise ValueError(
                f"{where}: channel {above[0]} has min {mins[above[0]]:g} "
                f"above max {maxs[above[0]]:g}."
            )
        panels.append((_text(key), mins, maxs))

    widest = max(len(mins) for _, mins, _ in panels)
    panel_width = min(12.0, max(3.5, 0.08 * widest + 1.5))
    size = (min(_MAX_WIDTH, 1.0 + panel_width * len(panels)), 4.4)
    with _drawing() as new_figure:
        figure = new_figure(size)
        figure.suptitle(_text(title))
        grid = figure.subplots(1, len(panels), sharey=True, squeeze=False)
        for index, (axes, (label, mins, maxs)) in enumerate(
            zip(grid[0], panels)
        ):
            drawn = axes.bar(
                np.arange(len(mins)),
                maxs - mins,
                bottom=mins,
                width=0.8,
                color=_PALETTE[index % len(_PALETTE)],
            )
            for channel, patch in enumerate(drawn):
                patch.set_gid(f"channels-{index}-{channel}")
            axes.axhline(0, color="black", linewidth=0.8)
            axes.set_title(label)
            axes.set_xlabel("output channel")
            axes.set_xlim(-0.6, len(mins) - 0.4)
            axes.grid(True, axis="y", color="#e4e4e4")
            axes.set_axisbelow(True)
        grid[0][0].set_ylabel(_text(y_label))
        return _save(figure, path, fmt)


def pareto_chart(
    points: Sequence[tuple[float, float, str]],
    path: str | os.PathLike,
    *,
    title: str,
    x_label: str,
    y_label: str,
    front: Sequence[tuple[float, float]] | None = None,
    chosen: tuple[float, float] | None = None,
) -> pathlib.Path:
    """Writes a scatter of candidates with their Pareto front.

    For trade-offs such as accuracy against model size or bit width: every
    candidate is a dot, named by its label when it has one; the front is a
    line through the Pareto-optimal points (sorted by x), and the chosen
    point is ringed and annotated with its coordinates.

    Args:
        points: ``[(x, y, label), ...]``, at least one; labels may be empty
            strings (no name shown). In SVG, the dots have the id
            ``points``.
        path: the ``.png`` or ``.svg`` file to write; its folder must
            exist.
        title: the chart's title.
        x_label: the x axis's label.
        y_label: the y axis's label.
        front: ``[(x, y), ...]``: the Pareto-optimal points (id ``front``).
            Defaults to None (no line).
        chosen: ``(x, y)``: the point chosen (id ``chosen``). Defaults to
            None.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for a suffix other than ``.png`` or ``.svg``, no
            points, or a NaN or infinite coordinate (naming the point).
        TypeError: for a point that is not ``(x, y, label)``, or a front
            point or ``chosen`` that is not a pair of numbers.
        ModuleNotFoundError: when matplotlib is not installed.
        OSError: when the file cannot be written (nothing is left behind).

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> candidates = [(8, 0.91, "w8a8"), (4, 0.87, "w4a8"), (6, 0.86, "")]
    >>> path = pareto_chart(
    ...     candidates, os.path.join(folder.name, "pareto.svg"),
    ...     title="Accuracy against bit width", x_label="weight bits",
    ...     y_label="accuracy", front=[(4, 0.87), (8, 0.91)],
    ...     chosen=(4, 0.87))
    >>> text = path.read_text()
    >>> 'id="front"' in text, ">w4a8</text>" in text, 'id="chosen"' in text
    (True, True, True)
    >>> folder.cleanup()
    """
    path, fmt = _target(path)
    if isinstance(points, (str, bytes, Mapping)) or not len(points):
        raise ValueError(
            f"points is {points!r}; use a non-empty [(x, y, label), ...] list."
        )
    dots = []
    for index, point in enumerate(points):
        where = f"points[{index}]"
        if isinstance(point, (str, bytes)) or len(point) != 3:
            raise TypeError(f"{where} is {point!r}; use (x, y, label).")
        x, y = _point(where, point[:2])
        dots.append((x, y, _text(point[2])))
    line = sorted(
        _point(f"front[{index}]", point)
        for index, point in enumerate(front or ())
    )
    ring = None if chosen is None else _point("chosen", chosen)

    with _drawing() as new_figure:
        figure = new_figure((8.0, 5.2))
        axes = figure.add_subplot()
        xs, ys, labels = zip(*dots)
        axes.scatter(
            xs,
            ys,
            s=24,
            color=_PALETTE[0],
            alpha=0.8,
            label="candidates",
            zorder=2,
            gid="points",
        )
        for x, y, label in dots:
            if label:
                axes.annotate(
                    label,
                    (x, y),
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize="x-small",
                )
        if line:
            fx, fy = zip(*line)
            axes.plot(
                fx,
                fy,
                color=_PALETTE[1],
                linewidth=2,
                marker="o",
                markersize=5,
                label="Pareto front",
                zorder=1.5,
                gid="front",
            )
        if ring is not None:
            axes.plot(
                [ring[0]],
                [ring[1]],
                linestyle="none",
                marker="o",
                markersize=14,
                markerfacecolor="none",
                markeredgecolor=_HIGHLIGHT,
                markeredgewidth=2.5,
                label="chosen",
                zorder=3,
                gid="chosen",
            )
            axes.annotate(
                f"chosen ({ring[0]:.4g}, {ring[1]:.4g})",
                ring,
                xytext=(14, -18),
                textcoords="offset points",
                color=_HIGHLIGHT,
                fontsize="small",
                arrowprops={"arrowstyle": "-", "color": _HIGHLIGHT},
            )
        _label(axes, title, x_label, y_label)
        axes.legend(fontsize="small")
        return _save(figure, path, fmt)


def data_uri(path: str | os.PathLike) -> str:
    """A written chart as a ``data:`` URI, to embed in an HTML page.

    Args:
        path: a ``.png`` or ``.svg`` file, such as a chart written here.

    Returns:
        ``"data:image/png;base64,..."`` or
        ``"data:image/svg+xml;base64,..."``: ``<img src="...">`` shows it
        without the file.

    Raises:
        ValueError: for a suffix other than ``.png`` or ``.svg``.
        OSError: when the file cannot be read.

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = bar_chart(
    ...     {"a": 1, "b": 2}, os.path.join(folder.name, "bars.png"),
    ...     title="T", x_label="x", y_label="y")
    >>> uri = data_uri(path)
    >>> uri.startswith("data:image/png;base64,iVBORw0KGgo")
    True
    >>> html = f'<img src="{uri}" alt="bars">'
    >>> folder.cleanup()
    """
    path, _ = _target(path)
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{_FORMATS[path.suffix.lower()]};base64,{encoded}"


@contextlib.contextmanager
def _drawing():
    """Makes figures on the Agg canvas, under our settings.

    Holds a lock while drawing: ``rc_context`` changes global settings.
    """
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "aimet_keras.plotting draws charts with matplotlib, which is not "
            f"installed ({error}); install it with "
            'pip install "aimet-keras[plot]".',
            name=error.name,
        ) from error

    def new_figure(size):
        figure = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(figure)
        return figure

    with _LOCK, matplotlib.rc_context(_RC):
        yield new_figure


def _target(path):
    """``path`` as a ``pathlib.Path`` and its format, from the suffix."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(
            f"Cannot tell the chart format of {str(path)!r}; use a file name "
            "ending in .png or .svg."
        )
    return path, suffix[1:]


def _label(axes, title, x_label, y_label, grid="both"):
    """The title and axis labels; the grid, under everything drawn."""
    axes.grid(True, axis=grid, color="#e4e4e4")
    axes.set_axisbelow(True)
    axes.set_title(_text(title))
    axes.set_xlabel(_text(x_label))
    axes.set_ylabel(_text(y_label))


def _style(index):
    """A series' colour and line style."""
    colours = len(_PALETTE)
    dash = _DASHES[(index // colours) % len(_DASHES)]
    return _PALETTE[index % colours], dash


def _tick_names(x_tick_labels):
    if isinstance(x_tick_labels, (str, bytes, Mapping)):
        raise TypeError(
            f"x_tick_labels is {x_tick_labels!r}; use a list of strings."
        )
    names = [_text(name) for name in x_tick_labels]
    if not names:
        raise ValueError("x_tick_labels is empty; use None for numeric x.")
    return names


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


def _array_pairs(mapping, what, names):
    """``(key, where, first, second)`` for ``{key: (first, second)}``, each
    side checked by :func:`_array`."""
    for key, pair in mapping.items():
        where = f"{what}[{key!r}]"
        try:
            first, second = pair
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{where} is not a pair; use ({names[0]}, {names[1]})."
            ) from error
        yield (
            key,
            where,
            _array(f"{where} {names[0]}", first),
            _array(f"{where} {names[1]}", second),
        )


def _array(where, values):
    """``values`` as a finite 1-D float array; errors begin with ``where``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} is not an array of numbers.") from error
    if array.ndim != 1:
        raise ValueError(f"{where} has shape {array.shape}; use a 1-D array.")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{where} holds NaN or inf; a chart needs finite numbers."
        )
    return array


def _text(value):
    """``str(value)`` as matplotlib text: XML-safe, ``$`` kept literal."""
    return _NOT_XML.sub("\ufffd", str(value)).replace("$", r"\$")


def _save(figure, path, fmt):
    """Draws ``figure`` in full, writes it beside ``path``, moves it over."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    figure.savefig(buffer, format=fmt, dpi=_DPI, metadata=metadata)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # Opened before the try: a missing folder raises with nothing created.
    file = open(temporary, "xb")
    try:
        with file:
            file.write(buffer.getvalue())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
