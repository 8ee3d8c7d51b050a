"""AIMET's quantization grid: the Encoding type and min/max -> grid rules.

An encoding is AIMET's tuple (bitwidth, min, max, delta, offset). ``delta``
is the step (AIMET writes it as ``scale``) and ``offset`` is the *negative*
zero point, an integer, so that the integer grid is ``[0, 2**bitwidth - 1]``
and a value ``x`` maps to ``q = round(x / delta - offset)``, back to
``delta * (q + offset)``.

The rules from a calibrated range to a grid (AIMET's
``getComputedEncodings``) are implemented once, in TensorFlow ops, by
:func:`grid_from_range`; :func:`compute_encoding` runs it eagerly on numpy
input and the simulation runs it in-graph on learnable min/max variables, so
there is no second copy of the grid math.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

__all__ = [
    "MAX_BITWIDTH",
    "MIN_BITWIDTH",
    "MIN_RANGE",
    "Encoding",
    "compute_encoding",
    "encoding_from_scale_offset",
    "float_encoding",
    "grid_from_range",
    "num_steps",
]

MIN_BITWIDTH = 2
MAX_BITWIDTH = 32
# AIMET's MIN_RANGE: every grid spans at least this much.
MIN_RANGE = 0.01
FLOAT_BITWIDTHS = (8, 16, 32)


def _check_bitwidth(bitwidth, name="bitwidth"):
    if isinstance(bitwidth, (bool, np.bool_)) or not isinstance(
        bitwidth, (int, np.integer)
    ):
        raise ValueError(
            f"{name} must be an int from {MIN_BITWIDTH} to {MAX_BITWIDTH}; "
            f"got {bitwidth!r} of type {type(bitwidth).__name__}."
        )
    if not MIN_BITWIDTH <= bitwidth <= MAX_BITWIDTH:
        raise ValueError(
            f"{name}={bitwidth} is not supported: integer grids take "
            f"{MIN_BITWIDTH} to {MAX_BITWIDTH} bits (use float_encoding(16) "
            "for fp16)."
        )
    return int(bitwidth)


def num_steps(
    bitwidth: int, is_symmetric: bool = False, strict_symmetric: bool = False
) -> int:
    """The number of grid steps: ``2**bitwidth - 1``, one fewer if strict.

    Args:
        bitwidth: bits of the integer grid, 2 to 32.
        is_symmetric: whether the grid is symmetric. Defaults to False.
        strict_symmetric: drop one level so a symmetric grid is exactly
            symmetric (-127..127 at 8 bits). Only used when ``is_symmetric``.
            Defaults to False.

    Returns:
        The step count as a Python int.

    Example:

    >>> num_steps(8), num_steps(8, is_symmetric=True, strict_symmetric=True)
    (255, 254)
    """
    bitwidth = _check_bitwidth(bitwidth)
    return 2**bitwidth - 1 - int(bool(is_symmetric and strict_symmetric))


def signed_level(x, delta, offset, bitwidth, is_symmetric):
    """``x`` in steps of the signed integer a target stores it as.

    Unrounded: ``x / delta`` on a symmetric grid, shifted by the zero point
    of the signed ``bitwidth`` integer on an asymmetric one (AIMET's level
    ``x / delta - offset`` runs from 0; the stored integer from
    ``-2**(bitwidth - 1)``). Which side of the stored zero a value lies on
    decides how TFLite rounds a tie.

    Example:

    >>> float(signed_level(0.5, 0.25, -128.0, 8, False))  # level 130
    2.0
    """
    level = x / delta
    return level if is_symmetric else level - offset - 2.0 ** (bitwidth - 1)


def round_half_away_from_zero(x):
    """Rounds to the nearest integer, halves away from zero (``std::round``).

    ``tf.round`` rounds halves to even; AIMET's kernels use ``std::round``.
    Ties are detected exactly (``x - round(x)`` is exact in floating point)
    and moved away from zero.

    Args:
        x: a float tensor.

    Returns:
        A tensor like ``x`` holding whole numbers.

    Example:

    >>> round_half_away_from_zero(tf.constant([0.5, 1.5, 2.5, -2.5])).numpy()
    array([ 1.,  2.,  3., -3.], dtype=float32)
    """
    nearest_even = tf.round(x)
    is_tie = tf.equal(tf.abs(x - nearest_even), 0.5)
    return tf.where(is_tie, x + 0.5 * tf.sign(x), nearest_even)


def grid_from_range(
    encoding_min: tf.Tensor,
    encoding_max: tf.Tensor,
    bitwidth: int,
    is_symmetric: bool = False,
    strict_symmetric: bool = False,
    unsigned_symmetric: bool = False,
    bounds: bool = True,
) -> tuple[tf.Tensor, ...]:
    """AIMET's rules from a calibrated range to a grid, as TensorFlow ops.

    Element-wise over per-channel tensors. The steps (AIMET's
    ``getComputedEncodings``):

    1. The range is made to contain zero, ``min = min(0, min)`` and
       ``max = max(0, max)``, and to be at least 0.01 wide,
       ``max = max(max, min + 0.01)``.
    2. Signed symmetric (``is_symmetric``, unless ``unsigned_symmetric`` and
       ``min >= 0``): with ``N`` steps and ``M = max(|min|, |max|)``,
       ``delta = M / floor(N / 2)`` and ``offset = -ceil(N / 2)`` (-128 at 8
       bits, -127 when strict).
    3. Asymmetric, and unsigned symmetric when ``min >= 0``:
       ``delta = (max - min) / N``, and the zero point is nudged so 0.0 is a
       grid point: ``offset = -clip(round(-min / delta), 0, N)``,
       ``min = offset * delta``, ``max = min + (max_in - min_in)``.

    The zero point is a rounded, piecewise constant function of the range;
    its gradient is stopped, so gradients reach ``min``/``max`` through
    ``delta`` only (what range learning needs). The arithmetic is float64,
    like AIMET's C++, whatever the input dtype; the results are cast back,
    so eager and XLA-compiled calls agree bit for bit.

    Args:
        encoding_min: float tensor, the observed or learned minimum.
        encoding_max: float tensor of the same shape, the maximum.
        bitwidth: Python int, 2 to 32.
        is_symmetric: symmetric grid. Defaults to False.
        strict_symmetric: drop one level of a symmetric grid. Defaults to
            False.
        unsigned_symmetric: a symmetric grid over non-negative data uses
            ``[0, max]`` with all ``2**bitwidth`` levels. Defaults to False.
        bounds: also return ``grid_min`` and ``grid_max``. Defaults to True.

    Returns:
        A tuple ``(delta, offset, grid_min, grid_max)`` of tensors shaped
        like the inputs, or ``(delta, offset)`` without ``bounds``;
        ``offset`` holds whole numbers in the input dtype.

    Example:

    >>> delta, offset, lo, hi = grid_from_range(
    ...     tf.constant(-0.5, tf.float64), tf.constant(1.3, tf.float64), 8)
    >>> int(offset.numpy()), round(float(lo.numpy()), 6)
    (-71, -0.501176)
    """
    encoding_min = tf.convert_to_tensor(encoding_min)
    encoding_max = tf.convert_to_tensor(encoding_max, encoding_min.dtype)
    grid = _grid_float64(
        tf.cast(encoding_min, tf.float64),
        tf.cast(encoding_max, tf.float64),
        num_steps(bitwidth, is_symmetric, strict_symmetric),
        is_symmetric,
        unsigned_symmetric,
    )
    if not bounds:
        grid = grid[:2]
    return tuple(tf.cast(t, encoding_min.dtype) for t in grid)


def _grid_float64(encoding_min, encoding_max, steps, is_symmetric, unsigned):
    """:func:`grid_from_range` on float64 tensors with ``steps`` steps."""
    dtype = tf.float64
    # 1. The range contains zero and is at least MIN_RANGE wide.
    lo = tf.minimum(encoding_min, tf.zeros_like(encoding_min))
    hi = tf.maximum(encoding_max, tf.zeros_like(encoding_max))
    hi = tf.maximum(hi, lo + tf.constant(MIN_RANGE, dtype))

    if not is_symmetric:
        return _asymmetric_grid(lo, hi, steps)

    # 2. Signed symmetric grid.
    positive_levels = steps // 2
    sym_delta = tf.maximum(tf.abs(lo), tf.abs(hi)) / positive_levels
    sym_offset = tf.fill(
        tf.shape(lo), tf.constant(-(steps - positive_levels), dtype)
    )
    sym_min = sym_offset * sym_delta
    sym_max = positive_levels * sym_delta
    if not unsigned:
        return sym_delta, sym_offset, sym_min, sym_max
    nonnegative = tf.greater_equal(lo, 0.0)
    return tuple(
        tf.where(nonnegative, a, s)
        for a, s in zip(
            _asymmetric_grid(lo, hi, steps),
            (sym_delta, sym_offset, sym_min, sym_max),
        )
    )


def _asymmetric_grid(lo, hi, steps):
    """3. Asymmetric (and unsigned symmetric) grid with a nudged zero point."""
    asym_delta = (hi - lo) / steps
    zero_point = tf.clip_by_value(
        round_half_away_from_zero(tf.stop_gradient(-lo / asym_delta)),
        0.0,
        float(steps),
    )
    asym_offset = -zero_point
    asym_min = asym_offset * asym_delta
    asym_max = asym_min + (hi - lo)
    return asym_delta, asym_offset, asym_min, asym_max


@dataclasses.dataclass(frozen=True, eq=False)
class Encoding:
    """A quantization grid in AIMET's terms, per tensor or per channel.

    Integer encodings hold numpy arrays (0-d per tensor, 1-d per channel) for
    ``min``, ``max``, ``delta`` and ``offset``; float encodings (AIMET's
    ``dtype: "float"``, fp16) hold only ``bitwidth``. Build integer ones with
    :func:`compute_encoding` and float ones with :func:`float_encoding`.

    Attributes:
        bitwidth: bits of the grid.
        min: grid minimum, ``offset * delta``.
        max: grid maximum.
        delta: the step, AIMET's ``scale``.
        offset: the negative zero point, whole numbers.
        is_symmetric: whether the grid was computed as symmetric.
        dtype: ``"int"`` or ``"float"``.
        strict_symmetric: the symmetric grid drops one level.
        unsigned_symmetric: symmetric grids over non-negative ranges are
            unsigned.

    Example:

    >>> enc = compute_encoding(-1.0, 1.0, 8, is_symmetric=True)
    >>> int(enc.offset), float(enc.delta) == 1.0 / 127
    (-128, True)
    """

    bitwidth: int
    min: np.ndarray = None
    max: np.ndarray = None
    delta: np.ndarray = None
    offset: np.ndarray = None
    is_symmetric: bool = False
    dtype: str = "int"
    strict_symmetric: bool = False
    unsigned_symmetric: bool = False
    exponent_bits: int | None = None

    @property
    def float_format(self):
        """The :class:`~aimet_keras.quant.float_formats.FloatFormat` of a
        float encoding below 32 bits, else None."""
        if not self.is_float or self.bitwidth == 32:
            return None
        from aimet_keras.quant import float_formats

        return float_formats.float_format(self.bitwidth, self.exponent_bits)

    @property
    def scale(self) -> float | np.ndarray | None:
        """AIMET's file name for ``delta``."""
        return self.delta

    @property
    def is_float(self) -> bool:
        return self.dtype == "float"

    @property
    def is_per_channel(self) -> bool:
        return self.delta is not None and np.ndim(self.delta) == 1

    @property
    def num_channels(self) -> int:
        return int(np.size(self.delta)) if self.is_per_channel else 1

    @property
    def num_steps(self) -> int:
        return num_steps(
            self.bitwidth, self.is_symmetric, self.strict_symmetric
        )

    def __repr__(self):
        if self.is_float:
            fmt = self.float_format
            if fmt is None or fmt.is_cast:
                return f"Encoding(dtype='float', bitwidth={self.bitwidth})"
            scale = (
                "unset"
                if self.delta is None
                else f"{float(np.max(self.delta)):.6g}"
            )
            return f"Encoding(dtype='float', {fmt.name}, scale={scale})"
        kind = "symmetric" if self.is_symmetric else "asymmetric"
        if self.is_per_channel:
            return (
                f"Encoding(bitwidth={self.bitwidth}, {kind}, per-channel x"
                f"{self.num_channels}, min=[{np.min(self.min):.6g}..], "
                f"max=[..{np.max(self.max):.6g}])"
            )
        return (
            f"Encoding(bitwidth={self.bitwidth}, {kind}, "
            f"min={float(self.min):.6g}, max={float(self.max):.6g}, "
            f"delta={float(self.delta):.6g}, "
            f"offset={int(self.offset)})"
        )


