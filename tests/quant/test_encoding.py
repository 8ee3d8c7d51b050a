"""compute_encoding / grid_from_range against the independent numpy model."""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from aimet_keras.quant import Encoding
from aimet_keras.quant import compute_encoding
from aimet_keras.quant import float_encoding
from aimet_keras.quant import grid_from_range
from aimet_keras.quant import num_steps
from aimet_keras.quant import round_half_away_from_zero
from tests.quant import grid_reference as ref

FAST = settings(max_examples=80, deadline=None, database=None)

BITWIDTHS = list(range(2, 17)) + [32]

# (is_symmetric, strict_symmetric, unsigned_symmetric)
SETTINGS = {
    "asym": (False, False, False),
    "sym": (True, False, False),
    "strict": (True, True, False),
    "unsigned": (True, False, True),
    "strict_unsigned": (True, True, True),
}


def _assert_matches_reference(enc, expected):
    """delta/offset/min/max agree to rtol 1e-12 (offset exactly).

    min/max also get an absolute slack of 1e-12 times the range: when the
    range ends at 0 AIMET keeps the bound while a nudged zero point makes it
    ``offset * delta``, which can differ from it by one ulp of the range.
    """
    assert np.shape(enc.delta) == np.shape(expected.delta)
    np.testing.assert_allclose(enc.delta, expected.delta, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(enc.offset, expected.offset)
    scale = np.maximum(np.abs(expected.min), np.abs(expected.max))
    for got, want in ((enc.min, expected.min), (enc.max, expected.max)):
        assert np.all(
            np.abs(got - want) <= 1e-12 * np.abs(want) + 1e-12 * scale
        ), (
            got,
            want,
        )
    assert enc.num_steps == expected.steps


# Range endpoints: huge, ordinary, tiny, exact zeros and values near the 0.01
# minimum width. No float64 subnormals: TF's CPU kernels flush them to zero
# (see test_subnormal_negative_min_is_signed_symmetric).
_FLOAT = dict(allow_nan=False, allow_infinity=False, allow_subnormal=False)
_ENDPOINT = st.one_of(
    st.floats(-1e30, 1e30, **_FLOAT),
    st.floats(-10.0, 10.0, **_FLOAT),
    st.floats(-1e-6, 1e-6, **_FLOAT),
    st.sampled_from(
        [0.0, -0.0, 0.005, -0.005, 0.01, -0.01, 1e-30, -1e-30, 1e30, -1e30]
    ),
)


@st.composite
def _range(draw):
    a = draw(_ENDPOINT)
    kind = draw(st.sampled_from(["pair", "constant", "positive", "negative"]))
    if kind == "constant":  # a constant tensor: min == max
        return a, a
    b = draw(_ENDPOINT)
    lo, hi = min(a, b), max(a, b)
    if kind == "positive":
        lo, hi = abs(lo), abs(hi)
    elif kind == "negative":
        lo, hi = -abs(lo), -abs(hi)
    return min(lo, hi), max(lo, hi)


# ---------------------------------------------------------------- examples


def test_reference_doc_asymmetric_example():
    enc = compute_encoding(-0.5, 1.3, bitwidth=8)
    assert int(enc.offset) == -71
    assert round(float(enc.min), 6) == -0.501176
    assert round(float(enc.max), 6) == 1.298824
    np.testing.assert_allclose(enc.delta, 1.8 / 255, rtol=1e-15)
    # 0.0 is exactly a grid point and the width is kept.
    assert float(enc.min) == -71 * float(enc.delta)
    np.testing.assert_allclose(float(enc.max - enc.min), 1.8, rtol=1e-15)
    assert enc.num_steps == 255


@pytest.mark.parametrize("lo, hi", [(-0.8, 0.3), (-0.3, 0.8), (-0.8, 0.8)])
def test_reference_doc_symmetric_example(lo, hi):
    enc = compute_encoding(lo, hi, 8, is_symmetric=True)
    assert float(enc.delta) == 0.8 / 127
    assert int(enc.offset) == -128
    np.testing.assert_allclose(enc.min, -128 * 0.8 / 127, rtol=1e-15)
    np.testing.assert_allclose(enc.max, 0.8, rtol=1e-15)


def test_strict_symmetric_example():
    enc = compute_encoding(
        -0.3, 0.8, 8, is_symmetric=True, strict_symmetric=True
    )
    assert float(enc.delta) == 0.8 / 127
    assert int(enc.offset) == -127
    np.testing.assert_allclose([enc.min, enc.max], [-0.8, 0.8], rtol=1e-15)
    assert enc.num_steps == 254


def test_unsigned_symmetric_uses_all_levels_for_nonnegative_ranges():
    enc = compute_encoding(
        0.0, 2.55, 8, is_symmetric=True, unsigned_symmetric=True
    )
    assert int(enc.offset) == 0
    np.testing.assert_allclose(enc.delta, 0.01, rtol=1e-15)
    assert float(enc.min) == 0.0
    assert float(enc.max) == 2.55
    # A range below zero falls back to the signed symmetric grid.
    signed = compute_encoding(
        -0.1, 2.55, 8, is_symmetric=True, unsigned_symmetric=True
    )
    assert int(signed.offset) == -128
    np.testing.assert_allclose(signed.delta, 2.55 / 127, rtol=1e-15)


def test_all_zero_tensor_gets_min_range():
    enc = compute_encoding(0.0, 0.0, 8)
    assert float(enc.min) == 0.0
    assert float(enc.max) == 0.01
    assert int(enc.offset) == 0
    np.testing.assert_allclose(enc.delta, 0.01 / 255, rtol=1e-15)
    sym = compute_encoding(0.0, 0.0, 8, is_symmetric=True)
    np.testing.assert_allclose(sym.delta, 0.01 / 127, rtol=1e-15)
    assert int(sym.offset) == -128


@pytest.mark.parametrize(
    "lo, hi, want_min, want_max",
    [
        (3.0, 3.0, 0.0, 3.0),  # constant positive tensor
        (-3.0, -3.0, -3.0, 0.0),  # constant negative tensor
        (2.0, 5.0, 0.0, 5.0),  # min > 0
        (-5.0, -2.0, -5.0, 0.0),  # max < 0
        (-0.001, 0.002, -0.001, 0.009),  # widened to 0.01 (approximately)
    ],
)
def test_range_fixups(lo, hi, want_min, want_max):
    enc = compute_encoding(lo, hi, 8)
    expected = ref.compute_encoding(lo, hi, 8)
    _assert_matches_reference(enc, expected)
    assert enc.min <= 0.0 <= enc.max
    assert float(enc.max - enc.min) >= 0.01 * (1 - 1e-12)
    if lo * hi >= 0:  # no nudge: the fixed-up range is the grid's range
        np.testing.assert_allclose(
            [enc.min, enc.max], [want_min, want_max], rtol=1e-12, atol=1e-15
        )


def test_huge_and_tiny_ranges():
    for lo, hi in [
        (-1e30, 1e30),
        (-1e30, 1e-30),
        (1e29, 1e30),
        (-1e-30, 1e-30),
    ]:
        for name, (sym, strict, unsigned) in SETTINGS.items():
            for bw in (2, 8, 16, 32):
                enc = compute_encoding(lo, hi, bw, sym, strict, unsigned)
                _assert_matches_reference(
                    enc, ref.compute_encoding(lo, hi, bw, sym, strict, unsigned)
                )
                assert np.all(
                    np.isfinite([enc.delta, enc.offset, enc.min, enc.max])
                ), name


def test_per_channel_with_all_zero_channel():
    lo = np.array([-1.0, 0.0, -0.2, 0.5])
    hi = np.array([2.0, 0.0, -0.1, 0.7])
    for sym, strict, unsigned in SETTINGS.values():
        enc = compute_encoding(lo, hi, 8, sym, strict, unsigned)
        assert enc.is_per_channel and enc.num_channels == 4
        _assert_matches_reference(
            enc, ref.compute_encoding(lo, hi, 8, sym, strict, unsigned)
        )
        # The all-zero channel gets a valid grid of at least MIN_RANGE.
        assert enc.min[1] <= 0.0 and enc.max[1] - enc.min[1] >= 0.01 * (
            1 - 1e-12
        )


# -------------------------------------------------------------- randomised


@FAST
@given(
    rng=_range(),
    bitwidth=st.sampled_from(BITWIDTHS),
    setting=st.sampled_from(sorted(SETTINGS)),
)
def test_per_tensor_matches_reference(rng, bitwidth, setting):
    lo, hi = rng
    sym, strict, unsigned = SETTINGS[setting]
    enc = compute_encoding(lo, hi, bitwidth, sym, strict, unsigned)
    assert np.ndim(enc.delta) == 0 and not enc.is_per_channel
    _assert_matches_reference(
        enc, ref.compute_encoding(lo, hi, bitwidth, sym, strict, unsigned)
    )
    # Invariants of every grid.
    assert enc.delta > 0
    assert -enc.num_steps <= enc.offset <= 0
    assert float(enc.offset) == math.floor(float(enc.offset))
    np.testing.assert_allclose(
        enc.min, enc.offset * enc.delta, rtol=1e-12, atol=1e-300
    )
    np.testing.assert_allclose(
        enc.max - enc.min, enc.num_steps * enc.delta, rtol=1e-9, atol=1e-300
    )


@FAST
@given(
    ranges=st.lists(_range(), min_size=1, max_size=12),
    bitwidth=st.sampled_from(BITWIDTHS),
    setting=st.sampled_from(sorted(SETTINGS)),
)
def test_per_channel_matches_reference(ranges, bitwidth, setting):
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
    sym, strict, unsigned = SETTINGS[setting]
    enc = compute_encoding(lo, hi, bitwidth, sym, strict, unsigned)
    assert enc.is_per_channel and enc.num_channels == len(ranges)
    _assert_matches_reference(
        enc, ref.compute_encoding(lo, hi, bitwidth, sym, strict, unsigned)
    )
    # Each channel equals its own per-tensor encoding.
    for c in range(len(ranges)):
        single = compute_encoding(lo[c], hi[c], bitwidth, sym, strict, unsigned)
        for field in ("delta", "offset", "min", "max"):
            assert getattr(single, field) == getattr(enc, field)[c]


@FAST
@given(
    rng=_range(),
    bitwidth=st.sampled_from(BITWIDTHS),
    setting=st.sampled_from(sorted(SETTINGS)),
)
def test_grid_from_range_float64_is_compute_encoding(rng, bitwidth, setting):
    lo, hi = rng
    sym, strict, unsigned = SETTINGS[setting]
    delta, offset, gmin, gmax = grid_from_range(
        tf.constant(lo, tf.float64),
        tf.constant(hi, tf.float64),
        bitwidth,
        sym,
        strict,
        unsigned,
    )
    enc = compute_encoding(lo, hi, bitwidth, sym, strict, unsigned)
    for got, want in (
        (delta, enc.delta),
        (offset, enc.offset),
        (gmin, enc.min),
        (gmax, enc.max),
    ):
        assert got.dtype == tf.float64
        assert got.numpy() == want


def test_grid_from_range_keeps_float32():
    # (Ranges whose zero point -min/delta is not near a .5 tie, which float32
    # and float64 could round apart.)
    out = grid_from_range(tf.constant([-0.5, -1.0]), tf.constant([1.3, 2.0]), 8)
    assert all(t.dtype == tf.float32 and t.shape == (2,) for t in out)
    expected = ref.compute_encoding([-0.5, -1.0], [1.3, 2.0], 8)
    np.testing.assert_allclose(out[0].numpy(), expected.delta, rtol=1e-6)
    np.testing.assert_array_equal(out[1].numpy(), expected.offset)


def test_float32_subnormal_range_is_exact():
    # float32 subnormals are normal float64 numbers: no flushing there.
    tiny = float(np.float32(-1e-40))
    enc = compute_encoding(tiny, 1.0, 8, True, False, True)
    assert int(enc.offset) == -128  # min < 0: signed symmetric
    _assert_matches_reference(
        enc, ref.compute_encoding(tiny, 1.0, 8, True, False, True)
    )


def test_float64_subnormal_bounds_count_as_zero():
    # Documented deviation from reference 3.2: TensorFlow's CPU kernels
    # flush float64 subnormals, so min=-1e-313 is min == 0 and an unsigned
    # symmetric grid results. No float32 tensor can produce such a range.
    enc = compute_encoding(-1e-313, 1.0, 8, True, False, True)
    _assert_matches_reference(
        enc, ref.compute_encoding(0.0, 1.0, 8, True, False, True)
    )


# -------------------------------------------------------- small functions


def test_num_steps():
    assert num_steps(8) == 255
    assert num_steps(8, is_symmetric=True) == 255
    assert num_steps(8, is_symmetric=True, strict_symmetric=True) == 254
    assert num_steps(8, strict_symmetric=True) == 255  # strict needs symmetric
    assert num_steps(2) == 3
    assert num_steps(32) == 2**32 - 1
    for bw in range(2, 33):
        for sym in (False, True):
            for strict in (False, True):
                assert num_steps(bw, sym, strict) == ref.num_steps(
                    bw, sym, strict
                )


def test_round_half_away_from_zero_examples():
    x = tf.constant(
        [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 3.0, -0.0]
    )
    np.testing.assert_array_equal(
        round_half_away_from_zero(x).numpy(), [1, 2, 3, -1, -2, -3, 0, 0, 3, 0]
    )
    x64 = tf.constant(
        [0.49999999999999994, -0.49999999999999994, 4503599627370495.5],
        tf.float64,
    )
    np.testing.assert_array_equal(
        round_half_away_from_zero(x64).numpy(), [0.0, 0.0, 4503599627370496.0]
    )


@FAST
@given(
    ints=st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=20),
    floats=st.lists(
        st.floats(-1e9, 1e9, width=32, **_FLOAT),
        min_size=1,
        max_size=20,
    ),
)
def test_round_half_away_from_zero_matches_std_round(ints, floats):
    halves = np.array(ints, dtype=np.float64) + 0.5
    values64 = np.concatenate([halves, -halves, np.array(floats, np.float64)])
    values32 = values64.astype(np.float32)
    got64 = round_half_away_from_zero(tf.constant(values64)).numpy()
    np.testing.assert_array_equal(got64, ref.std_round(values64))
    got32 = round_half_away_from_zero(tf.constant(values32)).numpy()
    assert got32.dtype == np.float32
    np.testing.assert_array_equal(
        got32, ref.std_round(values32).astype(np.float32)
    )


