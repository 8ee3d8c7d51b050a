"""Automatic per-layer compression ratios: AIMET's greedy selection.

1. For each selected layer and each candidate ratio ``k / N`` (``k = 1 ..
   N-1``), compress that layer alone and score the model with the user's
   ``eval_callback``: a table of sensitivities, saved as JSON so that a rerun
   with the same settings reuses it.
2. Binary-search one score threshold: at a threshold, every layer takes its
   most aggressive ratio whose score stays at or above it (or stays whole).
   The search stops when the model's cost is within a tolerance of the
   target.
3. Compress every layer at its chosen ratio.
"""

import dataclasses
import json
import math
import os

from aimet_keras.compress import cost as cost_lib
from aimet_keras.compress import svd as svd_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import op_types

__all__ = ["CompressionStats", "compress_model"]

_SCHEMES = {
    "spatial_svd": (svd_lib.spatial_svd_layers, svd_lib.max_spatial_svd_rank),
    "weight_svd": (svd_lib.weight_svd_layers, svd_lib.max_weight_svd_rank),
}


@dataclasses.dataclass(frozen=True)
class CompressionStats:
    """What :func:`compress_model` did.

    Attributes:
        scheme: the compression scheme.
        cost_metric: ``"mac"`` or ``"memory"``.
        target_comp_ratio: the requested cost over the original.
        achieved_comp_ratio: the compressed model's cost over the original.
        ratios: ``{layer name: chosen ratio}`` (1.0: left whole).
        ranks: ``{layer name: rank}`` for the layers compressed.
        original_cost: ``(MACs, memory)`` of the original model.
        compressed_cost: ``(MACs, memory)`` after compression.
        eval_scores: ``{layer name: {ratio: score}}``.
    """

    scheme: str
    cost_metric: str
    target_comp_ratio: float
    achieved_comp_ratio: float
    ratios: dict
    ranks: dict
    original_cost: tuple
    compressed_cost: tuple
    eval_scores: dict


def _selectable(layer, scheme):
    try:
        _SCHEMES[scheme][1](layer)
    except (ValueError, AttributeError):
        return False
    # A kx1 or 1xk convolution gains nothing from spatial SVD.
    return scheme != "spatial_svd" or min(layer.kernel.shape[:2]) > 1


def _layer_cost(layer, rank, scheme, cost_metric, whole):
    """``whole`` (the layer's cost) scaled as the factorised pair's."""
    per_rank, original = svd_lib.rank_cost(layer, scheme, cost_metric)
    return whole * rank * per_rank / original


