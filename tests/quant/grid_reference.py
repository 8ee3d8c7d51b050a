"""An independent float64 numpy model of AIMET's quantization grid.

Written from the reference notes (``aimet-reference.md`` sections 3.1, 3.2
and 3.7), not from ``aimet_keras``: this module must not import it. The tests
compare the TensorFlow implementation against these functions.

Conventions (AIMET's):

* an encoding is ``(delta, offset, min, max)``; ``offset`` is the negative
  zero point, a whole number, and the integer grid is ``[0, steps]``;
* ``steps = 2**bw - 1``, one fewer for a strict symmetric grid;
* quantize-dequantize (``trim_functions.cpp``, CPU path)::

      x_c = clamp(x, min, max)
      q   = std::round(x_c / delta - offset)
      y   = delta * (q + offset)

  Note that the rounding happens on the grid *level* ``x_c / delta -
  offset`` (which is >= 0), so a tie always goes up in level space.
"""

import collections
import math

import numpy as np

MIN_RANGE = 0.01

RefEncoding = collections.namedtuple(
    "RefEncoding", ["delta", "offset", "min", "max", "steps"]
)


def num_steps(bitwidth, is_symmetric=False, strict_symmetric=False):
    """``2**bw - 1`` grid steps, one fewer in strict symmetric mode."""
    steps = 2**bitwidth - 1
    if is_symmetric and strict_symmetric:
        steps -= 1
    return steps


def std_round(x):
    """C's ``round``: nearest integer, halves away from zero, in float64.

    ``x - trunc(x)`` is exact in binary floating point, so the tie test is
    exact (unlike ``floor(|x| + 0.5)``, which fails for 0.49999999999999994).
    """
    x = np.asarray(x, dtype=np.float64)
    whole = np.trunc(x)
    frac = x - whole
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(x), 0.0)


def _scalar_round(v):
    return float(std_round(v))


def _grid_for_one_range(lo, hi, bitwidth, is_symmetric, strict, unsigned):
    """``getComputedEncodings`` for one channel, Python floats (float64)."""
    lo = float(lo)
    hi = float(hi)
    # 1. Fix-ups: contain zero, at least MIN_RANGE wide.
    lo = min(0.0, lo)
    hi = max(0.0, hi)
    hi = max(hi, lo + MIN_RANGE)
    steps = num_steps(bitwidth, is_symmetric, strict)

    # 2. Signed symmetric: symmetric and (min < 0 or unsigned symmetric off).
    if is_symmetric and (lo < 0.0 or not unsigned):
        largest = max(abs(lo), abs(hi))
        num_positive = steps // 2  # floor(steps / 2)
        delta = largest / num_positive
        offset = -float(math.ceil(steps / 2))
        return delta, offset, offset * delta, num_positive * delta, steps

    # 3. Asymmetric, or unsigned symmetric with min >= 0.
    delta = (hi - lo) / steps
    if lo < 0.0 < hi:
        # Nudge the zero point so that 0.0 is a grid point.
        b0 = _scalar_round(-lo / delta)
        b0 = min(max(b0, 0.0), float(steps))
        offset = -b0
        new_min = offset * delta
        new_max = hi - lo + new_min
        return delta, offset, new_min, new_max, steps
    # min == 0 (or max == 0): offset = round(min / delta), min/max kept.
    offset = _scalar_round(lo / delta)
    return delta, offset, lo, hi, steps


def compute_encoding(
    encoding_min,
    encoding_max,
    bitwidth,
    is_symmetric=False,
    strict_symmetric=False,
    unsigned_symmetric=False,
):
    """The grid for a range, per tensor (scalars) or per channel (1-d).

    Returns:
        A :class:`RefEncoding` whose ``delta``/``offset``/``min``/``max`` are
        float64 arrays shaped like the inputs; ``steps`` is a Python int.
    """
    lo = np.asarray(encoding_min, dtype=np.float64)
    hi = np.asarray(encoding_max, dtype=np.float64)
    assert lo.shape == hi.shape
    results = [
        _grid_for_one_range(
            a, b, bitwidth, is_symmetric, strict_symmetric, unsigned_symmetric
        )
        for a, b in zip(lo.ravel(), hi.ravel(), strict=True)
    ]
    columns = list(zip(*results, strict=True))
    arrays = [
        np.array(c, dtype=np.float64).reshape(lo.shape) for c in columns[:4]
    ]
    steps = num_steps(bitwidth, is_symmetric, strict_symmetric)
    return RefEncoding(*arrays, steps)


def _normalize_axes(axis, rank):
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return [a % rank for a in axes]


def _per_channel(fn, x, params, axis):
    """Applies ``fn(x_2d, *params_row)`` with channels flattened last.

    The channel axes are moved to the end (in the given order), flattened
    row-major into one channel dimension of size C, and each param (length C)
    broadcasts along it. The result is moved back to ``x``'s layout.
    """
    x = np.asarray(x, dtype=np.float64)
    if axis is None:
        return fn(x, *[np.asarray(p, dtype=np.float64) for p in params])
    axes = _normalize_axes(axis, x.ndim)
    others = [a for a in range(x.ndim) if a not in axes]
    perm = others + axes
    moved = np.transpose(x, perm)
    moved_shape = moved.shape
    num_channels = int(np.prod([x.shape[a] for a in axes]))
    flat = moved.reshape(-1, num_channels)
    rows = [
        np.asarray(p, dtype=np.float64).reshape(1, num_channels) for p in params
    ]
    out = fn(flat, *rows).reshape(moved_shape)
    return np.transpose(out, np.argsort(perm))


def _qdq(x, delta, offset, lo, hi):
    clamped = np.minimum(np.maximum(x, lo), hi)
    q = std_round(clamped / delta - offset)
    return delta * (q + offset)


def _level(x, delta, offset, lo, hi):
    clamped = np.minimum(np.maximum(x, lo), hi)
    return clamped / delta - offset


def quantize_dequantize(x, enc, axis=None):
    """AIMET's CPU quantize-dequantize in float64 (see module docstring)."""
    return _per_channel(
        _qdq, x, (enc.delta, enc.offset, enc.min, enc.max), axis
    )


def grid_level(x, enc, axis=None):
    """The unrounded level ``clamp(x) / delta - offset`` in float64."""
    return _per_channel(
        _level, x, (enc.delta, enc.offset, enc.min, enc.max), axis
    )


def broadcast_param(param, x_shape, axis=None):
    """A per-channel parameter broadcast to ``x_shape`` (for test maths)."""
    return _per_channel(
        lambda flat, p: np.broadcast_to(p, flat.shape).copy(),
        np.zeros(x_shape),
        (param,),
        axis,
    )


def distance_to_tie(level):
    """How far each level is from the nearest ``k + 0.5``."""
    level = np.asarray(level, dtype=np.float64)
    return np.abs(level - np.floor(level) - 0.5)


def float16_round_trip(x):
    """AIMET's float data type: cast to IEEE half and back."""
    x = np.asarray(x)
    with np.errstate(over="ignore"):  # beyond 65504 becomes inf, as in fp16
        return x.astype(np.float16).astype(x.dtype)