def test_encoding_properties():
    enc = compute_encoding(-1.0, 1.0, 8, is_symmetric=True)
    assert enc.scale == enc.delta
    assert not enc.is_float and not enc.is_per_channel and enc.num_channels == 1
    assert "offset=-128" in repr(enc)
    pc = compute_encoding([-1.0, -2.0, 0.0], [1.0, 2.0, 0.0], 4)
    assert pc.is_per_channel and pc.num_channels == 3
    assert "per-channel" in repr(pc)
    fp16 = float_encoding(16)
    assert isinstance(fp16, Encoding) and fp16.is_float and fp16.bitwidth == 16
    assert float_encoding().bitwidth == 16
    assert float_encoding(32).is_float


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize("bitwidth", [0, 1, 33, 64, -8, 8.0, "8", None, True])
def test_bad_bitwidth_raises(bitwidth):
    with pytest.raises(ValueError, match="bitwidth"):
        compute_encoding(-1.0, 1.0, bitwidth)
    with pytest.raises(ValueError, match="bitwidth"):
        num_steps(bitwidth)
    with pytest.raises(ValueError, match="bitwidth"):
        grid_from_range(tf.constant(-1.0), tf.constant(1.0), bitwidth)


def test_numpy_integer_bitwidth_is_accepted():
    enc = compute_encoding(-1.0, 1.0, np.int64(8))
    assert enc.bitwidth == 8 and type(enc.bitwidth) is int


