"""Automatic mixed precision: AIMET's ``choose_mixed_precision``.

Each weighted layer, with the activation grids it reads, is a *quantizer
group*; groups that read the same activation grid merge (one tensor has one
grid). A *candidate* is a pair of bitwidths, (activation, weight). AMP finds
the cheapest assignment of candidates to groups within an allowed accuracy
drop, in AIMET's two phases:

1. **Sensitivity**: every group is tried at every candidate, the others at
   the most precise one, and scored by ``eval_callback_for_phase1``. The
   table is cached in ``results_dir``; a rerun with ``clean_start=False``
   reuses it.
2. **Pareto front**: from all groups at the most precise candidate, a greedy
   walk lowers, step after step, the group whose next cheaper candidate
   costs the least score per unit of cost saved (bit-operations:
   MACs x activation bits x weight bits; or memory: weights x weight bits).
   The walk is the front of cost against accuracy; a binary search along it
   with ``eval_callback_for_phase2`` finds the cheapest point whose score is
   within ``allowed_accuracy_drop`` of the FP32 score.

The chosen bitwidths are set on the sim (grids recomputed from the
calibration statistics), so they reach its encodings files and the ONNX and
TFLite exports (which refuse, with the reason, what they cannot express,
such as 16-bit activations in an int8 TFLite model).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import typing

import numpy as np

from aimet_keras import _callbacks
from aimet_keras import _progress
from aimet_keras.ptq import mixed_precision as mixed_lib

if typing.TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from collections.abc import Sequence

    import keras

    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = ["MixedPrecisionResult", "choose_mixed_precision"]

CACHE_FILE = "amp_phase1.json"
PARETO_FILE = "amp_pareto.json"
PARETO_PLOT = "amp_pareto.png"


@dataclasses.dataclass
class MixedPrecisionResult:
    """What AMP chose and measured.

    Attributes:
        fp32: the phase-2 score with every quantizer off.
        baseline: the phase-2 score with every group at the most precise
            candidate.
        chosen: ``{group name: (activation, weight)}``: bitwidths for
            integer grids, type names (``"fp16"``) for float formats.
        chosen_score: its phase-2 score.
        relative_cost: its cost over the baseline's.
        pareto: ``[{"relative_cost", "score" or None, "step"}]`` along the
            greedy walk; ``score`` is set where phase 2 evaluated it.
        sensitivity: ``{group: {"a8w4": score, ...}}`` from phase 1.
        groups: ``{group name: [layer names]}``.
        files: ``{name: path}`` written.
    """

    fp32: float
    baseline: float
    chosen: dict
    chosen_score: float
    relative_cost: float
    pareto: list
    sensitivity: dict
    groups: dict
    files: dict


def _side(part, candidate):
    """One side of a candidate as a data type name (``"int8"``,
    ``"fp16"``, ``"fp8_e4m3"``)."""
    from aimet_keras.quant import float_formats

    if isinstance(part, tuple) and len(part) == 2:
        bits, kind = part
        # "int"/"float", or AIMET's QuantizationDataType.int/.float.
        kind = getattr(kind, "name", kind)
        if kind == "int" and isinstance(bits, int):
            part = bits
        elif kind == "float" and bits in (8, 16):
            part = float_formats.float_format(bits).name
    if isinstance(part, int) and not isinstance(part, bool):
        part = f"int{part}"
    try:
        mixed_lib._data_type(part if isinstance(part, str) else None)
    except ValueError:
        part = None
    if not isinstance(part, str):
        raise ValueError(
            f"AMP candidate {candidate!r}: use (activation, weight) with "
            "each side a bitwidth (8), a data type name ('int8', 'fp16', "
            "'bf16', 'fp8_e4m3', 'fp8_e5m2') or AIMET's (16, 'float'); "
            "e.g. (8, 4) or ((8, 'int'), (4, 'int'))."
        )
    return part


def _candidate(candidate):
    """``(activation type, weight type)`` names from AIMET's form, the
    short form or type names."""
    if not isinstance(candidate, tuple) or len(candidate) != 2:
        _side(None, candidate)  # raises
    return tuple(_side(part, candidate) for part in candidate)


def _public(candidate):
    """A candidate as the result gives it: ints for integer grids."""
    return tuple(
        int(side[3:]) if side.startswith("int") else side for side in candidate
    )


def _bits(side):
    return mixed_lib._data_type(side)[1]


def _name(candidate):
    """``"a8w4"`` for integers, ``"afp16wfp16"`` for float types."""
    return "".join(
        f"{prefix}{side[3:] if side.startswith('int') else side}"
        for prefix, side in zip("aw", candidate)
    )


def _producer_quantizers(wrapper, by_layer):
    """The enabled activation quantizers of what ``wrapper`` reads."""
    own = [q for q in wrapper.input_quantizers if q.enabled]
    if own:
        return own
    found = []
    for node in wrapper._inbound_nodes[:1]:
        for tensor in node.input_tensors:
            producer = tensor._keras_history.operation
            found += _output_grids(producer, by_layer, set())
    return found


def _output_grids(layer, by_layer, seen):
    """The enabled output grids of ``layer``, or of what it passes on."""
    if id(layer) in seen:
        return []
    seen.add(id(layer))
    wrapper = by_layer.get(id(layer))
    if wrapper is not None:
        grids = [
            q
            for q in wrapper.output_quantizers
            if q.enabled and q.data_type == "int" and not q.tied
        ]
        if grids:
            return grids
    found = []
    for node in getattr(layer, "_inbound_nodes", [])[:1]:
        for tensor in node.input_tensors:
            found += _output_grids(
                tensor._keras_history.operation, by_layer, seen
            )
    return found


def _groups(sim):
    """``{group name: (wrappers, activation quantizers, param quantizers)}``.

    Weighted layers that read the same activation grid join one group.
    """
    by_layer = {id(w): w for w in sim.quant_wrappers()}
    weighted = [
        w
        for w in sim.quant_wrappers()
        if any(
            q.enabled and q.data_type == "int"
            for q in w.param_quantizers.values()
        )
    ]
    parent = {w.name: w.name for w in weighted}

    def root(name):
        while parent[name] != name:
            name = parent[name]
        return name

    reads = {w.name: _producer_quantizers(w, by_layer) for w in weighted}
    owner = {}
    for wrapper in weighted:
        for quantizer in reads[wrapper.name]:
            if id(quantizer) in owner:
                parent[root(wrapper.name)] = root(owner[id(quantizer)])
            else:
                owner[id(quantizer)] = wrapper.name
    groups = {}
    for wrapper in weighted:
        members = groups.setdefault(root(wrapper.name), ([], {}, []))
        members[0].append(wrapper)
        for quantizer in reads[wrapper.name]:
            members[1][id(quantizer)] = quantizer
        members[2].extend(
            q
            for q in wrapper.param_quantizers.values()
            if q.enabled and q.data_type == "int" and not q.tied
        )
    return {
        name: (wrappers, list(activations.values()), params)
        for name, (wrappers, activations, params) in groups.items()
    }


def _apply(sim, groups, assignment):
    """Sets every group's bitwidths; grids recomputed where they changed."""
    changed_params = False
    for name, (_, activations, params) in groups.items():
        activation_type, param_type = (
            mixed_lib._data_type(side) for side in assignment[name]
        )
        for quantizer in activations:
            mixed_lib._set_type(quantizer, *activation_type)
        for quantizer in params:
            if mixed_lib._type_of(quantizer) != param_type:
                (
                    quantizer.data_type,
                    quantizer.bitwidth,
                    quantizer.exponent_bits,
                ) = param_type
                changed_params = True
    if changed_params:
        sim._compute_param_encodings()
    sim._retrace()


