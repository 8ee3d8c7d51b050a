"""quantize_dequantize(_range) against the numpy model, gradients and XLA.

float32 outputs are compared with the float64 model with care: the TF op
computes the level ``x / delta - offset`` in float32, so an element whose
level lies near a ``k + 0.5`` tie may round either way. Such elements (within
``1e-4`` plus the float32 error bound of the level, which grows with the
level's size) only have to agree within one step; every other element must
agree within a few float32 ulps. float64 inputs are computed with the same
operations as the model and must agree exactly.
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from aimet_keras.quant import channel_axes
from aimet_keras.quant import compute_encoding
from aimet_keras.quant import float_encoding
from aimet_keras.quant import grid_from_range
from aimet_keras.quant import quantize_dequantize
from aimet_keras.quant import quantize_dequantize_range
from tests.quant import grid_reference as ref

FAST = settings(max_examples=60, deadline=None, database=None)
FEW = settings(max_examples=30, deadline=None, database=None)

# (is_symmetric, strict_symmetric, unsigned_symmetric)
SETTINGS = {
    "asym": (False, False, False),
    "sym": (True, False, False),
    "strict": (True, True, False),
    "unsigned": (True, False, True),
}

# name: (kernel shape, channel axis); channels = product of the axis sizes.
LAYOUTS = {
    "dense": ((7, 5), -1),
    "conv2d_hwio": ((3, 3, 4, 6), -1),
    "conv2d_transpose_hwoi": ((3, 3, 6, 4), -2),
    "depthwise_hwim": ((3, 3, 4, 2), (-2, -1)),
}


def _encodings(lo, hi, bitwidth, setting):
    sym, strict, unsigned = SETTINGS[setting]
    return (
        compute_encoding(lo, hi, bitwidth, sym, strict, unsigned),
        ref.compute_encoding(lo, hi, bitwidth, sym, strict, unsigned),
    )


def _channel_count(shape, axis):
    return int(np.prod([shape[a] for a in channel_axes(axis, len(shape))]))


def _sample_x(rs, shape, ref_enc, axis=None, spill=0.3):
    """float32 values over the grid and ``spill`` widths beyond it.

    About one in six is an exact zero and one in six a grid point; the
    per-channel grids broadcast along ``axis`` as in the model.
    """
    lo = ref.broadcast_param(ref_enc.min, shape, axis)
    hi = ref.broadcast_param(ref_enc.max, shape, axis)
    delta = ref.broadcast_param(ref_enc.delta, shape, axis)
    offset = ref.broadcast_param(ref_enc.offset, shape, axis)
    width = hi - lo
    u = rs.uniform(-spill, 1.0 + spill, size=shape)
    x = lo + u * width
    kind = rs.randint(0, 6, size=shape)
    x = np.where(kind == 0, 0.0, x)  # exact zeros
    levels = rs.randint(0, ref_enc.steps + 1, size=shape).astype(np.float64)
    x = np.where(kind == 1, delta * (levels + offset), x)  # grid points
    return x.astype(np.float32)


def _assert_close_to_reference(y, x, ref_enc, axis=None):
    """Exact up to float32 rounding except near ties (one step there)."""
    y = np.asarray(y, dtype=np.float64)
    x64 = np.asarray(x, dtype=np.float64)
    want = ref.quantize_dequantize(x64, ref_enc, axis)
    level = ref.grid_level(x64, ref_enc, axis)
    offset = ref.broadcast_param(ref_enc.offset, x64.shape, axis)
    delta = ref.broadcast_param(ref_enc.delta, x64.shape, axis)
    scaled = level + offset  # x / delta, in float64
    # float32 error of fl(fl(x / fl(delta)) - offset): about 3 ulps of the
    # larger of |x / delta| and |level|; 2**-21 is 4 ulps with margin.
    tie_slack = 1e-4 + 2.0**-21 * (np.abs(scaled) + np.abs(level))
    near_tie = ref.distance_to_tie(level) <= tie_slack
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    err = np.abs(y - want)
    bad = ~near_tie & (err > 4 * ulp)
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} elements differ: x={x64[bad][:5]}, "
        f"got={y[bad][:5]}, want={want[bad][:5]}, level={level[bad][:5]}"
    )
    bad_tie = near_tie & (err > delta + 4 * ulp)
    assert not bad_tie.any(), (x64[bad_tie][:5], y[bad_tie][:5])
    return near_tie


def _assert_on_grid(y, ref_enc, axis=None):
    """y / delta - offset is a whole number in [0, steps]."""
    y = np.asarray(y, dtype=np.float64)
    delta32 = np.asarray(ref_enc.delta, np.float32).astype(np.float64)
    delta = ref.broadcast_param(delta32, y.shape, axis)
    offset = ref.broadcast_param(ref_enc.offset, y.shape, axis)
    level = y / delta - offset
    nearest = np.round(level)
    slack = 1e-6 + 2.0**-21 * (np.abs(level) + np.abs(offset))
    assert np.all(np.abs(level - nearest) <= slack), level
    assert np.all(nearest >= 0) and np.all(nearest <= ref_enc.steps)


# No float64 subnormals: TF's CPU kernels flush them to zero, see
# test_encoding.test_subnormal_negative_min_is_signed_symmetric.
_RANGE = st.tuples(
    st.floats(-50.0, 5.0, allow_nan=False, allow_subnormal=False),
    st.floats(-5.0, 50.0, allow_nan=False, allow_subnormal=False),
).map(sorted)


# ------------------------------------------------------------ per tensor


@FAST
@given(
    rng=_RANGE,
    bitwidth=st.integers(2, 16),
    setting=st.sampled_from(sorted(SETTINGS)),
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(64,), (8, 9), (2, 3, 5, 4)]),
)
def test_per_tensor_matches_reference(rng, bitwidth, setting, seed, shape):
    enc, ref_enc = _encodings(rng[0], rng[1], bitwidth, setting)
    x = _sample_x(np.random.RandomState(seed), shape, ref_enc)
    y = quantize_dequantize(tf.constant(x), enc)
    assert y.dtype == tf.float32 and y.shape == x.shape
    near_tie = _assert_close_to_reference(y.numpy(), x, ref_enc)
    assert near_tie.mean() < 0.5
    _assert_on_grid(y.numpy(), ref_enc)


@FAST
@given(
    rng=_RANGE,
    bitwidth=st.sampled_from([2, 3, 8, 16, 24, 32]),
    setting=st.sampled_from(sorted(SETTINGS)),
    seed=st.integers(0, 2**31 - 1),
)
def test_float64_input_matches_reference_exactly(rng, bitwidth, setting, seed):
    # Same float64 operations as the model, so no slack at all (ties too).
    enc, ref_enc = _encodings(rng[0], rng[1], bitwidth, setting)
    rs = np.random.RandomState(seed)
    x = _sample_x(rs, (50,), ref_enc).astype(np.float64)
    # Exact and near ties of the level.
    half = ref_enc.delta * (rs.randint(0, ref_enc.steps, 20) + 0.5)
    x = np.concatenate([x, ref_enc.min + half])
    y = quantize_dequantize(tf.constant(x), enc)
    assert y.dtype == tf.float64
    np.testing.assert_array_equal(
        y.numpy(), ref.quantize_dequantize(x, ref_enc)
    )


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("bitwidth", [2, 16])
def test_extreme_bitwidths(setting, bitwidth):
    enc, ref_enc = _encodings(-0.7, 2.3, bitwidth, setting)
    x = _sample_x(np.random.RandomState(bitwidth), (4000,), ref_enc)
    y = quantize_dequantize(tf.constant(x), enc).numpy()
    _assert_close_to_reference(y, x, ref_enc)
    _assert_on_grid(y, ref_enc)
    assert len(np.unique(y)) <= ref_enc.steps + 1


def test_two_bit_symmetric_by_hand():
    # steps 3, delta 1, offset -2: the grid is {-2, -1, 0, 1}.
    enc = compute_encoding(-1.0, 1.0, 2, is_symmetric=True)
    assert (float(enc.delta), int(enc.offset)) == (1.0, -2)
    x = tf.constant([-3.0, -1.6, -0.4, 0.4, 0.6, 1.2, 5.0])
    y = quantize_dequantize(x, enc).numpy()
    np.testing.assert_array_equal(y, [-2.0, -2.0, 0.0, 0.0, 1.0, 1.0, 1.0])


# --------------------------------------------------------- ties and zero


def _power_of_two_symmetric():
    # delta = 127/128 / 127 = 2**-7 exactly, offset -128.
    enc = compute_encoding(-127 / 128, 127 / 128, 8, is_symmetric=True)
    assert float(enc.delta) == 2.0**-7 and int(enc.offset) == -128
    return enc


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_ties_round_half_away_from_zero_on_the_level(dtype):
    # AIMET (reference 3.1, trim_functions.cpp) rounds the grid LEVEL
    # x / delta - offset with std::round. The level is >= 0 on the grid,
    # so a tie always goes to the higher level: +2.5 delta -> +3 delta, and
    # -2.5 delta (level 125.5 on this offset -128 grid) -> level 126, i.e.
    # -2 delta, not -3 delta.
    enc = _power_of_two_symmetric()
    d = 2.0**-7
    steps = np.array(
        [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, -127.5, -128.5, 127.5]
    )
    want = np.array([1, 2, 3, 0, -1, -2, 127, -126, -127, -128, 127]) * d
    y = quantize_dequantize(tf.constant(steps * d, dtype), enc)
    np.testing.assert_array_equal(y.numpy(), want)
    ref_y = ref.quantize_dequantize(
        steps * d,
        ref.compute_encoding(-127 / 128, 127 / 128, 8, is_symmetric=True),
    )
    np.testing.assert_array_equal(ref_y, want)


def test_ties_on_asymmetric_and_unsigned_grids():
    # Asymmetric: width 255 * 2**-8, so delta = 2**-8 and offset = -64.
    lo = -0.25
    enc = compute_encoding(lo, lo + 255 * 2.0**-8, 8)
    assert float(enc.delta) == 2.0**-8 and int(enc.offset) == -64
    d = 2.0**-8
    steps = np.array([2.5, -2.5, 0.5, -0.5, -63.5, 190.5])
    want = np.array([3, -2, 1, 0, -63, 191]) * d
    y = quantize_dequantize(tf.constant(steps * d, tf.float32), enc)
    np.testing.assert_array_equal(y.numpy(), want)
    ref_y = ref.quantize_dequantize(
        steps * d, ref.compute_encoding(lo, lo + 255 * 2.0**-8, 8)
    )
    np.testing.assert_array_equal(ref_y, want)
    # Unsigned symmetric (offset 0): only positive levels exist.
    enc = compute_encoding(0.0, 255 * d, 8, True, False, True)
    assert float(enc.delta) == d and int(enc.offset) == 0
    y = quantize_dequantize(tf.constant([2.5 * d, 0.5 * d, -0.5 * d]), enc)
    np.testing.assert_array_equal(y.numpy(), [3 * d, d, 0.0])


@FAST
@given(
    rng=_RANGE,
    bitwidth=st.integers(2, 16),
    setting=st.sampled_from(sorted(SETTINGS)),
    layout=st.sampled_from(sorted(LAYOUTS)),
    per_channel=st.booleans(),
)
def test_zero_maps_exactly_to_zero(rng, bitwidth, setting, layout, per_channel):
    shape, axis = LAYOUTS[layout]
    if per_channel:
        c = _channel_count(shape, axis)
        scale = np.linspace(0.0, 1.0, c)  # includes an all-zero channel
        enc, _ = _encodings(rng[0] * scale, rng[1] * scale, bitwidth, setting)
    else:
        enc, _ = _encodings(rng[0], rng[1], bitwidth, setting)
        axis = None
    for dtype in (tf.float32, tf.float64, tf.float16):
        x = tf.concat([tf.zeros(shape, dtype), -tf.zeros(shape, dtype)], axis=0)
        y = quantize_dequantize(x, enc, axis=axis)
        assert y.dtype == dtype
        assert np.all(y.numpy() == 0.0)


# ------------------------------------------------------------ per channel


def _per_channel_case(rs, layout, bitwidth, setting, zero_channel):
    shape, axis = LAYOUTS[layout]
    c = _channel_count(shape, axis)
    # Calibrate from a kernel whose channels have very different scales.
    scales = np.exp(rs.uniform(-4, 2, size=c))
    centres = rs.uniform(-1, 1, size=c) * scales
    kernel = ref.broadcast_param(centres, shape, axis) + ref.broadcast_param(
        scales, shape, axis
    ) * rs.standard_normal(shape)
    if zero_channel:
        mask = ref.broadcast_param(np.arange(c) == rs.randint(c), shape, axis)
        kernel = np.where(mask > 0, 0.0, kernel)
    axes = tuple(a % len(shape) for a in channel_axes(axis, len(shape)))
    others = tuple(a for a in range(len(shape)) if a not in axes)
    # Per-channel min/max flattened in row-major order of the channel axes.
    lo = np.min(kernel, axis=others).reshape(-1)
    hi = np.max(kernel, axis=others).reshape(-1)
    enc, ref_enc = _encodings(lo, hi, bitwidth, setting)
    # Quantize values beyond the calibration range too.
    x = _sample_x(rs, shape, ref_enc, axis)
    x = np.where(rs.rand(*shape) < 0.5, kernel.astype(np.float32), x)
    return x, axis, enc, ref_enc


@FAST
@given(
    layout=st.sampled_from(sorted(LAYOUTS)),
    bitwidth=st.integers(2, 16),
    setting=st.sampled_from(sorted(SETTINGS)),
    seed=st.integers(0, 2**31 - 1),
    zero_channel=st.booleans(),
)
def test_per_channel_matches_reference(
    layout, bitwidth, setting, seed, zero_channel
):
    rs = np.random.RandomState(seed)
    x, axis, enc, ref_enc = _per_channel_case(
        rs, layout, bitwidth, setting, zero_channel
    )
    assert enc.is_per_channel
    y = quantize_dequantize(tf.constant(x), enc, axis=axis).numpy()
    _assert_close_to_reference(y, x, ref_enc, axis)
    _assert_on_grid(y, ref_enc, axis)
    # float64 input: exact.
    x64 = x.astype(np.float64)
    y64 = quantize_dequantize(tf.constant(x64), enc, axis=axis).numpy()
    np.testing.assert_array_equal(
        y64, ref.quantize_dequantize(x64, ref_enc, axis)
    )


def test_per_channel_axis_layouts_by_hand():
    # Channel c quantizes with its own grid: each channel c has delta 2**-c.
    def enc_for(c):
        d = 2.0 ** -np.arange(c)
        return compute_encoding(-127 * d, 127 * d, 8, is_symmetric=True)

    x = np.full((2, 2, 3, 2), 0.3, np.float32)
    # Conv2DTranspose HWOI: axis -2 carries O = 3 channels.
    y = quantize_dequantize(tf.constant(x), enc_for(3), axis=-2).numpy()
    for o in range(3):
        d = 2.0**-o
        np.testing.assert_allclose(y[:, :, o, :], np.round(0.3 / d) * d)
    # DepthwiseConv2D HWIM: (-2, -1) flattens I=3, M=2 row-major: c = i*M+m.
    y = quantize_dequantize(tf.constant(x), enc_for(6), axis=(-2, -1)).numpy()
    for i in range(3):
        for m in range(2):
            d = 2.0 ** -(i * 2 + m)
            np.testing.assert_allclose(y[:, :, i, m], np.round(0.3 / d) * d)


def test_channel_axes():
    assert channel_axes(-1, 4) == (3,)
    assert channel_axes((-2, -1), 4) == (2, 3)
    assert channel_axes((3, 2), 4) == (2, 3)
    assert channel_axes(np.int64(0), 2) == (0,)


# ------------------------------------------------------------ float types


@FAST
@given(seed=st.integers(0, 2**31 - 1))
def test_float16_encoding_is_a_float16_round_trip(seed):
    dtype = np.float32
    rs = np.random.RandomState(seed)
    x = (
        rs.standard_normal(300)
        * np.exp(rs.uniform(-30, 14, 300))  # subnormal .. beyond fp16 max
    ).astype(dtype)
    x[:4] = [65504.0, 65520.0, -1e6, 2.0**-25]
    y = quantize_dequantize(tf.constant(x), float_encoding(16))
    assert y.dtype == tf.as_dtype(dtype)
    np.testing.assert_array_equal(y.numpy(), ref.float16_round_trip(x))


def test_float16_encoding_of_float64_input():
    # float64 input: fp16 values, and the float32 round trip of the input
    # (TF casts float64 -> float16 through float32).
    x = np.random.RandomState(0).standard_normal(500) * 100
    y = quantize_dequantize(tf.constant(x), float_encoding(16)).numpy()
    assert y.dtype == np.float64
    np.testing.assert_array_equal(
        y, ref.float16_round_trip(x.astype(np.float32))
    )
    np.testing.assert_array_equal(y, y.astype(np.float16))


def test_float16_encoding_of_float64_rounds_once():
    # TF casts float64 -> float16 through float32; rounding to odd in the
    # first step keeps the result a single, correct rounding.
    x = np.array([60.609375 - 2.0**-40])  # just below the fp16 midpoint
    want = ref.float16_round_trip(x)  # numpy: one rounding -> 60.59375
    assert want[0] == 60.59375
    y = quantize_dequantize(tf.constant(x), float_encoding(16)).numpy()
    np.testing.assert_array_equal(y, want)


def test_float_encodings_gradient_and_fp32_identity():
    x = tf.constant([1.0, 70000.0, 1e-9, -3.3])
    np.testing.assert_array_equal(
        quantize_dequantize(x, float_encoding(32)).numpy(), x.numpy()
    )
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantize_dequantize(x, float_encoding(16))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [1.0] * 4)


# -------------------------------------------------------------- gradients


def _margin_mask(x, ref_enc, axis, margin):
    lo = ref.broadcast_param(ref_enc.min, x.shape, axis)
    hi = ref.broadcast_param(ref_enc.max, x.shape, axis)
    inside = (x >= lo + margin * (hi - lo)) & (x <= hi - margin * (hi - lo))
    outside = (x <= lo - margin * (hi - lo)) | (x >= hi + margin * (hi - lo))
    return inside, outside


@FEW
@given(
    rng=_RANGE,
    bitwidth=st.integers(2, 16),
    setting=st.sampled_from(sorted(SETTINGS)),
    seed=st.integers(0, 2**31 - 1),
    layout=st.sampled_from(["per_tensor"] + sorted(LAYOUTS)),
)
def test_straight_through_gradient(rng, bitwidth, setting, seed, layout):
    rs = np.random.RandomState(seed)
    if layout == "per_tensor":
        enc, ref_enc = _encodings(rng[0], rng[1], bitwidth, setting)
        axis = None
        x = _sample_x(rs, (40,), ref_enc, spill=1.0).astype(np.float64)
    else:
        x, axis, enc, ref_enc = _per_channel_case(
            rs, layout, bitwidth, setting, zero_channel=False
        )
        x = _sample_x(rs, x.shape, ref_enc, axis, spill=1.0)
        x = x.astype(np.float64)
    inside, outside = _margin_mask(x, ref_enc, axis, 1e-3)
    weights = rs.uniform(0.5, 2.0, size=x.shape)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = quantize_dequantize(xt, enc, axis=axis)
    grad = tape.gradient(y, xt, output_gradients=tf.constant(weights))
    grad = grad.numpy()
    np.testing.assert_array_equal(grad[inside], weights[inside])
    np.testing.assert_array_equal(grad[outside], 0.0)
    # Outside the range the forward is flat: central FD derivative is 0.
    width = ref.broadcast_param(ref_enc.max - ref_enc.min, x.shape, axis)
    eps = 1e-4 * width
    y_plus = quantize_dequantize(tf.constant(x + eps), enc, axis=axis)
    y_minus = quantize_dequantize(tf.constant(x - eps), enc, axis=axis)
    fd = (y_plus.numpy() - y_minus.numpy()) / (2 * eps)
    np.testing.assert_array_equal(fd[outside], 0.0)
    np.testing.assert_array_equal(grad[outside], fd[outside])


def test_straight_through_gradient_at_range_ends():
    enc = _power_of_two_symmetric()
    # min = -1, max = 127/128: both ends pass the gradient, beyond them not.
    x = tf.constant([float(enc.min), float(enc.max), 0.0, 1.0, -1.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantize_dequantize(x, enc)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [1, 1, 1, 0, 0])


def _range_grads(x, lo, hi, bitwidth, setting, axis=None, weights=None):
    sym, strict, unsigned = SETTINGS[setting]
    lo_var = tf.Variable(lo, dtype=tf.float64)
    hi_var = tf.Variable(hi, dtype=tf.float64)
    xt = tf.constant(x, tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        y = quantize_dequantize_range(
            xt, lo_var, hi_var, bitwidth, sym, strict, unsigned, axis=axis
        )
        loss = tf.reduce_sum(y * (1.0 if weights is None else weights))
    g_lo, g_hi, g_x = tape.gradient(loss, [lo_var, hi_var, xt])
    return y.numpy(), loss.numpy(), g_lo.numpy(), g_hi.numpy(), g_x.numpy()


def _forward(x, lo, hi, bitwidth, setting, axis=None):
    sym, strict, unsigned = SETTINGS[setting]
    return quantize_dequantize_range(
        tf.constant(x, tf.float64),
        tf.constant(lo, tf.float64),
        tf.constant(hi, tf.float64),
        bitwidth,
        sym,
        strict,
        unsigned,
        axis=axis,
    ).numpy()


def _offset(lo, hi, bitwidth, setting):
    sym, strict, unsigned = SETTINGS[setting]
    return grid_from_range(
        tf.constant(lo, tf.float64),
        tf.constant(hi, tf.float64),
        bitwidth,
        sym,
        strict,
        unsigned,
    )[1].numpy()


_STRICT_RANGE = st.tuples(
    st.floats(-20.0, -0.05, allow_nan=False),
    st.floats(0.05, 20.0, allow_nan=False),
)


@FEW
@given(
    rng=_STRICT_RANGE,
    bitwidth=st.integers(2, 16),
    setting=st.sampled_from(["asym", "sym", "strict"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_range_gradient_of_clipped_values_matches_finite_differences(
    rng, bitwidth, setting, seed
):
    lo, hi = rng
    width = hi - lo
    rs = np.random.RandomState(seed)
    _, ref_enc = _encodings(lo, hi, bitwidth, setting)
    # Well above max and well below min: more than half a step beyond, so
    # the rounded level is outside [0, N] (reference 3.7's "outside").
    delta = float(ref_enc.delta)
    x = np.concatenate(
        [
            ref_enc.max + delta + width * rs.uniform(0.0, 2.0, 3),
            ref_enc.min - delta - width * rs.uniform(0.0, 2.0, 3),
        ]
    )
    eps = 1e-8 * width
    if setting == "asym":
        # Keep the rounded zero point -min/delta away from a tie so that
        # +-eps cannot move it.
        zero_point = -lo * ref_enc.steps / width
        assume(ref.distance_to_tie(zero_point) > 1e-3)
    else:
        # delta = max(|min|, |max|) / floor(N / 2) has a kink where
        # |min| == |max|: no derivative there for FD to match.
        assume(abs(abs(lo) - abs(hi)) > 1e3 * eps)
    for name, index in (("min", 0), ("max", 1)):
        plus = [lo, hi]
        minus = [lo, hi]
        plus[index] += eps
        minus[index] -= eps
        assert _offset(*plus, bitwidth, setting) == _offset(
            *minus, bitwidth, setting
        ), f"the zero point moved with {name} +- eps"
    weights = rs.uniform(0.5, 2.0, len(x))

    def fd(d_lo, d_hi, ones=1.0):
        lo_p, hi_p = (lo + d_lo) * ones, (hi + d_hi) * ones
        lo_m, hi_m = (lo - d_lo) * ones, (hi - d_hi) * ones
        axis = None if np.ndim(ones) == 0 else -1
        up = _forward(x[None, :], lo_p, hi_p, bitwidth, setting, axis)
        down = _forward(x[None, :], lo_m, hi_m, bitwidth, setting, axis)
        return ((up - down) * weights).reshape(-1) / (2 * eps)

    # Per tensor: d sum(w * y) / d min and d max.
    _, _, g_lo, g_hi, g_x = _range_grads(
        x, lo, hi, bitwidth, setting, weights=tf.constant(weights)
    )
    np.testing.assert_array_equal(g_x, 0.0)  # clipped: no gradient to x
    np.testing.assert_allclose(g_lo, fd(eps, 0).sum(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_hi, fd(0, eps).sum(), rtol=1e-5, atol=1e-6)
    # Element by element: one channel per element with the same range.
    ones = np.ones(len(x))
    _, _, g_lo, g_hi, _ = _range_grads(
        x[None, :],
        lo * ones,
        hi * ones,
        bitwidth,
        setting,
        axis=-1,
        weights=tf.constant(weights[None, :]),
    )
    np.testing.assert_allclose(g_lo, fd(eps, 0, ones), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_hi, fd(0, eps, ones), rtol=1e-5, atol=1e-6)


def test_range_gradient_of_clipped_values_by_hand():
    # [-1, 3] at 2 bits: delta 4/3, offset -1, grid {-4/3, 0, 4/3, 8/3}.
    # Above: y = delta * (3 - 1) = (hi - lo) * 2/3, so dy/dhi = 2/3,
    # dy/dmin = -2/3. Below: y = -delta, dy/dhi = -1/3, dy/dmin = 1/3.
    # (AIMET's Keras kernel uses the level without the zero point, 3/3 and
    # 0/3, which disagrees with these exact derivatives.)
    _, _, g_lo, g_hi, _ = _range_grads([10.0], -1.0, 3.0, 2, "asym")
    np.testing.assert_allclose([g_lo, g_hi], [-2 / 3, 2 / 3], rtol=1e-12)
    _, _, g_lo, g_hi, _ = _range_grads([-10.0], -1.0, 3.0, 2, "asym")
    np.testing.assert_allclose([g_lo, g_hi], [1 / 3, -1 / 3], rtol=1e-12)


def _lsq_term(x, ref_enc, axis=None):
    """Elementwise d y / d delta: LSQ inside, clipped level outside."""
    delta = ref.broadcast_param(ref_enc.delta, x.shape, axis)
    offset = ref.broadcast_param(ref_enc.offset, x.shape, axis)
    scaled = x / delta
    level = ref.std_round(scaled - offset)
    inside = (level >= 0) & (level <= ref_enc.steps)
    clipped = np.clip(level, 0, ref_enc.steps)
    return np.where(inside, level + offset - scaled, clipped + offset), inside


@FEW
@given(
    rng=_STRICT_RANGE,
    bitwidth=st.integers(2, 16),
    setting=st.sampled_from(["asym", "sym", "strict"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_range_gradient_inside_is_lsq(rng, bitwidth, setting, seed):
    lo, hi = rng
    rs = np.random.RandomState(seed)
    _, ref_enc = _encodings(lo, hi, bitwidth, setting)
    delta = float(ref_enc.delta)
    x = rs.uniform(float(ref_enc.min) + delta, float(ref_enc.max) - delta, 40)
    weights = rs.uniform(-1.0, 1.0, 40)
    y, _, g_lo, g_hi, g_x = _range_grads(
        x, lo, hi, bitwidth, setting, weights=tf.constant(weights)
    )
    np.testing.assert_array_equal(y, ref.quantize_dequantize(x, ref_enc))
    np.testing.assert_array_equal(g_x, weights)  # straight-through
    scaled = x / delta
    lsq = ref.std_round(scaled) - scaled  # round(x/delta) - x/delta
    d_delta = np.sum(weights * lsq)
    if setting == "asym":
        # delta = (max - min) / N.
        want_lo, want_hi = -d_delta / ref_enc.steps, d_delta / ref_enc.steps
    else:
        # delta = max(|min|, |max|) / floor(N / 2).
        per_level = d_delta / (ref_enc.steps // 2)
        assume(abs(abs(lo) - abs(hi)) > 1e-9)
        want_lo, want_hi = (
            (-per_level, 0.0) if abs(lo) > abs(hi) else (0.0, per_level)
        )
    scale = 1e-10 * np.sum(np.abs(weights))
    np.testing.assert_allclose([g_lo, g_hi], [want_lo, want_hi], atol=scale)


@FEW
@given(
    layout=st.sampled_from(["dense", "depthwise_hwim"]),
    bitwidth=st.integers(2, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_per_channel_range_gradients_are_summed_per_channel(
    layout, bitwidth, seed
):
    shape, axis = LAYOUTS[layout]
    c = _channel_count(shape, axis)
    rs = np.random.RandomState(seed)
    lo = -rs.uniform(0.05, 3.0, c)
    hi = rs.uniform(0.05, 3.0, c)
    _, ref_enc = _encodings(lo, hi, bitwidth, "asym")
    x = _sample_x(rs, shape, ref_enc, axis, spill=0.5).astype(np.float64)
    weights = rs.uniform(-1.0, 1.0, shape)
    y, _, g_lo, g_hi, g_x = _range_grads(
        x, lo, hi, bitwidth, "asym", axis=axis, weights=tf.constant(weights)
    )
    assert g_lo.shape == (c,) and g_hi.shape == (c,)
    np.testing.assert_array_equal(y, ref.quantize_dequantize(x, ref_enc, axis))
    term, _ = _lsq_term(x, ref_enc, axis)
    # Sum weights * term over everything but the channel axes, row-major.
    axes = channel_axes(axis, len(shape))
    others = tuple(a for a in range(len(shape)) if a not in axes)
    per_channel = np.sum(weights * term, axis=others).reshape(-1)
    want_hi = per_channel / ref_enc.steps
    atol = 1e-10 * np.sum(np.abs(weights))
    np.testing.assert_allclose(g_hi, want_hi, rtol=1e-9, atol=atol)
    np.testing.assert_allclose(g_lo, -want_hi, rtol=1e-9, atol=atol)
    inside, outside = _margin_mask(x, ref_enc, axis, 1e-6)
    np.testing.assert_array_equal(g_x[inside], weights[inside])
    np.testing.assert_array_equal(g_x[outside], 0.0)


def test_range_learning_doc_example():
    lo, hi = tf.Variable(-1.0), tf.Variable(1.0)
    with tf.GradientTape() as tape:
        y = quantize_dequantize_range(tf.constant([3.0]), lo, hi, 8)
    g = tape.gradient(y, [lo, hi])
    assert [round(float(v), 2) for v in g] == [-0.5, 0.5]


# ------------------------------------------------------------------- XLA


def _eager_and_jit(fn, *args):
    jitted = tf.function(fn, jit_compile=True)
    return fn(*args), jitted(*args)


@pytest.mark.parametrize(
    "layout", ["per_tensor", "conv2d_hwio", "depthwise_hwim"]
)
@pytest.mark.parametrize("setting", ["asym", "sym"])
def test_xla_matches_eager(layout, setting):
    rs = np.random.RandomState(7)
    if layout == "per_tensor":
        enc, ref_enc = _encodings(-0.37, 1.91, 8, setting)
        axis = None
        x = _sample_x(rs, (6, 50), ref_enc)
    else:
        x, axis, enc, ref_enc = _per_channel_case(
            rs, layout, 8, setting, zero_channel=True
        )

    def fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = quantize_dequantize(x, enc, axis=axis)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, x)

    (y_e, g_e), (y_j, g_j) = _eager_and_jit(fn, tf.constant(x))
    np.testing.assert_array_equal(y_j.numpy(), y_e.numpy())
    np.testing.assert_array_equal(g_j.numpy(), g_e.numpy())
    _assert_close_to_reference(y_e.numpy(), x, ref_enc, axis)


@pytest.mark.parametrize("per_channel", [False, True])
def test_xla_range_learning_matches_reference(per_channel):
    """Range learning under XLA: the same values as eager, bit for bit.

    The range gradients are sums, which XLA may order differently, so they
    only have to agree closely; both runs must match the float64 model.
    """
    rs = np.random.RandomState(3)
    if per_channel:
        shape, axis = LAYOUTS["conv2d_hwio"]
        c = shape[-1]
        lo0, hi0 = -rs.uniform(0.1, 2, c), rs.uniform(0.1, 2, c)
    else:
        shape, axis = (5, 40), None
        lo0, hi0 = -0.61, 1.37
    _, ref_enc = _encodings(lo0, hi0, 8, "asym")
    x_np = _sample_x(rs, shape, ref_enc, axis, spill=0.5)
    x = tf.constant(x_np)
    weights = tf.constant(rs.uniform(-1.0, 1.0, shape).astype(np.float32))
    lo = tf.Variable(np.float32(lo0))
    hi = tf.Variable(np.float32(hi0))
    # The float32 variables hold rounded copies of lo0/hi0.
    ref_enc = ref.compute_encoding(
        np.float32(lo0).astype(np.float64),
        np.float32(hi0).astype(np.float64),
        8,
    )

    def fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = quantize_dequantize_range(x, lo, hi, 8, axis=axis)
            loss = tf.reduce_sum(y * weights)
        return (y,) + tuple(tape.gradient(loss, [x, lo, hi]))

    eager, jit = _eager_and_jit(fn, x)
    np.testing.assert_array_equal(jit[0].numpy(), eager[0].numpy())
    np.testing.assert_array_equal(jit[1].numpy(), eager[1].numpy())
    for out in (eager, jit):
        _assert_close_to_reference(out[0].numpy(), x_np, ref_enc, axis)
    inside, outside = _margin_mask(x_np.astype(np.float64), ref_enc, axis, 1e-4)
    for out in (eager, jit):
        g_x = out[1].numpy()
        np.testing.assert_array_equal(g_x[inside], weights.numpy()[inside])
        np.testing.assert_array_equal(g_x[outside], 0.0)
    atol = 1e-5 * float(np.sum(np.abs(weights.numpy())))
    for e, j in zip(eager[2:], jit[2:], strict=True):
        np.testing.assert_allclose(j.numpy(), e.numpy(), rtol=1e-4, atol=atol)


def test_xla_grid_from_range_is_bit_exact():
    # The grid is computed in float64 and cast back, so XLA's rewrite of
    # division by a constant into a multiplication cannot move delta.
    rs = np.random.RandomState(0)
    lo = tf.constant(-rs.uniform(0.01, 3, 2000).astype(np.float32))
    hi = tf.constant(rs.uniform(0.01, 3, 2000).astype(np.float32))
    eager, jit = _eager_and_jit(lambda a, b: grid_from_range(a, b, 8), lo, hi)
    for e, j in zip(eager, jit, strict=True):
        np.testing.assert_array_equal(j.numpy(), e.numpy())


# ------------------------------------------------------------- bad input


def test_integer_input_raises():
    enc = compute_encoding(-1.0, 1.0, 8)
    with pytest.raises(ValueError, match=r"\bx\b"):
        quantize_dequantize(tf.constant([1, 2], tf.int32), enc)
    with pytest.raises(ValueError, match=r"\bx\b"):
        quantize_dequantize_range(tf.constant([1, 2], tf.int32), -1.0, 1.0, 8)


@pytest.mark.parametrize("bitwidth", [0, 1, 33, 8.0, "8"])
def test_range_learning_bad_bitwidth_raises(bitwidth):
    with pytest.raises(ValueError, match="bitwidth"):
        quantize_dequantize_range(tf.constant([0.5]), -1.0, 1.0, bitwidth)


def test_per_channel_axis_size_mismatch_raises():
    enc = compute_encoding(-np.ones(4), np.ones(4), 8)
    x = tf.zeros((3, 3, 4, 2))
    with pytest.raises(ValueError, match="axis"):
        quantize_dequantize(x, enc, axis=-1)
    with pytest.raises(ValueError, match="axis"):
        quantize_dequantize(x, enc, axis=(-2, -1))
    with pytest.raises(ValueError, match="axis"):
        quantize_dequantize_range(x, -np.ones(4), np.ones(4), 8, axis=-1)
    # The right axis works.
    assert quantize_dequantize(x, enc, axis=-2).shape == x.shape


@pytest.mark.parametrize("axis", [4, -5, (1, 1), (), (-2, 7)])
def test_out_of_range_axis_raises(axis):
    enc = compute_encoding(-np.ones(4), np.ones(4), 8)
    with pytest.raises(ValueError, match="axis"):
        quantize_dequantize(tf.zeros((3, 3, 4, 2)), enc, axis=axis)
    with pytest.raises(ValueError, match="axis"):
        channel_axes(axis, 4)


def test_per_channel_encoding_without_axis_raises():
    enc = compute_encoding(-np.ones(4), np.ones(4), 8)
    with pytest.raises(ValueError, match="axis"):
        quantize_dequantize(tf.zeros((2, 4)), enc)
    with pytest.raises(ValueError, match="axis"):
        quantize_dequantize_range(tf.zeros((2, 4)), -np.ones(4), np.ones(4), 8)


def test_axis_with_per_tensor_encoding_raises():
    enc = compute_encoding(-1.0, 1.0, 8)
    with pytest.raises(ValueError, match="axis"):
        quantize_dequantize(tf.zeros((2, 4)), enc, axis=-1)


def test_non_encoding_raises():
    with pytest.raises(ValueError, match="encoding"):
        quantize_dequantize(tf.zeros((2,)), (0.1, -3))


@pytest.mark.parametrize("bitwidth", [12, 4])
def test_float_encoding_without_a_format_raises(bitwidth):
    with pytest.raises(ValueError, match="bitwidth"):
        float_encoding(bitwidth)


def test_float16_encoding_of_float64_matches_numpy_on_random_values():
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            rng.standard_normal(50_000) * 100.0,
            rng.uniform(-70_000.0, 70_000.0, 50_000),
            [0.0, -0.0, 1e-300, 65504.0, 65520.0, 1e6, -1e6],
        ]
    )
    y = quantize_dequantize(tf.constant(x), float_encoding(16)).numpy()
    with np.errstate(over="ignore"):  # fp16 overflows to inf, as intended
        want = x.astype(np.float16).astype(np.float64)
    np.testing.assert_array_equal(y, want)