def test_min_above_max_raises():
    with pytest.raises(ValueError, match="encoding_min"):
        compute_encoding(1.0, -1.0, 8)
    with pytest.raises(ValueError, match="encoding_min"):
        compute_encoding([0.0, 2.0], [1.0, 1.0], 8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_range_raises(bad):
    with pytest.raises(ValueError, match="encoding_min"):
        compute_encoding(bad, 1.0, 8)
    with pytest.raises(ValueError, match="encoding_max"):
        compute_encoding(-1.0, bad, 8)
    with pytest.raises(ValueError, match="encoding_max"):
        compute_encoding([-1.0, -1.0], [1.0, bad], 8)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="encoding_min"):
        compute_encoding([-1.0, -1.0], [1.0, 1.0, 1.0], 8)
    with pytest.raises(ValueError, match="encoding_min"):
        compute_encoding(np.zeros((2, 2)), np.ones((2, 2)), 8)


@pytest.mark.parametrize("bitwidth", [12, 4, 0, 64, "16"])
def test_float_encoding_rejects_non_float_bitwidth(bitwidth):
    with pytest.raises(ValueError, match="bitwidth"):
        float_encoding(bitwidth)


def test_reference_model_reproduces_doc_example():
    # The numpy model itself reproduces the reference doc's numbers.
    expected = ref.compute_encoding(-0.5, 1.3, 8)
    assert float(expected.offset) == -71.0
    assert round(float(expected.min), 6) == -0.501176
    assert round(float(expected.max), 6) == 1.298824