def _cost(groups, costs, assignment, metric):
    total = 0
    for name, (wrappers, _, _) in groups.items():
        activation_bits, param_bits = map(_bits, assignment[name])
        for wrapper in wrappers:
            cost = costs.get(wrapper.name)
            if cost is None:
                continue
            if metric == "memory":
                total += cost.memory * param_bits
            else:
                total += cost.macs * activation_bits * param_bits
    return total


def choose_mixed_precision(
    sim: QuantizationSimModel,
    candidates: Sequence[tuple],
    eval_callback_for_phase1: Callable[[keras.Model], float],
    eval_callback_for_phase2: Callable[[keras.Model], float] | None = None,
    allowed_accuracy_drop: float = 0.01,
    results_dir: str | os.PathLike = "amp_results",
    clean_start: bool = True,
    cost_metric: str = "bitops",
    verbose: int | str = "auto",
) -> MixedPrecisionResult:
    """Chooses per-group bitwidths within an accuracy drop (AIMET's AMP).

    Args:
        sim: a calibrated :class:`~aimet_keras.sim.QuantizationSimModel`
            (integer grids; weights not frozen). Changed in place: it ends
            with the chosen bitwidths.
        candidates: ``(activation, weight)`` pairs: bitwidths of integer
            grids, e.g. ``[(8, 8), (8, 4), (16, 8)]``; data type names,
            ``("fp16", "fp16")`` or ``("fp8_e4m3", "int8")`` (see
            :func:`~aimet_keras.ptq.set_precision`); or AIMET's
            ``((8, "int"), (4, "int"))`` and ``((16, "float"), (16,
            "float"))``. Cost counts a format's bits like an integer's.
        eval_callback_for_phase1: ``f(model) -> float`` (higher is better),
            called once per group and candidate: keep its data small.
        eval_callback_for_phase2: the score for the front and the final
            check. Defaults to the phase-1 callback.
        allowed_accuracy_drop: the largest drop below the FP32 score, in
            the callback's units. Defaults to 0.01.
        results_dir: where the phase-1 cache, the front (JSON) and its plot
            go (the plot needs matplotlib). Defaults to ``"amp_results"``.
        clean_start: recompute phase 1 even if a cache for the same groups
            and candidates is there. Defaults to True.
        cost_metric: ``"bitops"`` (MACs x activation bits x weight bits) or
            ``"memory"`` (weights x weight bits). Defaults to
            ``"bitops"``.
        verbose: progress bars: 1, 0 or ``"auto"``. Defaults to ``"auto"``.

    Returns:
        A :class:`MixedPrecisionResult`.

    Raises:
        ValueError: for bad candidates, an unknown cost metric, frozen
            weight grids, or no weighted layer.

    Example:

    >>> import tempfile
    >>> from aimet_keras import ptq
    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, labels = zoo.load_fashion_mnist_slice("test")
    >>> sim = QuantizationSimModel(ptq.fold_for_deployment(model))
    >>> sim.compute_encodings(images[:128])
    >>> def top1(m):
    ...     out = np.asarray(m(images[:300], training=False))
    ...     return float(np.mean(out.argmax(-1) == labels[:300]))
    >>> result = choose_mixed_precision(  # doctest: +SKIP
    ...     sim, [(8, 8), (8, 4)], top1, cost_metric="memory",
    ...     results_dir=tempfile.mkdtemp())
    >>> result.relative_cost < 1  # doctest: +SKIP
    True
    """
    from aimet_keras import compress

    choices = sorted(
        {_candidate(c) for c in candidates},
        key=lambda c: (_bits(c[1]), _bits(c[0]), c),
        reverse=True,
    )
    if len(choices) < 2:
        raise ValueError(
            "choose_mixed_precision: give at least two candidates, e.g. "
            "[(8, 8), (8, 4)]."
        )
    if not isinstance(allowed_accuracy_drop, (int, float)):
        raise ValueError(
            f"allowed_accuracy_drop={allowed_accuracy_drop!r}: give the "
            "largest score drop below FP32 you accept, e.g. 0.01; the whole "
            "front is in the result's pareto either way."
        )
    if cost_metric not in ("bitops", "memory"):
        raise ValueError(
            f"cost_metric={cost_metric!r}: use 'bitops' or 'memory'."
        )
    eval_callback_for_phase1 = _callbacks.as_model_callback(
        eval_callback_for_phase1, "eval_callback_for_phase1"
    )
    phase2 = _callbacks.as_model_callback(
        eval_callback_for_phase2 or eval_callback_for_phase1,
        "eval_callback_for_phase2",
    )
    groups = _groups(sim)
    if not groups:
        raise ValueError(
            "choose_mixed_precision: the sim has no weighted layer with an "
            "integer weight grid to choose bitwidths for."
        )
    frozen = [
        q.name
        for _, _, params in groups.values()
        for q in params
        if id(q) in sim._frozen
    ]
    if frozen:
        raise ValueError(
            f"choose_mixed_precision: the weight grids {frozen[:3]} are "
            "frozen (AdaRound, set_and_freeze_param_encodings); run AMP "
            "before freezing them."
        )
    folder = pathlib.Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    costs = {
        layer.name: layer for layer in compress.model_cost(sim._prepared).layers
    }
    best = choices[0]
    baseline_assignment = dict.fromkeys(groups, best)

    def score(assignment, callback):
        _apply(sim, groups, assignment)
        return float(callback(sim.model))

    sensitivity = _phase1(
        sim,
        groups,
        choices,
        baseline_assignment,
        score,
        eval_callback_for_phase1,
        folder,
        clean_start,
        verbose,
    )
    fp32 = _fp32_score(sim, phase2)
    baseline_cost = _cost(groups, costs, baseline_assignment, cost_metric)
    walk = _greedy_walk(
        groups, choices, costs, cost_metric, sensitivity, baseline_assignment
    )
    evaluated = {}

    def walk_score(index):
        if index not in evaluated:
            evaluated[index] = score(walk[index], phase2)
        return evaluated[index]

    target = fp32 - allowed_accuracy_drop
    low, high = 0, len(walk) - 1
    if walk_score(low) < target:
        chosen_index = low  # even the most precise setting misses it
    elif walk_score(high) >= target:
        chosen_index = high
    else:
        # walk[low] meets the target, walk[high] does not.
        while high - low > 1:
            middle = (low + high) // 2
            if walk_score(middle) >= target:
                low = middle
            else:
                high = middle
        chosen_index = low
    chosen = walk[chosen_index]
    chosen_score = walk_score(chosen_index)
    _apply(sim, groups, chosen)
    pareto = [
        {
            "step": index,
            "relative_cost": _cost(groups, costs, step, cost_metric)
            / baseline_cost,
            "score": evaluated.get(index),
        }
        for index, step in enumerate(walk)
    ]
    result = MixedPrecisionResult(
        fp32=fp32,
        baseline=walk_score(0),
        chosen={group: _public(c) for group, c in chosen.items()},
        chosen_score=chosen_score,
        relative_cost=pareto[chosen_index]["relative_cost"],
        pareto=pareto,
        sensitivity=sensitivity,
        groups={
            name: [w.name for w in wrappers]
            for name, (wrappers, _, _) in groups.items()
        },
        files={},
    )
    _write(result, folder, cost_metric)
    return result