def float_encoding(
    bitwidth: int = 16,
    exponent_bits: int | None = None,
    scale: float | np.ndarray | None = None,
) -> Encoding:
    """A float data type: AIMET's ``dtype: "float"`` tensors.

    16 bits is a cast to fp16 (or bf16 with ``exponent_bits=8``), 32 bits
    leaves the tensor as it is, and 8 bits is an fp8 format (E4M3, or E5M2
    with ``exponent_bits=5``) scaled by ``scale``: the tensor's largest
    magnitude over the format's largest value (see
    :mod:`aimet_keras.quant.float_formats`).

    Args:
        bitwidth: 8, 16 or 32. Defaults to 16.
        exponent_bits: the format's exponent bits; defaults to E4M3 at 8
            bits and fp16 at 16.
        scale: the scale of an 8-bit format, per tensor or per channel.
            Defaults to None (1.0).

    Returns:
        An :class:`Encoding` with ``dtype="float"``.

    Raises:
        ValueError: for a bitwidth and exponent width that name no format.

    Example:

    >>> float_encoding(16)
    Encoding(dtype='float', bitwidth=16)
    >>> float_encoding(8, scale=0.01)
    Encoding(dtype='float', fp8_e4m3, scale=0.01)
    """
    if bitwidth not in FLOAT_BITWIDTHS:
        raise ValueError(
            f"bitwidth={bitwidth!r} is not a float data type AIMET supports; "
            f"use one of {FLOAT_BITWIDTHS}."
        )
    if bitwidth == 32:
        return Encoding(bitwidth=32, dtype="float")
    from aimet_keras.quant import float_formats

    fmt = float_formats.float_format(bitwidth, exponent_bits)
    if fmt.is_cast:
        return Encoding(
            bitwidth=bitwidth, dtype="float", exponent_bits=fmt.exponent_bits
        )
    delta = None
    if scale is not None:
        delta = np.asarray(scale, np.float64)
        if (
            delta.ndim > 1
            or not np.all(np.isfinite(delta))
            or np.any(delta <= 0)
        ):
            raise ValueError(
                f"A {fmt.name} scale must be positive and finite, one value "
                f"or one per channel; got {scale!r}."
            )
    limit = None if delta is None else delta * fmt.largest
    return Encoding(
        bitwidth=bitwidth,
        dtype="float",
        exponent_bits=fmt.exponent_bits,
        delta=delta,
        min=None if limit is None else -limit,
        max=limit,
    )


