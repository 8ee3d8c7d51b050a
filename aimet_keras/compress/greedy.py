"""Automatic per-layer compression ratios: AIMET's greedy selection.

1. For each selected layer and each candidate ratio ``k / N`` (``k = 1 ..
   N-1``), compress that layer alone and score the model with the user's
   ``eval_callback``: a table of sensitivities, saved as JSON so that a rerun
   with the same settings reuses it.
2. Binary-search one score threshold: at a threshold, every layer takes its
   most aggressive ratio whose score stays at or above it (or stays whole).
   The search stops when the model's cost is within a tolerance of the
   target.
3. Give back what the threshold's whole candidate steps over-saved: first
   in candidate steps, then a rank or channel at a time, the layer losing
   least score per unit of cost first, until the model sits just under the
   target (within a rank's or a channel's cost of it).
4. Compress every layer at its chosen ratio.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import typing

import numpy as np

from aimet_keras import _progress as progress_lib
from aimet_keras.compress import cost as cost_lib
from aimet_keras.compress import latency as latency_lib
from aimet_keras.compress import plot as plot_lib
from aimet_keras.compress import pruning as pruning_lib
from aimet_keras.compress import reconstruction
from aimet_keras.compress import svd as svd_lib
from aimet_keras.export import staging
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable
    from collections.abc import Sequence

    import keras

    from aimet_keras.compress.latency import LatencyTable

__all__ = ["CompressionStats", "compress_model"]

SCHEMES = ("spatial_svd", "weight_svd", "channel_pruning")


@dataclasses.dataclass(frozen=True)
class CompressionStats:
    """What :func:`compress_model` did.

    Attributes:
        scheme: the compression scheme.
        cost_metric: ``"mac"``, ``"memory"`` or ``"latency"``.
        target_comp_ratio: the requested cost over the original.
        achieved_comp_ratio: the compressed model's cost over the original
            (for ``"latency"``, the latency table's estimate: the weighted
            layers' times summed).
        ratios: ``{layer name: chosen ratio}`` for every selected layer
            (1.0: left whole); the cost ratio of an SVD layer, the fraction
            of input channels kept for channel pruning.
        ranks: ``{layer name: rank}`` of the SVD schemes' compressed layers.
        kept_channels: ``{layer name: input channels kept}`` for channel
            pruning.
        original_cost: ``(MACs, memory)`` of the original model.
        compressed_cost: ``(MACs, memory)`` after compression.
        layer_costs: ``{layer name: (MACs before, MACs after, memory before,
            memory after)}`` for every weighted layer of the original (a
            factorised layer's pair summed).
        baseline_score: ``eval_callback`` on the original model.
        eval_scores: ``{layer name: {ratio: score}}``.
        threshold: the score threshold the search chose.
        latency_rounds: for ``"latency"`` with a tolerance, one
            ``(target given to the table, table's estimate, measured whole
            model time ratio)`` per search round.
    """

    scheme: str
    cost_metric: str
    target_comp_ratio: float
    achieved_comp_ratio: float
    ratios: dict
    ranks: dict
    kept_channels: dict
    original_cost: tuple
    compressed_cost: tuple
    layer_costs: dict
    baseline_score: float
    eval_scores: dict
    threshold: float
    latency_rounds: tuple = ()

    def plot(self, path: str | os.PathLike) -> pathlib.Path:
        """Writes the per-layer sensitivity chart to ``path`` (.svg or .png).

        Each layer's score against its ratio, the chosen ratios ringed, the
        threshold and the original model's score dashed; see
        :func:`~aimet_keras.compress.plot.plot_sensitivity`.

        Returns:
            The ``pathlib.Path`` written.
        """
        x_label = (
            "input channels kept"
            if self.scheme == "channel_pruning"
            else f"compression ratio ({self.cost_metric} cost kept)"
        )
        return plot_lib.plot_sensitivity(
            self.eval_scores,
            path,
            self.ratios,
            self.threshold,
            title=f"Per-layer sensitivity, {self.scheme}",
            x_label=x_label,
            baseline=self.baseline_score,
        )

    def to_markdown(self) -> str:
        """The per-layer table: ratio, unit, MACs and memory before and
        after."""
        units = self.ranks or self.kept_channels
        unit = "rank" if self.ranks else "channels kept"
        lines = [
            f"| layer | ratio | {unit} | MACs before | MACs after "
            "| memory before | memory after |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, (m0, m1, p0, p1) in self.layer_costs.items():
            ratio = self.ratios.get(name)
            lines.append(
                f"| {name} | {'' if ratio is None else f'{ratio:.3f}'} | "
                f"{units.get(name, '')} | {m0:,} | {m1:,} | {p0:,} | {p1:,} |"
            )
        (m0, p0), (m1, p1) = self.original_cost, self.compressed_cost
        lines.append(
            f"| total | {self.achieved_comp_ratio:.3f} | | {m0:,} | {m1:,} "
            f"| {p0:,} | {p1:,} |"
        )
        return "\n".join(lines)


class _SvdScheme:
    """Spatial or weight SVD: a layer's unit is its rank."""

    def __init__(
        self,
        prepared,
        scheme,
        cost_metric,
        multiplicity,
        whole,
        sampler,
        times=None,
    ):
        self.prepared = prepared
        self.times = times  # a latency.ModelTimes for cost_metric="latency"
        self._templates = {}
        self.sampler = sampler
        self._targets = {}
        self._rank_costs = {}
        self.scheme = scheme
        self.cost_metric = cost_metric
        self.multiplicity = multiplicity
        self.whole = whole
        self._make_layers, self._max_rank = {
            "spatial_svd": (
                svd_lib.spatial_svd_layers,
                svd_lib.max_spatial_svd_rank,
            ),
            "weight_svd": (
                svd_lib.weight_svd_layers,
                svd_lib.max_weight_svd_rank,
            ),
        }[scheme]

    def selectable(self, name):
        layer = self.prepared.get_layer(name)
        try:
            self._max_rank(layer)
        except (ValueError, AttributeError):
            return False
        # A kx1 or 1xk convolution gains nothing from spatial SVD.
        return self.scheme != "spatial_svd" or min(layer.kernel.shape[:2]) > 1

    def max_units(self, name):
        return self._max_rank(self.prepared.get_layer(name))

    def units(self, name, ratio):
        if self.times is not None:
            return self._rank_within_time(name, ratio)
        return svd_lib.svd_rank(
            self.prepared.get_layer(name),
            ratio,
            self.scheme,
            self.cost_metric,
            self.multiplicity,
        )

    def _rank_within_time(self, name, ratio):
        """The largest rank whose two pieces take at most ``ratio`` of the
        layer's time (at least 1), rounded up to the multiplicity: AIMET's
        rule with measured time in place of MACs. Binary search: time grows
        with the rank (up to measurement noise)."""
        low, high = 1, self.max_units(name)
        while low < high:
            middle = (low + high + 1) // 2
            if self.unit_ratio(name, middle) <= ratio:
                low = middle
            else:
                high = middle - 1
        return svd_lib.round_up(low, self.multiplicity, self.max_units(name))

    def unit_ratio(self, name, units):
        """The layer's cost at ``units`` over its cost whole."""
        if self.times is not None:
            if name not in self._templates:  # the pieces' configs
                self._templates[name] = self._make_layers(
                    self.prepared.get_layer(name), 1
                )
            seconds = self.times.chain(
                name, self._templates[name], [units, None]
            )
            return seconds / self.whole[name]
        if name not in self._rank_costs:  # read in the top-up's every round
            self._rank_costs[name] = svd_lib.rank_cost(
                self.prepared.get_layer(name), self.scheme, self.cost_metric
            )
        per_rank, original = self._rank_costs[name]
        return units * per_rank / original

    def model_cost(self, units):
        return sum(self.whole.values()) + sum(
            self.whole[name] * (self.unit_ratio(name, u) - 1)
            for name, u in units.items()
        )

    def build(self, units):
        model = svd_lib._factorise(self.prepared, units, self._make_layers)
        if self.sampler is not None:
            reconstruction.refit_layers(
                model,
                self.prepared,
                {f"{name}_b": name for name in units},
                self.sampler,
                self._targets,
            )
        return model

    def build_one(self, name, units):
        return self.build({name: units})

    def key(self):
        return _data_key(self.sampler)


class _PruningScheme:
    """Channel pruning: a layer's unit is the input channels it keeps."""

    def __init__(
        self, prepared, data, num_samples, multiplicity, whole, times=None
    ):
        if data is None:
            raise ValueError(
                "scheme='channel_pruning' needs data: model inputs to sample "
                "activations from for the least-squares reconstruction."
            )
        self.pruner = pruning_lib.ChannelPruner(prepared, data, num_samples)
        self.multiplicity = multiplicity
        self.whole = whole
        self.times = times  # a latency.ModelTimes for cost_metric="latency"

    def selectable(self, name):
        try:
            group = self.pruner.group(name)
        except pruning_lib.NotPrunableError:
            return False
        # A channel space read by several layers is one choice, named
        # after its first reader.
        return group.layer == name

    def max_units(self, name):
        return self.pruner.group(name).channels

    def units(self, name, ratio):
        channels = self.max_units(name)
        keep = max(1, math.ceil(ratio * channels - 1e-9))
        return svd_lib.round_up(keep, self.multiplicity, channels)

    def unit_ratio(self, name, units):
        return units / self.max_units(name)

    def model_cost(self, units):
        """Pruning a layer's inputs shrinks it and the layers feeding it:
        each weighted layer costs its whole cost times the fraction of its
        input and of its output channels left (or, timing, its time at the
        channel counts left)."""
        shrunk = self._fractions_left(units)

        def cost(name, whole):
            if name not in shrunk:
                return whole
            inputs, outputs = shrunk[name]
            if self.times is not None:
                return self.times.layer(name, inputs, outputs)
            return whole * (inputs * outputs)

        return sum(cost(name, whole) for name, whole in self.whole.items())

    def _fractions_left(self, units):
        """``{weighted layer: (input fraction, output fraction) left}``:
        each group's consumers lose inputs, its producers outputs, and a
        depthwise convolution on the way both (counted as inputs)."""
        inputs, outputs = {}, {}
        for name, keep in units.items():
            group = self.pruner.group(name)
            kept = keep / group.channels
            for consumer in group.consumers:
                inputs[consumer] = kept
            for touched in group.touched:
                side = outputs if touched.kind == "out" else inputs
                side[touched.name] = kept
        return {
            name: (inputs.get(name, 1.0), outputs.get(name, 1.0))
            for name in {**inputs, **outputs}
            if name in self.whole
        }

    def build(self, units):
        return self.pruner.prune(units)

    def build_one(self, name, units):
        return self.pruner.prune_one(name, units)

    def key(self):
        return _data_key(self.pruner.sampler)


def _data_key(sampler):
    """What the score table depends on in the reconstruction data."""
    if sampler is None:
        return {}
    digest = hashlib.sha1(sampler.images.tobytes()).hexdigest()
    return {"samples": sampler.num_samples, "data": digest}


def compress_model(
    model: keras.Model,
    eval_callback: Callable[[keras.Model, int | None], float],
    eval_iterations: int | None,
    target_comp_ratio: float,
    scheme: str = "spatial_svd",
    cost_metric: str = "mac",
    num_comp_ratio_candidates: int = 10,
    modules_to_ignore: Sequence[str] | None = None,
    multiplicity: int = 1,
    eval_scores_path: str | os.PathLike | None = None,
    data: object = None,
    num_reconstruction_samples: int = 5000,
    latency_table: LatencyTable | None = None,
    latency_tolerance: float | None = 0.03,
    verbose: int | str = "auto",
) -> tuple[keras.Model, CompressionStats]:
    """Compresses ``model`` to ``target_comp_ratio`` of its cost, greedily.

    Args:
        model: a built ``keras.Model``; not changed.
        eval_callback: ``(model, eval_iterations) -> float``, higher is
            better (for example top-1 accuracy on a few batches).
        eval_iterations: passed to ``eval_callback``.
        target_comp_ratio: the compressed model's cost over the original's,
            in (0, 1).
        scheme: ``"spatial_svd"``, ``"weight_svd"`` or
            ``"channel_pruning"``. Defaults to ``"spatial_svd"``.
        cost_metric: ``"mac"``, ``"memory"`` or ``"latency"``: the
            weighted layers' FP32 TFLite time, each layer (or SVD pair)
            timed alone at its candidate shape by ``latency_table``, so
            that the ratios chosen save time rather than MACs; the
            achieved ratio is the table's estimate, to be checked by
            timing the model (see :mod:`~aimet_keras.compress.latency`).
            Defaults to ``"mac"``.
        num_comp_ratio_candidates: ``N``: candidate ratios ``k / N``.
            Defaults to 10.
        modules_to_ignore: layer names never chosen for compression.
            As in AIMET, channel pruning may still winnow an ignored layer
            that produces a pruned channel space (it loses those output
            channels); to keep it whole, ignore the space's readers too
            (:func:`~aimet_keras.compress.prunable_layers` names each space
            by its first reader). Defaults to None.
        multiplicity: ranks and kept channels rounded up to a multiple of
            this. Defaults to 1.
        eval_scores_path: a JSON file for the sensitivity table: read when
            it holds a table for the same layers, scheme, metric,
            candidates (and reconstruction data), else written. Defaults to
            None (not saved).
        data: model inputs (an array or a ``tf.data`` set of batches) to
            sample activations from: channel pruning needs them for its
            reconstruction; with the SVD schemes they refit each second
            factor (see :func:`~aimet_keras.compress.spatial_svd`), which
            keeps much more accuracy. Defaults to None.
        num_reconstruction_samples: sampled output positions per layer
            (10 per image). Defaults to 5000.
        latency_table: the :class:`~aimet_keras.compress.LatencyTable`
            timing layers for ``cost_metric="latency"`` (its batch size,
            threads and cache file). Defaults to None: a new
            ``LatencyTable()`` (batch 32, 2 threads).
        latency_tolerance: with ``cost_metric="latency"``, the compressed
            model is converted and timed whole against the original (the
            table's batch and threads, interleaved); while its time ratio
            misses the target by more than this fraction of the target
            (what the layers timed alone leave out: adds, pooling, memory
            traffic between layers), the choice is made again, from the
            same sensitivity table, for a corrected target (scaled by the
            miss, then by the secant through the last two rounds), up to
            four rounds. The round closest to the target is
            returned. None: trust the table's estimate, time nothing
            whole. Defaults to 0.03.
        verbose: a progress bar over the candidates scored: 1 always, 0
            never, ``"auto"`` in a terminal. Defaults to ``"auto"``.

    Returns:
        ``(compressed model, CompressionStats)``. The achieved ratio is at
        most the target and within a rank's or channel's cost of it, unless
        the candidates cannot reach it (then it is the closest above or
        below). For ``"latency"`` with a tolerance it is the whole model's
        measured time ratio, within the tolerance unless four rounds did
        not get there (``stats.latency_rounds`` shows each).

    Raises:
        ValueError: for a ratio outside (0, 1), an unknown scheme, metric or
            layer name, missing ``data`` for channel pruning, or an
            eval_callback returning NaN (naming the layer and ratio).

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, labels = zoo.load_fashion_mnist_slice("calibration")
    >>> def evaluate(m, iterations):
    ...     return float((m.predict(images[:64], verbose=0).argmax(1)
    ...                   == labels[:64]).mean())
    >>> smaller, stats = compress_model(
    ...     model, evaluate, 1, 0.8, num_comp_ratio_candidates=4,
    ...     modules_to_ignore=["stem_conv"])
    >>> 0.79 < stats.achieved_comp_ratio <= 0.8
    True
    """
    if not 0 < target_comp_ratio < 1:
        raise ValueError(
            f"target_comp_ratio={target_comp_ratio!r}; use a fraction in "
            "(0, 1): the compressed model's cost over the original's."
        )
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; use one of {list(SCHEMES)}.")
    if cost_metric not in ("mac", "memory", "latency"):
        raise ValueError(
            f"cost_metric={cost_metric!r}; use 'mac', 'memory' or 'latency'."
        )
    if not isinstance(num_comp_ratio_candidates, int) or (
        num_comp_ratio_candidates < 2
    ):
        raise ValueError(
            f"num_comp_ratio_candidates={num_comp_ratio_candidates!r}; use an "
            "int >= 2."
        )
    if not isinstance(multiplicity, int) or multiplicity < 1:
        raise ValueError(f"multiplicity={multiplicity!r}; use an int >= 1.")
    if latency_tolerance is not None and not 0 < latency_tolerance < 1:
        raise ValueError(
            f"latency_tolerance={latency_tolerance!r}; use a fraction of the "
            "target in (0, 1), or None to trust the latency table."
        )
    prepared = prepare_lib.prepare_model(model)
    names = [layer.name for layer in prepared.layers]
    ignored = set(modules_to_ignore or ())
    for name in ignored:
        if name not in names:
            raise ValueError(
                f"modules_to_ignore names {name!r}, which the model does not "
                "have." + op_types.did_you_mean(name, names)
            )
    costs = cost_lib.model_cost(prepared)
    times = None
    if cost_metric == "latency":
        times = latency_lib.ModelTimes(
            prepared, latency_table or latency_lib.LatencyTable()
        )
        whole = dict(times.whole)
    else:
        whole = {layer.name: layer.total(cost_metric) for layer in costs.layers}
    total = sum(whole.values())
    if scheme == "channel_pruning":
        method = _PruningScheme(
            prepared,
            data,
            num_reconstruction_samples,
            multiplicity,
            whole,
            times,
        )
    else:
        sampler = None
        if data is not None:
            sampler = reconstruction.LayerSampler(
                data, num_reconstruction_samples
            )
        method = _SvdScheme(
            prepared, scheme, cost_metric, multiplicity, whole, sampler, times
        )
    selected = [
        layer.name
        for layer in costs.layers
        if layer.name not in ignored and method.selectable(layer.name)
    ]
    if not selected:
        raise ValueError(
            f"No layer of the model can be compressed with {scheme}."
        )
    candidates = [
        k / num_comp_ratio_candidates
        for k in range(1, num_comp_ratio_candidates)
    ]

    def evaluate(compressed, what):
        score = float(eval_callback(compressed, eval_iterations))
        if math.isnan(score):
            raise ValueError(
                f"eval_callback returned NaN for {what}; it must return a "
                "number (higher is better)."
            )
        return score

    candidate_units = {
        name: [method.units(name, ratio) for ratio in candidates]
        for name in selected
    }
    key = dict(
        scheme=scheme,
        cost_metric=cost_metric,
        candidates=candidates,
        multiplicity=multiplicity,
        layers=selected,
        **method.key(),
        **(times.table.key() if times is not None else {}),
        # Measured times map a ratio to units that can differ between
        # tables: the scores belong to the units.
        units=candidate_units,
    )
    saved = _read_scores(eval_scores_path, key)
    if saved is None:
        baseline = evaluate(prepared, "the original model")
        scores = {}
        progress = progress_lib.progress_bar(
            verbose,
            len(selected) * len(candidates),
            f"Scoring {len(selected)} layers x {len(candidates)} ratios",
            "candidate",
        )
        for name in selected:
            scores[name] = {}
            for ratio, units in zip(candidates, candidate_units[name]):
                scores[name][ratio] = evaluate(
                    method.build_one(name, units),
                    f"layer {name!r} at ratio {ratio:g}",
                )
                if progress is not None:
                    progress.add(1)
        _write_scores(eval_scores_path, key, baseline, scores)
    else:
        baseline, scores = saved

    def units_at(ratios):
        return {
            name: method.units(name, ratio)
            for name, ratio in ratios.items()
            if ratio < 1.0
        }

    def model_ratio(ratios):
        return method.model_cost(units_at(ratios)) / total

    def choose(target):
        threshold, ratios = _search_threshold(
            selected, candidates, scores, model_ratio, target
        )
        ratios = _fill_up(ratios, candidates, scores, model_ratio, target)
        units = _top_up(
            units_at(ratios),
            method,
            lambda name, ratio: _interpolated_score(
                scores[name], baseline, ratio
            ),
            total * target,
        )
        return threshold, units, method.build(units)

    threshold, units, result = choose(target_comp_ratio)
    rounds, measured = [], None
    if times is not None and latency_tolerance is not None:
        threshold, units, result, rounds, measured = _land_on_time(
            prepared,
            times.table,
            choose,
            (threshold, units, result),
            lambda chosen: method.model_cost(chosen) / total,
            target_comp_ratio,
            latency_tolerance,
        )
    after = cost_lib.model_cost(result)
    chosen = {
        name: method.unit_ratio(name, units[name]) if name in units else 1.0
        for name in selected
    }
    stats = CompressionStats(
        scheme=scheme,
        cost_metric=cost_metric,
        target_comp_ratio=target_comp_ratio,
        # Time is the table's estimate (the sum of the layers timed alone).
        achieved_comp_ratio=(
            measured
            if measured is not None
            else method.model_cost(units) / total
            if times is not None
            else after.total(cost_metric) / total
        ),
        ratios=chosen,
        ranks=units if scheme != "channel_pruning" else {},
        kept_channels=units if scheme == "channel_pruning" else {},
        original_cost=(costs.macs, costs.memory),
        compressed_cost=(after.macs, after.memory),
        layer_costs=_layer_costs(costs, after, set(units), scheme),
        baseline_score=baseline,
        eval_scores=scores,
        threshold=threshold,
        latency_rounds=tuple(rounds),
    )
    return result, stats


_LATENCY_ROUNDS = 4


def _land_on_time(original, table, choose, first, estimate, target, tolerance):
    """Times the chosen model whole and searches again until its measured
    time ratio is within ``tolerance`` of ``target``.

    ``choose(table target) -> (threshold, units, model)``. The second round
    scales the table's target by ``target / measured``; later rounds take
    the secant through the last two (the layers timed alone miss a share
    of the model's time that changes slowly with the choice: the measured
    ratio is close to affine in the table's target).
    Returns the closest round's ``(threshold, units, model)``, the rounds
    ``[(table target, estimate, measured)]`` and the closest's measured
    ratio.
    """
    aim, chosen, rounds = target, first, []
    best = None
    for _ in range(_LATENCY_ROUNDS):
        whole, compressed = table.model_seconds([original, chosen[2]])
        measured = compressed / whole
        rounds.append((aim, estimate(chosen[1]), measured))
        miss = abs(measured - target)
        if best is None or miss < best[0]:
            best = miss, chosen, rounds[-1]
        if miss <= tolerance * target:
            break
        proportional = measured / aim
        slope = None
        if len(rounds) > 1 and rounds[-1][0] != rounds[-2][0]:
            (aim0, _, measured0), (aim1, _, measured1) = rounds[-2:]
            slope = (measured1 - measured0) / (aim1 - aim0)
        # The secant only where its slope is sane: timing noise and steps
        # of whole channels or ranks can make two close rounds measure
        # alike, or in the wrong order, and the secant then leaps.
        if slope is not None and 0.25 < slope / proportional < 4:
            aim += (target - measured) / slope
        else:
            aim *= target / measured  # as if time were proportional
        aim = min(0.999, max(0.001, aim))
        chosen = choose(aim)
    _, chosen, closest = best
    return (*chosen, rounds, closest[2])


def _search_threshold(selected, candidates, scores, model_ratio, target):
    """AIMET's binary search of the score threshold: the highest threshold
    whose choice reaches the target (or, if none does, the most aggressive
    choice)."""

    def choose(threshold):
        ratios = {}
        for name in selected:
            passing = [r for r in candidates if scores[name][r] >= threshold]
            ratios[name] = min(passing) if passing else 1.0
        return ratios

    all_scores = [s for table in scores.values() for s in table.values()]
    low, high = min(all_scores), max(all_scores)
    best, best_threshold = None, high
    for _ in range(60):
        middle = (low + high) / 2
        ratios = choose(middle)
        achieved = model_ratio(ratios)
        # A lower threshold compresses more: search for the highest
        # threshold that still reaches the target.
        if achieved <= target:
            best, best_threshold, low = ratios, middle, middle
        else:
            high = middle
        if abs(achieved - target) < 1e-3 or high - low < 1e-9:
            break
    if best is None or model_ratio(best) > target:
        best_threshold = min(all_scores)
        best = choose(-math.inf)  # the most aggressive candidates
    return best_threshold, best


def _fill_up(ratios, candidates, scores, model_ratio, target):
    """Gives back cost the threshold over-saved, best score gain first.

    The threshold moves every layer in whole candidate steps, so the model
    usually lands below the target; each round here relaxes the one layer
    (to its next candidate, or whole) whose score gains most while the
    model stays within the target.
    """
    ratios = dict(ratios)
    while True:
        moves = []
        for name, ratio in ratios.items():
            if ratio >= 1.0:
                continue
            larger = [r for r in candidates if r > ratio] + [1.0]
            trial = dict(ratios, **{name: larger[0]})
            if model_ratio(trial) > target:
                continue
            table = scores[name]
            gain = table.get(larger[0], max(table.values())) - table[ratio]
            moves.append((gain, name, trial))
        if not moves:
            return ratios
        ratios = max(moves, key=lambda move: move[0])[2]


def _interpolated_score(table, baseline, ratio):
    """A layer's score at any ratio: linear between its measured points
    (the candidates, and the original model's score at 1.0)."""
    points = sorted(table.items()) + [(1.0, baseline)]
    ratios, values = zip(*points)
    return float(np.interp(ratio, ratios, values))


def _top_up(units, method, score_at, budget):
    """Gives back the cost left under ``budget`` a unit at a time.

    Candidate steps are coarse (a tenth of a layer), so the model can still
    sit a few percent under the target; each round here raises the rank or
    kept channels of the one layer losing least interpolated score per unit
    of cost (a raise costing nothing first), while the model stays within
    ``budget``.
    """
    units = dict(units)
    cost = method.model_cost(units)
    while True:
        best = None
        for name, unit in units.items():
            top = method.max_units(name)
            raised = min(top, unit + method.multiplicity)
            trial = dict(units)
            if raised >= top:
                del trial[name]
            else:
                trial[name] = raised
            trial_cost = method.model_cost(trial)
            if trial_cost > budget:
                continue
            gain = score_at(name, method.unit_ratio(name, raised)) - score_at(
                name, method.unit_ratio(name, unit)
            )
            # Measured time can stay flat over a few units (a SIMD block):
            # those come free.
            extra = trial_cost - cost
            value = gain / extra if extra > 0 else math.inf
            if best is None or value > best[0]:
                best = (value, trial, trial_cost)
        if best is None:
            return units
        _, units, cost = best


def _layer_costs(before, after, factorised, scheme):
    """``{name: (MACs, MACs after, memory, memory after)}`` per original
    weighted layer; a factorised layer's two parts summed."""
    found = {}
    for layer in before.layers:
        if layer.name in factorised and scheme != "channel_pruning":
            parts = [after[f"{layer.name}_a"], after[f"{layer.name}_b"]]
        else:
            parts = [after[layer.name]]
        found[layer.name] = (
            layer.macs,
            sum(p.macs for p in parts),
            layer.memory,
            sum(p.memory for p in parts),
        )
    return found


def _read_scores(path, key):
    if path is None or not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    if saved.get("key") != key:
        return None
    scores = {
        name: {float(r): s for r, s in table.items()}
        for name, table in saved["scores"].items()
    }
    return saved["baseline"], scores


def _write_scores(path, key, baseline, scores):
    if path is None:
        return
    staging.write_atomically(
        path,
        json.dumps(
            {"key": key, "baseline": baseline, "scores": scores}, indent=1
        ),
    )