def _fp32_score(sim, callback):
    quantizers = [
        q
        for wrapper in sim.quant_wrappers()
        for q in (
            *wrapper.input_quantizers,
            *wrapper.output_quantizers,
            *wrapper.internal_quantizers.values(),
            *wrapper.param_quantizers.values(),
        )
    ]
    states = [q.enabled for q in quantizers]
    for q in quantizers:
        q.enabled = False
    sim._retrace()
    try:
        return float(callback(sim.model))
    finally:
        for q, state in zip(quantizers, states):
            q.enabled = state
        sim._retrace()


def _phase1(
    sim,
    groups,
    choices,
    baseline,
    score,
    callback,
    folder,
    clean_start,
    verbose,
):
    """``{group: {candidate name: score}}``, from the cache if it fits."""
    # What the scores depend on: the model and its weights, the groups,
    # the candidates and the sim's settings.
    weights = [
        float(np.sum(np.abs(np.asarray(w))))
        for wrapper in sim.quant_wrappers()
        for w, _ in wrapper.quantized_weights()
    ]
    key = {
        "model": sim.model.name,
        "groups": sorted(groups),
        "candidates": [_name(c) for c in choices],
        "settings": json.loads(json.dumps(sim.quantizer_args(), default=str)),
        "weights": round(float(np.sum(weights)), 3),
    }
    cache = folder / CACHE_FILE
    if not clean_start and cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["sensitivity"]
    bar = _progress.progress_bar(
        verbose, len(groups) * (len(choices) - 1), "AMP phase 1", "setting"
    )
    sensitivity = {}
    done = 0
    base_score = score(baseline, callback)
    for name in groups:
        sensitivity[name] = {_name(choices[0]): base_score}
        for candidate in choices[1:]:
            sensitivity[name][_name(candidate)] = score(
                {**baseline, name: candidate}, callback
            )
            done += 1
            if bar is not None:
                bar.update(done)
    from aimet_keras.export import staging

    staging.write_atomically(
        cache, json.dumps({"key": key, "sensitivity": sensitivity}, indent=1)
    )
    return sensitivity


