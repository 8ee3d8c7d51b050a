"""Quantize-dequantize on AIMET's grid, per tensor or per channel, as TF ops.

Forward (AIMET's ``trim_functions.cpp``), with ``N`` grid steps::

    q = clip(round(x / delta - offset), 0, N)
    y = delta * (q + offset)

``round`` rounds halves away from zero, like AIMET's ``std::round`` (not
``tf.round``, which rounds halves to even). It rounds the level
``x / delta - offset``, which is non-negative on the grid, so ties go up a
level (-2.5 delta on an 8-bit symmetric grid is level 125.5 -> 126, i.e.
-2 delta).

Backward: the straight-through estimator passes the gradient for
``grid_min <= x <= grid_max`` and zeroes it outside. With a learned range,
``delta`` gets the LSQ gradient (Esser et al., 2020), as in AIMET's range
learning: ``round(x / delta) - x / delta`` where the value is inside the
grid and the clipped integer level ``q + offset`` where it is clipped.
AIMET's own Keras kernel drops the zero point from the clipped term, so its
``d/dmin`` is wrong for clipped values; here the derivative is exact there
(it matches finite differences) and flows to min/max through ``delta``.
"""

from __future__ import annotations

import typing

import numpy as np
import tensorflow as tf

from aimet_keras.quant import encoding as encoding_lib

if typing.TYPE_CHECKING:
    from aimet_keras.quant.encoding import Encoding

__all__ = [
    "channel_axes",
    "grid_integers",
    "quantize_dequantize",
    "quantize_dequantize_fixed_range",
    "quantize_dequantize_grid",
    "quantize_dequantize_range",
]

_HALF_TYPES = (tf.float16, tf.bfloat16)


def _check_float_input(x, name="x"):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(
            f"{name} must be a float tensor (float16, bfloat16, float32 or "
            f"float64) to be quantized; got dtype {x.dtype.name}. Integer "
            "tensors are already on a grid: leave them unquantized."
        )
    if x.shape.rank is None:
        raise ValueError(f"{name} must have a known rank to be quantized.")
    return x


def channel_axes(axis: int | tuple[int, ...], rank: int) -> tuple[int, ...]:
    """Normalizes a per-channel ``axis`` (an int or a tuple) for a rank.

    A tuple names several axes whose flattened product is the channel count,
    for example ``(-2, -1)`` for a DepthwiseConv2D kernel ``(H, W, I, M)``.

    Args:
        axis: an int or a tuple of ints, negative counting from the end.
        rank: the tensor rank.

    Returns:
        A sorted tuple of non-negative axes.

    Raises:
        ValueError: when an axis is outside the rank or repeated.

    Example:

    >>> channel_axes(-1, 4), channel_axes((-2, -1), 4)
    ((3,), (2, 3))
    """
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    normalized = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -rank <= a < rank:
            raise ValueError(
                f"axis={axis!r} is not valid for a tensor of rank {rank}; "
                f"use an int (or a tuple of ints) in [-{rank}, {rank - 1}]."
            )
        normalized.append(int(a) % rank)
    if len(set(normalized)) != len(normalized) or not normalized:
        raise ValueError(f"axis={axis!r} repeats an axis or is empty.")
    return tuple(sorted(normalized))


def _broadcast_shape(x, axis, num_channels):
    """Shape that puts ``num_channels`` values along ``axis`` of ``x``."""
    rank = x.shape.rank
    if axis is None:
        if num_channels != 1:
            raise ValueError(
                f"A per-channel encoding with {num_channels} channels needs "
                "an axis; pass axis=-1 for Conv and Dense kernels, (-2, -1) "
                "for DepthwiseConv2D and -2 for Conv2DTranspose."
            )
        return [1] * rank
    axes = channel_axes(axis, rank)
    dims = [x.shape[a] for a in axes]
    if any(d is None for d in dims):
        raise ValueError(
            f"axis={axis!r} of a tensor of shape {x.shape} has an unknown "
            "size; per-channel quantization needs a static channel size."
        )
    if int(np.prod(dims)) != num_channels:
        raise ValueError(
            f"axis={axis!r} of a tensor of shape {tuple(x.shape)} holds "
            f"{int(np.prod(dims))} channels but the encoding has "
            f"{num_channels}; pick the axis whose size matches."
        )
    shape = [1] * rank
    for a in axes:
        shape[a] = x.shape[a]
    return shape


def _reduce_to(grad, shape):
    """Sums a broadcast gradient back to a keepdims ``shape``."""
    axes = [i for i, d in enumerate(shape) if d == 1]
    return tf.reduce_sum(grad, axis=axes, keepdims=True) if axes else grad