def _as_range_array(value, name):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1:
        raise ValueError(
            f"{name} must be a scalar or a 1-d per-channel array; got shape "
            f"{array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} must be finite; got {value!r}. NaN or inf in a range "
            "means the calibrated tensor held NaN or inf."
        )
    return array


def _check_same_shape(first, second, first_name, second_name):
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} has shape {first.shape} but {second_name} has "
            f"shape {second.shape}; give one value per channel to both."
        )


def compute_encoding(
    encoding_min: float | np.ndarray,
    encoding_max: float | np.ndarray,
    bitwidth: int,
    is_symmetric: bool = False,
    strict_symmetric: bool = False,
    unsigned_symmetric: bool = False,
) -> Encoding:
    """Computes AIMET's grid for an observed range.

    See :func:`grid_from_range` for the rules. Per-channel when given 1-d
    arrays; scalars give a per-tensor encoding.

    Args:
        encoding_min: the observed minimum, a scalar or 1-d array.
        encoding_max: the observed maximum, same shape.
        bitwidth: bits of the integer grid, 2 to 32.
        is_symmetric: signed symmetric grid (offset ``-2**(bitwidth-1)``).
            Defaults to False.
        strict_symmetric: drop one level so the grid is exactly symmetric.
            Defaults to False.
        unsigned_symmetric: a symmetric grid over a range with
            ``min >= 0`` becomes ``[0, max]`` with all levels. Defaults to
            False.

    Returns:
        An :class:`Encoding`.

    Raises:
        ValueError: for a bitwidth outside 2..32, NaN or inf bounds, a
            ``min`` above ``max``, or shapes that do not match.

    Bounds smaller in magnitude than float64's smallest normal number
    (about 2.2e-308) count as 0, as TensorFlow's CPU kernels flush them.

    Example:

    >>> enc = compute_encoding(-0.5, 1.3, bitwidth=8)
    >>> int(enc.offset), round(float(enc.min), 6), round(float(enc.max), 6)
    (-71, -0.501176, 1.298824)
    """
    bitwidth = _check_bitwidth(bitwidth)
    lo = _as_range_array(encoding_min, "encoding_min")
    hi = _as_range_array(encoding_max, "encoding_max")
    _check_same_shape(lo, hi, "encoding_min", "encoding_max")
    if np.any(lo > hi):
        bad = np.flatnonzero(np.atleast_1d(lo > hi))[:3]
        raise ValueError(
            f"encoding_min must not exceed encoding_max; at channel(s) "
            f"{bad.tolist()}: min={np.atleast_1d(lo)[bad].tolist()}, "
            f"max={np.atleast_1d(hi)[bad].tolist()}."
        )
    delta, offset, grid_min, grid_max = (
        t.numpy()
        for t in grid_from_range(
            tf.constant(lo),
            tf.constant(hi),
            bitwidth,
            is_symmetric,
            strict_symmetric,
            unsigned_symmetric,
        )
    )
    return Encoding(
        bitwidth=bitwidth,
        min=grid_min,
        max=grid_max,
        delta=delta,
        offset=offset,
        is_symmetric=bool(is_symmetric),
        strict_symmetric=bool(strict_symmetric),
        unsigned_symmetric=bool(unsigned_symmetric),
    )