def compress_model(
    model,
    eval_callback,
    eval_iterations,
    target_comp_ratio,
    scheme="spatial_svd",
    cost_metric="mac",
    num_comp_ratio_candidates=10,
    modules_to_ignore=None,
    multiplicity=1,
    eval_scores_path=None,
):
    """Compresses ``model`` to ``target_comp_ratio`` of its cost, greedily.

    Args:
        model: a built ``keras.Model``; not changed.
        eval_callback: ``(model, eval_iterations) -> float``, higher is
            better (for example top-1 accuracy on a few batches).
        eval_iterations: passed to ``eval_callback``.
        target_comp_ratio: the compressed model's cost over the original's,
            in (0, 1).
        scheme: ``"spatial_svd"`` or ``"weight_svd"``. Defaults to
            ``"spatial_svd"``.
        cost_metric: ``"mac"`` or ``"memory"``. Defaults to ``"mac"``.
        num_comp_ratio_candidates: ``N``: candidate ratios ``k / N``.
            Defaults to 10.
        modules_to_ignore: layer names left whole. Defaults to None.
        multiplicity: ranks rounded up to a multiple of this. Defaults to
            1.
        eval_scores_path: a JSON file for the sensitivity table: read when
            it holds a table for the same layers, scheme, metric and
            candidates, else written. Defaults to None (not saved).

    Returns:
        ``(compressed model, CompressionStats)``.

    Raises:
        ValueError: for a ratio outside (0, 1), an unknown scheme, metric or
            layer name, or an eval_callback returning NaN (naming the layer
            and ratio).

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, labels = zoo.load_fashion_mnist_slice("calibration")
    >>> def evaluate(m, iterations):
    ...     return float((m.predict(images[:64], verbose=0).argmax(1)
    ...                   == labels[:64]).mean())
    >>> smaller, stats = compress_model(
    ...     model, evaluate, 1, 0.8, num_comp_ratio_candidates=4,
    ...     modules_to_ignore=["stem_conv"])
    >>> abs(stats.achieved_comp_ratio - 0.8) < 0.05
    True
    """
    if not 0 < target_comp_ratio < 1:
        raise ValueError(
            f"target_comp_ratio={target_comp_ratio!r}; use a fraction in "
            "(0, 1): the compressed model's cost over the original's."
        )
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme={scheme!r}; use one of {sorted(_SCHEMES)}.")
    if cost_metric not in ("mac", "memory"):
        raise ValueError(f"cost_metric={cost_metric!r}; use 'mac' or 'memory'.")
    if not isinstance(num_comp_ratio_candidates, int) or (
        num_comp_ratio_candidates < 2
    ):
        raise ValueError(
            f"num_comp_ratio_candidates={num_comp_ratio_candidates!r}; use an "
            "int >= 2."
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
    whole = {
        layer.name: layer.macs if cost_metric == "mac" else layer.memory
        for layer in costs.layers
    }
    total = sum(whole.values())
    selected = [
        prepared.get_layer(layer.name)
        for layer in costs.layers
        if layer.name not in ignored
        and _selectable(prepared.get_layer(layer.name), scheme)
    ]
    if not selected:
        raise ValueError(
            f"No layer of the model can be compressed with {scheme}."
        )
    candidates = [
        k / num_comp_ratio_candidates
        for k in range(1, num_comp_ratio_candidates)
    ]

    def rank(layer, ratio):
        return svd_lib.svd_rank(layer, ratio, scheme, cost_metric, multiplicity)

    def compressed(ranks):
        return svd_lib._factorise(prepared, ranks, _SCHEMES[scheme][0])

    key = dict(
        scheme=scheme,
        cost_metric=cost_metric,
        candidates=candidates,
        multiplicity=multiplicity,
        layers=[layer.name for layer in selected],
    )
    scores = _read_scores(eval_scores_path, key)
    if scores is None:
        scores = {}
        for layer in selected:
            scores[layer.name] = {}
            for ratio in candidates:
                score = float(
                    eval_callback(
                        compressed({layer.name: rank(layer, ratio)}),
                        eval_iterations,
                    )
                )
                if math.isnan(score):
                    raise ValueError(
                        f"eval_callback returned NaN for layer "
                        f"{layer.name!r} at ratio {ratio:g}; it must return "
                        "a number (higher is better)."
                    )
                scores[layer.name][ratio] = score
        _write_scores(eval_scores_path, key, scores)

    def choose(threshold):
        ratios = {}
        for layer in selected:
            passing = [
                r for r in candidates if scores[layer.name][r] >= threshold
            ]
            ratios[layer.name] = min(passing) if passing else 1.0
        return ratios

    def model_ratio(ratios):
        cost = total
        for layer in selected:
            if ratios[layer.name] < 1.0:
                name = layer.name
                cost += (
                    _layer_cost(
                        layer,
                        rank(layer, ratios[name]),
                        scheme,
                        cost_metric,
                        whole[name],
                    )
                    - whole[name]
                )
        return cost / total

    all_scores = [s for table in scores.values() for s in table.values()]
    low, high = min(all_scores), max(all_scores)
    best = choose(high)
    for _ in range(60):
        middle = (low + high) / 2
        ratios = choose(middle)
        achieved = model_ratio(ratios)
        # A lower threshold compresses more: search for the highest
        # threshold that still reaches the target.
        if achieved <= target_comp_ratio:
            best, low = ratios, middle
        else:
            high = middle
        if abs(achieved - target_comp_ratio) < 1e-3 or high - low < 1e-9:
            break
    if model_ratio(best) > target_comp_ratio:
        best = choose(-math.inf)  # the most aggressive candidates
    best = _fill_up(best, candidates, scores, model_ratio, target_comp_ratio)
    ranks = {
        name: rank(prepared.get_layer(name), ratio)
        for name, ratio in best.items()
        if ratio < 1.0
    }
    result = compressed(ranks)
    after = cost_lib.model_cost(result)
    metric = after.macs if cost_metric == "mac" else after.memory
    stats = CompressionStats(
        scheme=scheme,
        cost_metric=cost_metric,
        target_comp_ratio=target_comp_ratio,
        achieved_comp_ratio=metric / total,
        ratios=best,
        ranks=ranks,
        original_cost=(costs.macs, costs.memory),
        compressed_cost=(after.macs, after.memory),
        eval_scores=scores,
    )
    return result, stats


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


def _read_scores(path, key):
    if path is None or not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    if saved.get("key") != key:
        return None
    return {
        name: {float(r): s for r, s in table.items()}
        for name, table in saved["scores"].items()
    }


def _write_scores(path, key, scores):
    if path is None:
        return
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump({"key": key, "scores": scores}, f, indent=1)
    os.replace(temporary, path)