def _level(scaled, offset, steps):
    """``clip(round_half_away_from_zero(scaled - offset), 0, steps)``."""
    # AIMET rounds the level x / delta - offset (>= 0 on the grid), so a tie
    # goes up a level: round(x / delta) - offset differs for negative ties.
    rounded = encoding_lib.round_half_away_from_zero(scaled - offset)
    return rounded, tf.clip_by_value(rounded, 0.0, steps)


def _grid_forward(x, delta, offset, steps):
    """The forward kernel; ``delta``/``offset`` broadcast against ``x``."""
    _, level = _level(x / delta, offset, steps)
    return (level + offset) * delta


@tf.custom_gradient
def _quantize_dequantize_core(x, delta, offset, steps):
    """The kernel with its gradients."""
    scaled = x / delta
    rounded, level = _level(scaled, offset, steps)
    y = (level + offset) * delta

    def grad(dy):
        grid_min = offset * delta
        grid_max = (steps + offset) * delta
        inside = tf.logical_and(x >= grid_min, x <= grid_max)
        dx = tf.where(inside, dy, tf.zeros_like(dy))
        unclipped = tf.logical_and(rounded >= 0.0, rounded <= steps)
        ddelta_elementwise = tf.where(
            unclipped, rounded + offset - scaled, level + offset
        )
        ddelta = _reduce_to(dy * ddelta_elementwise, delta.shape)
        return dx, ddelta, None, None

    return y, grad


def _compute_dtype(x, steps):
    # Grids up to 16 bits need more integers than fp16 holds exactly, and
    # wider ones (32-bit biases) more than float32 holds: its levels near
    # the offset (-2**31) are 256 apart.
    if steps > 2**24:
        return tf.float64
    return tf.float32 if x.dtype in _HALF_TYPES else x.dtype


def _apply_grid(x, delta, offset, steps, axis):
    num_channels = int(np.prod(delta.shape)) if delta.shape.rank else 1
    shape = _broadcast_shape(x, axis, num_channels)
    dtype = _compute_dtype(x, steps)
    y = _quantize_dequantize_core(
        tf.cast(x, dtype),
        tf.reshape(tf.cast(delta, dtype), shape),
        tf.reshape(tf.cast(offset, dtype), shape),
        tf.constant(float(steps), dtype),
    )
    return tf.cast(y, x.dtype)


def _float64_to_float32_round_to_odd(x):
    """float64 -> float32 rounding inexact results to an odd mantissa.

    TensorFlow casts float64 to float16 through float32, rounding twice; a
    value just below an fp16 midpoint can round up to it and then up again.
    Rounding the first step to odd keeps the information that makes the
    second rounding correct, since float32 carries 13 more mantissa bits
    than float16.
    """
    y = tf.cast(x, tf.float32)
    back = tf.cast(y, tf.float64)
    bits = tf.bitcast(y, tf.int32)
    # Truncate: one step toward zero where nearest rounding went away from
    # it (float bits are sign and magnitude), then force the last bit on.
    bits = tf.where(tf.abs(back) > tf.abs(x), bits - 1, bits)
    odd = tf.bitwise.bitwise_or(bits, tf.ones_like(bits))
    inexact = tf.not_equal(back, x)
    return tf.bitcast(tf.where(inexact, odd, bits), tf.float32)


@tf.custom_gradient
def _cast_to_fp16(x):
    narrow = x
    if x.dtype == tf.float64:
        narrow = _float64_to_float32_round_to_odd(x)
    y = tf.cast(tf.cast(narrow, tf.float16), x.dtype)
    return y, lambda dy: dy