def encoding_from_scale_offset(
    scale: float | np.ndarray,
    offset: float | np.ndarray,
    bitwidth: int,
    is_symmetric: bool = False,
) -> Encoding:
    """Rebuilds an encoding from a file's scale (delta) and offset.

    The grid kind follows from the offset, as AIMET writes it: a symmetric
    grid with offset 0 is unsigned, one with offset ``-(2**(b-1) - 1)`` is
    strict; ``min = offset * scale`` and ``max = (N + offset) * scale``.

    Args:
        scale: the step, a scalar or 1-d per-channel array, > 0.
        offset: the negative zero point, whole numbers, same shape.
        bitwidth: bits of the grid, 2 to 32.
        is_symmetric: whether the file marks the grid symmetric. Defaults
            to False.

    Returns:
        An :class:`Encoding`.

    Raises:
        ValueError: for a non-positive or non-finite scale, an offset that
            is not a whole number within ``[-N, 0]``, or mismatched shapes.

    Example:

    >>> enc = encoding_from_scale_offset(0.8 / 127, -128, 8, True)
    >>> round(float(enc.max), 6), round(float(enc.min), 6)
    (0.8, -0.806299)
    """
    bitwidth = _check_bitwidth(bitwidth)
    delta = _as_range_array(scale, "scale")
    zero = _as_range_array(offset, "offset")
    _check_same_shape(delta, zero, "scale", "offset")
    if np.any(delta <= 0):
        raise ValueError(f"scale must be > 0; got {scale!r}.")
    unsigned = bool(is_symmetric and np.all(zero == 0))
    strict = bool(
        is_symmetric
        and not unsigned
        and np.all(zero == -(2 ** (bitwidth - 1) - 1))
    )
    steps = num_steps(bitwidth, is_symmetric, strict)
    if (
        np.any(zero != np.round(zero))
        or np.any(zero < -steps)
        or np.any(zero > 0)
    ):
        raise ValueError(
            f"offset must hold whole numbers in [-{steps}, 0] for a "
            f"{bitwidth}-bit grid; got {offset!r}."
        )
    return Encoding(
        bitwidth=bitwidth,
        min=zero * delta,
        max=(steps + zero) * delta,
        delta=delta,
        offset=zero,
        is_symmetric=bool(is_symmetric),
        strict_symmetric=strict,
        unsigned_symmetric=unsigned,
    )
