"""A picture of the greedy selection: per-layer sensitivity as a chart.

:func:`~aimet_keras.compress.greedy.compress_model` scores the model with
each layer compressed alone at each candidate ratio. Plotting those scores
against the ratio shows which layers tolerate compression (flat lines) and
which do not (lines falling towards small ratios), and where the chosen
ratios and the score threshold fall. The chart is drawn by
:mod:`aimet_keras.plotting` with matplotlib (``pip install
"aimet-keras[plot]"``), as SVG or PNG.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping

import numpy as np

from aimet_keras import plotting

if typing.TYPE_CHECKING:
    import os
    import pathlib

__all__ = ["plot_sensitivity"]


def plot_sensitivity(
    eval_scores: dict[str, dict[float, float]],
    path: str | os.PathLike,
    chosen_ratios: dict[str, float] | None = None,
    threshold: float | None = None,
    title: str = "Per-layer sensitivity",
    x_label: str = "compression ratio (cost kept)",
    baseline: float | None = None,
) -> pathlib.Path:
    """Writes each layer's eval score against its compression ratio.

    One line per layer, through its score at each candidate ratio (the
    layer's cost kept: small ratios compress most) and, given the
    original model's score, through that at 1.0. A layer's chosen ratio is
    ringed (on the line between candidates when the search topped it up
    past one) and named in the legend; a layer left whole (ratio 1.0) is
    named so.

    Args:
        eval_scores: ``{layer name: {ratio: score}}``, as
            ``CompressionStats.eval_scores``; ratios may also be strings of
            floats, as in the JSON table that ``compress_model`` saves.
        path: the ``.svg`` or ``.png`` file to write; its folder must
            exist.
        chosen_ratios: ``{layer name: ratio}``, as ``CompressionStats.ratios``
            (1.0: left whole). Names not in ``eval_scores`` are ignored.
            Defaults to None (nothing highlighted).
        threshold: a score drawn as a dashed horizontal line, such as the
            greedy search's threshold. Defaults to None (no line).
        title: the chart's title. Defaults to ``"Per-layer sensitivity"``.
        x_label: what the ratios are. Defaults to ``"compression ratio
            (cost kept)"``, the SVD schemes' meaning; for channel pruning's
            ratios pass ``"input channels kept"``.
        baseline: the original model's score (``CompressionStats.
            baseline_score``): every line ends there at 1.0, and it is drawn
            dashed. Defaults to None.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for an empty table or layer, a NaN or infinite score
            (naming the layer and ratio) or threshold, a chosen ratio
            outside (0, 1], or a suffix other than ``.svg`` or ``.png``.
        ModuleNotFoundError: when matplotlib is not installed.
        OSError: when the file cannot be written (nothing is left behind).

    Example:

    >>> import os, tempfile
    >>> from aimet_keras.compress.plot import plot_sensitivity
    >>> folder = tempfile.TemporaryDirectory()
    >>> scores = {
    ...     "conv1": {0.25: 0.41, 0.5: 0.78, 0.75: 0.86},
    ...     "conv2": {0.25: 0.83, 0.5: 0.85, 0.75: 0.86},
    ... }
    >>> path = plot_sensitivity(
    ...     scores, os.path.join(folder.name, "sensitivity.svg"),
    ...     chosen_ratios={"conv1": 1.0, "conv2": 0.25}, threshold=0.8)
    >>> text = path.read_text()
    >>> "conv1 (left whole)" in text, "conv2 (chosen 0.25)" in text
    (True, True)
    >>> folder.cleanup()

    With the stats of a run:
    ``plot_sensitivity(stats.eval_scores, "s.png", stats.ratios)``.
    """
    if not isinstance(eval_scores, Mapping) or not eval_scores:
        raise ValueError(
            f"eval_scores is {eval_scores!r}; use a non-empty "
            "{layer name: {ratio: score}} dict, as CompressionStats."
            "eval_scores."
        )
    chosen_ratios = chosen_ratios or {}
    series = {}
    markers = {}
    for name, table in eval_scores.items():
        if not isinstance(table, Mapping) or not table:
            raise ValueError(
                f"eval_scores[{name!r}] is {table!r}; use a non-empty "
                "{ratio: score} dict."
            )
        points = sorted((float(r), float(s)) for r, s in table.items())
        if baseline is not None:
            points = [p for p in points if p[0] < 1] + [(1.0, baseline)]
        for ratio, score in points:
            if not math.isfinite(score):
                raise ValueError(
                    f"Layer {name!r} has score {score!r} at ratio {ratio:g}; "
                    "a plot needs finite scores."
                )
        label = name
        if name in chosen_ratios:
            ratio = float(chosen_ratios[name])
            if not 0 < ratio <= 1:
                raise ValueError(
                    f"chosen_ratios gives layer {name!r} ratio {ratio!r}; "
                    "use a ratio in (0, 1] (1.0: left whole)."
                )
            if ratio == 1:
                label = f"{name} (left whole)"
            else:
                ratios, scores = zip(*points)
                point = (ratio, float(np.interp(ratio, ratios, scores)))
                label = f"{name} (chosen {ratio:.3g})"
                markers[label] = point
        series[label] = points
    hlines = {}
    if threshold is not None:
        hlines["threshold"] = threshold
    if baseline is not None:
        hlines["original"] = baseline
    return plotting.line_chart(
        series,
        path,
        title=title,
        x_label=x_label,
        y_label="eval score",
        hlines=hlines,
        markers=markers,
    )