def quantize_dequantize(
    x: tf.Tensor, encoding: Encoding, axis: int | tuple[int, ...] | None = None
) -> tf.Tensor:
    """Quantizes ``x`` onto an encoding's grid and back (fake quantization).

    ``y = delta * (clip(round(x / delta - offset), 0, N) + offset)`` with
    ``N`` the encoding's step count, element-wise, per tensor or per channel.
    Rounding of the level is half away from zero, as AIMET's
    ``std::round``. The gradient is straight-through: it passes where
    ``min <= x <= max`` and is zero outside. A float encoding (fp16) casts
    to float16 and back, with an identity gradient.

    Args:
        x: a float tensor.
        encoding: an :class:`~aimet_keras.quant.Encoding`.
        axis: the channel axis of a per-channel encoding: an int, or a tuple
            of axes flattened in order (``(-2, -1)`` for a DepthwiseConv2D
            kernel ``(H, W, I, M)``). Conv1D/2D/3D and Dense kernels use -1,
            Conv2DTranspose kernels ``(H, W, O, I)`` use -2. Must be None for
            a per-tensor encoding. Defaults to None.

    Returns:
        A tensor like ``x``.

    Raises:
        ValueError: for a non-float ``x``, or an ``axis`` whose size does
            not match the encoding's channel count.

    Example:

    >>> enc = compute_encoding(-1.0, 1.0, bitwidth=4, is_symmetric=True)
    >>> quantize_dequantize(tf.constant([0.3, -2.0]), enc).numpy()
    array([ 0.2857143, -1.1428572], dtype=float32)
    """
    x = _check_float_input(x)
    if not isinstance(encoding, encoding_lib.Encoding):
        raise ValueError(
            f"encoding must be an aimet_keras.quant.Encoding; got "
            f"{type(encoding).__name__}. Build one with compute_encoding()."
        )
    if encoding.is_float:
        fmt = encoding.float_format
        if fmt is None:
            return x
        from aimet_keras.quant import float_formats

        scale = 1.0 if encoding.delta is None else tf.constant(encoding.delta)
        if not fmt.is_cast and np.ndim(encoding.delta) == 1:
            scale = tf.reshape(
                scale, _broadcast_shape(x, axis, np.size(encoding.delta))
            )
        return float_formats.float_quantize_dequantize(x, fmt, scale)
    if axis is not None and not encoding.is_per_channel:
        raise ValueError(
            f"axis={axis!r} was given but the encoding is per-tensor; pass "
            "axis=None or a per-channel encoding."
        )
    return _apply_grid(
        x,
        tf.constant(encoding.delta),
        tf.constant(encoding.offset),
        encoding.num_steps,
        axis,
    )


def quantize_dequantize_grid(
    x: tf.Tensor,
    delta: tf.Tensor,
    offset: tf.Tensor,
    steps: int,
    axis: int | tuple[int, ...] | None = None,
) -> tf.Tensor:
    """Quantize-dequantize on a grid already derived from its range.

    What :func:`quantize_dequantize_range` computes after
    :func:`~aimet_keras.quant.grid_from_range`, for callers that derive the
    grid once (a calibrated quantizer keeps ``delta`` and ``offset`` beside
    its range) instead of on every call. The gradient is the
    straight-through one; ``delta`` gets the LSQ gradient.

    Args:
        x: a float tensor.
        delta: the step, scalar or per channel (float tensor or variable).
        offset: the offset (whole numbers), shaped like ``delta``.
        steps: the grid's step count, a Python int (see
            :func:`~aimet_keras.quant.num_steps`).
        axis: per-channel axis as in :func:`quantize_dequantize`. Defaults to
            None.

    Returns:
        A tensor like ``x``.

    Example:

    >>> x = tf.constant([0.3, -2.0])
    >>> delta, offset, _, _ = grid_from_range(-1.0, 1.0, 8)
    >>> y = quantize_dequantize_grid(x, delta, offset, num_steps(8))
    >>> bool(tf.reduce_all(y == quantize_dequantize_range(x, -1.0, 1.0, 8)))
    True
    """
    x = _check_float_input(x)
    delta = tf.convert_to_tensor(delta)
    offset = tf.convert_to_tensor(offset, delta.dtype)
    return _apply_grid(x, delta, offset, steps, axis)


def _broadcast_grid(
    x,
    encoding_min,
    encoding_max,
    bitwidth,
    is_symmetric,
    strict,
    unsigned,
    axis,
):
    """``(delta, offset, steps)`` of a range's grid, shaped against ``x``.

    In ``x``'s compute dtype; ``steps`` a Python float.
    """
    delta, offset = encoding_lib.grid_from_range(
        encoding_min,
        encoding_max,
        bitwidth,
        is_symmetric,
        strict,
        unsigned,
        bounds=False,
    )
    num_channels = int(np.prod(delta.shape)) if delta.shape.rank else 1
    shape = _broadcast_shape(x, axis, num_channels)
    steps = encoding_lib.num_steps(bitwidth, is_symmetric, strict)
    dtype = _compute_dtype(x, steps)
    return (
        tf.reshape(tf.cast(delta, dtype), shape),
        tf.reshape(tf.cast(offset, dtype), shape),
        float(steps),
    )


def _fixed_range_forward(
    x,
    encoding_min,
    encoding_max,
    bitwidth,
    is_symmetric,
    strict,
    unsigned,
    axis,
):
    delta, offset, steps = _broadcast_grid(
        x,
        encoding_min,
        encoding_max,
        bitwidth,
        is_symmetric,
        strict,
        unsigned,
        axis,
    )
    dtype = delta.dtype
    y = _grid_forward(
        tf.cast(x, dtype), delta, offset, tf.constant(steps, dtype)
    )
    return tf.cast(y, x.dtype)