def _greedy_walk(groups, choices, costs, metric, sensitivity, start):
    """The assignments from ``start`` down to all-cheapest, greedily."""
    current = dict(start)
    walk = [dict(current)]
    order = {c: i for i, c in enumerate(choices)}
    while True:
        best_move, best_rate = None, None
        before = _cost(groups, costs, current, metric)
        base = {name: sensitivity[name][_name(choices[0])] for name in groups}
        for name in groups:
            position = order[current[name]]
            for candidate in choices[position + 1 :]:
                trial = {**current, name: candidate}
                saved = before - _cost(groups, costs, trial, metric)
                if saved <= 0:
                    continue
                drop = max(
                    0.0, base[name] - sensitivity[name][_name(candidate)]
                )
                rate = drop / saved
                if best_rate is None or rate < best_rate:
                    best_move, best_rate = (name, candidate), rate
                break  # the next cheaper candidate only
        if best_move is None:
            return walk
        current[best_move[0]] = best_move[1]
        walk.append(dict(current))


def _write(result, folder, cost_metric):
    import importlib.util

    from aimet_keras.export import staging

    result.files["pareto"] = staging.write_atomically(
        folder / PARETO_FILE,
        json.dumps(
            {
                "fp32": result.fp32,
                "baseline": result.baseline,
                "chosen": {
                    k: _name(_candidate(v)) for k, v in result.chosen.items()
                },
                "chosen_score": result.chosen_score,
                "relative_cost": result.relative_cost,
                "cost_metric": cost_metric,
                "pareto": result.pareto,
                "groups": result.groups,
            },
            indent=1,
        ),
    )
    if importlib.util.find_spec("matplotlib") is None:
        return
    from aimet_keras import plotting

    points = [
        (p["relative_cost"], p["score"], f"step {p['step']}")
        for p in result.pareto
        if p["score"] is not None
    ]
    # The front: the points no cheaper point scores as well as.
    front, best = [], -float("inf")
    for x, y, _ in sorted(points):
        if y > best:
            front.append((x, y))
            best = y
    result.files["pareto_plot"] = plotting.pareto_chart(
        points,
        folder / PARETO_PLOT,
        title=f"AMP: score against {cost_metric} (relative to the baseline)",
        x_label=f"relative {cost_metric}",
        y_label="score",
        front=front,
        chosen=(result.relative_cost, result.chosen_score),
    )