_fixed_range_forward_fused = tf.function(
    _fixed_range_forward, jit_compile=True, autograph=False
)
# Traced once per shape and settings, then one call in the caller's graph,
# kept as a call (not inlined) so that graph optimisation, which runs on
# every trace of the caller, sees one node instead of dozens.
_fixed_range_forward_traced = tf.function(
    _fixed_range_forward,
    autograph=False,
    experimental_attributes={"_noinline": True},
)


def _fixed_range_kernel(x):
    if tf.executing_eagerly():
        return _fixed_range_forward
    # Inside a graph, batch-dynamic tensors (activations) are quantized as
    # one fused XLA kernel, compiled once per shape: a dozen element-wise
    # passes become one. Tensors of a static shape (weights, whose values
    # a forward pass reads once) use plain ops: compiling a kernel for each
    # weight's shape took longer than every batch of a calibration run.
    if not x.shape.is_fully_defined() and fusion_pays_off(x.shape):
        return _fixed_range_forward_fused
    return _fixed_range_forward_traced


# Per-sample elements from which a batch-dynamic tensor is quantized by a
# fused XLA kernel. Each kernel compiles per shape, batch size included
# (about 0.2 s on 2 cores): on small tensors that cost more than the memory
# passes it saves, and every new batch size (a last partial batch) paid it
# again for every layer.
FUSION_MIN_ELEMENTS = 2**16


def fusion_pays_off(shape):
    """Whether a batch-dynamic tensor of ``shape`` is worth an XLA kernel.

    True when one sample holds at least :data:`FUSION_MIN_ELEMENTS` values
    (or its size is unknown), as in the early layers of a 224x224 network.

    Example:

    >>> fusion_pays_off(tf.TensorShape([None, 112, 112, 64]))
    True
    >>> fusion_pays_off(tf.TensorShape([None, 16, 16, 96]))
    False
    """
    per_sample = tf.TensorShape(shape)[1:]
    if not per_sample.is_fully_defined():
        return True
    return per_sample.num_elements() >= FUSION_MIN_ELEMENTS


def quantize_dequantize_fixed_range(
    x: tf.Tensor,
    encoding_min: tf.Tensor,
    encoding_max: tf.Tensor,
    bitwidth: int,
    is_symmetric: bool = False,
    strict_symmetric: bool = False,
    unsigned_symmetric: bool = False,
    axis: int | tuple[int, ...] | None = None,
) -> tf.Tensor:
    """:func:`quantize_dequantize_range` for a range that is not learned.

    Computes the same values; the range gets no gradient (``x`` gets the
    straight-through one), which lets the whole computation, grid
    derivation included, run as one XLA-fused kernel inside a graph for
    large or batch-dynamic tensors (compiled once per shape), and as plain
    TF ops otherwise. This is what a calibrated quantizer runs.

    Args:
        As :func:`quantize_dequantize_range`.

    Returns:
        A tensor like ``x``.

    Example:

    >>> x = tf.constant([0.3, -2.0])
    >>> y = quantize_dequantize_fixed_range(x, -1.0, 1.0, 8)
    >>> bool(tf.reduce_all(y == quantize_dequantize_range(x, -1.0, 1.0, 8)))
    True
    """
    x = _check_float_input(x)
    encoding_min = tf.convert_to_tensor(encoding_min)
    encoding_max = tf.convert_to_tensor(encoding_max, encoding_min.dtype)
    encoding_lib._check_bitwidth(bitwidth)
    args = (
        bitwidth,
        bool(is_symmetric),
        bool(strict_symmetric),
        bool(unsigned_symmetric),
        axis,
    )
    forward = _fixed_range_kernel(x)
    backward = (
        _straight_through_grad_fused
        if forward is _fixed_range_forward_fused
        else _straight_through_grad
    )

    @tf.custom_gradient
    def straight_through(x):
        def grad(dy):
            return backward(x, dy, encoding_min, encoding_max, *args)

        return forward(x, encoding_min, encoding_max, *args), grad

    return straight_through(x)


def _straight_through_grad(
    x,
    dy,
    encoding_min,
    encoding_max,
    bitwidth,
    is_symmetric,
    strict,
    unsigned,
    axis,
):
    """``dy`` where ``x`` lies inside the grid, else 0.

    The bounds exactly as quantize_dequantize_range's gradient computes
    them.
    """
    delta, offset, steps = _broadcast_grid(
        x,
        encoding_min,
        encoding_max,
        bitwidth,
        is_symmetric,
        strict,
        unsigned,
        axis,
    )
    wide = tf.cast(x, delta.dtype)
    inside = tf.logical_and(
        wide >= offset * delta, wide <= (steps + offset) * delta
    )
    return tf.where(inside, dy, tf.zeros_like(dy))


# Activations in training: the backward pass as one XLA kernel too.
_straight_through_grad_fused = tf.function(
    _straight_through_grad, jit_compile=True, autograph=False
)


def quantize_dequantize_range(
    x: tf.Tensor,
    encoding_min: tf.Tensor,
    encoding_max: tf.Tensor,
    bitwidth: int,
    is_symmetric: bool = False,
    strict_symmetric: bool = False,
    unsigned_symmetric: bool = False,
    axis: int | tuple[int, ...] | None = None,
) -> tf.Tensor:
    """Quantize-dequantize with a learnable range (AIMET's range learning).

    The grid is derived in-graph from ``encoding_min``/``encoding_max`` by
    :func:`~aimet_keras.quant.grid_from_range`, so both may be trainable
    variables: ``x`` gets the straight-through gradient and the range gets
    the LSQ gradient described in this module's docstring, summed per
    channel.

    Args:
        x: a float tensor.
        encoding_min: scalar or per-channel tensor or variable.
        encoding_max: same shape as ``encoding_min``.
        bitwidth: Python int, 2 to 32.
        is_symmetric: signed symmetric grid. Defaults to False.
        strict_symmetric: drop one level of a symmetric grid. Defaults to
            False.
        unsigned_symmetric: unsigned grid over non-negative ranges. Defaults
            to False.
        axis: per-channel axis as in :func:`quantize_dequantize`. Defaults to
            None.

    Returns:
        A tensor like ``x``.

    Example:

    >>> lo, hi = tf.Variable(-1.0), tf.Variable(1.0)
    >>> with tf.GradientTape() as tape:
    ...     y = quantize_dequantize_range(tf.constant([3.0]), lo, hi, 8)
    >>> [round(float(g), 2) for g in tape.gradient(y, [lo, hi])]
    [-0.5, 0.5]
    """
    x = _check_float_input(x)
    delta, offset, _, _ = encoding_lib.grid_from_range(
        encoding_min,
        encoding_max,
        bitwidth,
        is_symmetric,
        strict_symmetric,
        unsigned_symmetric,
    )
    steps = encoding_lib.num_steps(bitwidth, is_symmetric, strict_symmetric)
    return _apply_grid(x, delta, offset, steps, axis)


def grid_integers(
    x: tf.Tensor,
    encoding_min: tf.Tensor,
    encoding_max: tf.Tensor,
    bitwidth: int,
    is_symmetric: bool = False,
    strict_symmetric: bool = False,
    unsigned_symmetric: bool = False,
    axis: int | tuple[int, ...] | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The integer each value of ``x`` quantizes to, and the grid's step.

    The integers of the grid :func:`quantize_dequantize_range` applies:
    ``quantize_dequantize_range(x, ...) == integers * delta``. For QAT tools
    that watch weights move between grid points (oscillation tracking) or
    pull them towards one (dampening).

    Args:
        x: a float tensor.
        encoding_min: scalar or per-channel range minimum.
        encoding_max: same shape as ``encoding_min``.
        bitwidth: Python int, 2 to 32.
        is_symmetric: signed symmetric grid. Defaults to False.
        strict_symmetric: drop one level of a symmetric grid. Defaults to
            False.
        unsigned_symmetric: unsigned grid over non-negative ranges. Defaults
            to False.
        axis: per-channel axis as in :func:`quantize_dequantize`. Defaults to
            None.

    Returns:
        ``(integers, delta)``: float32 integers shaped like ``x`` (clipped
        to the grid) and the step, broadcastable against ``x``.

    Example:

    >>> integers, delta = grid_integers([-1.0, 0.26, 5.0], -1.0, 1.0, 3,
    ...                                 is_symmetric=True)
    >>> integers.numpy().tolist(), round(float(delta[0]), 4)
    ([-3.0, 1.0, 3.0], 0.3333)
    """
    x = tf.cast(_check_float_input(x), tf.float32)
    delta, offset, steps = _broadcast_grid(
        x,
        tf.cast(encoding_min, tf.float32),
        tf.cast(encoding_max, tf.float32),
        bitwidth,
        is_symmetric,
        strict_symmetric,
        unsigned_symmetric,
        axis,
    )
    _, level = _level(x / delta, offset, steps)
    return level + offset, delta
