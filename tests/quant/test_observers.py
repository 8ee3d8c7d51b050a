"""Tests for the calibration observers (aimet_keras.quant.observers).

Expected values come from numpy on the raw data (min/max, np.histogram,
np.percentile) and from :func:`compute_encoding` on numpy ranges, never
from the observers themselves. Tensors are small: the machine is shared.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from aimet_keras.quant import compute_encoding
from aimet_keras.quant import observers as obs_lib
from aimet_keras.quant import quantize_dequantize

MinMax = obs_lib.MinMaxObserver
Sqnr = obs_lib.SqnrObserver
Percentile = obs_lib.PercentileObserver
Mse = obs_lib.MseObserver
ALL = [MinMax, Sqnr, Percentile, Mse]
HISTOGRAM = [Sqnr, Percentile, Mse]
NUM_BINS = 512

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _ids(classes):
    return [c.__name__ for c in classes]


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def _assert_same_encoding(actual, expected, rtol=0.0, atol=0.0):
    assert actual.bitwidth == expected.bitwidth
    assert actual.is_symmetric == expected.is_symmetric
    assert np.shape(actual.delta) == np.shape(expected.delta)
    np.testing.assert_array_equal(actual.offset, expected.offset)
    for field in ("min", "max", "delta"):
        np.testing.assert_allclose(
            getattr(actual, field),
            getattr(expected, field),
            rtol=rtol,
            atol=atol,
            err_msg=field,
        )


def _assert_valid_encoding(enc):
    for field in ("min", "max", "delta", "offset"):
        assert np.all(np.isfinite(getattr(enc, field))), field
    assert np.all(enc.delta > 0)
    assert np.all(enc.min <= 0) and np.all(enc.max >= 0)


def _weights(observer):
    return [np.array(w) for w in observer.get_weights()]


def _quant_mse(x, enc):
    y = quantize_dequantize(tf.constant(x), enc).numpy()
    return float(np.mean((y.astype(np.float64) - x) ** 2))


def _assert_binned(values, edges, counts, tol):
    """``counts`` is np.histogram(values, edges), up to values near edges.

    A value may sit in the bin next to numpy's only if it is within ``tol``
    of the edge between them.
    """
    values = np.asarray(values, np.float64).ravel()
    assert counts.sum() == values.size, "mass not conserved"
    expected, _ = np.histogram(values, edges)
    assert expected.sum() == values.size, "a value lies outside the edges"
    diff = counts - expected
    if not diff.any():
        return
    inner = edges[1:-1]
    nearest = np.abs(values[:, None] - inner[None, :]).min(axis=1)
    near_edges = np.flatnonzero(
        np.abs(values[:, None] - inner[None, :]).min(axis=0) <= tol
    )
    num_near = int((nearest <= tol).sum())
    assert np.abs(diff).sum() <= 2 * num_near, (
        f"bins {np.flatnonzero(diff)[:10]} differ from np.histogram by "
        f"{diff[diff != 0][:10]}; only {num_near} value(s) near an edge"
    )
    # Every differing bin touches an inner edge (index e + 1) with a value
    # within tol of it.
    allowed = set(near_edges.tolist()) | set((near_edges + 1).tolist())
    assert set(np.flatnonzero(diff).tolist()) <= allowed


# ---------------------------------------------------------------------------
# MinMaxObserver


@pytest.fixture(scope="module")
def minmax_for_hypothesis():
    return MinMax()


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    scale=st.sampled_from([1e-3, 1.0, 300.0]),
    offset=st.floats(-5, 5),
)
def test_minmax_streaming_equals_one_pass_per_tensor(
    minmax_for_hypothesis, seed, sizes, scale, offset
):
    rng = np.random.default_rng(seed)
    batches = [
        _f32(rng.standard_normal((n, 3)) * scale + offset) for n in sizes
    ]
    whole = np.concatenate(batches)
    observer = minmax_for_hypothesis  # reused (reset) to keep the test fast
    observer.reset()
    for b in batches:
        observer.update(b)
    lo, hi = observer.observed_range()
    assert lo.shape == hi.shape == (1,)
    assert lo[0] == whole.min() and hi[0] == whole.max()
    for bits, sym in [(8, False), (4, True)]:
        _assert_same_encoding(
            observer.compute_encoding(bits, is_symmetric=sym),
            compute_encoding(whole.min(), whole.max(), bits, sym),
        )


@pytest.mark.parametrize("axis", [-1, (-2, -1)], ids=["last", "depthwise"])
def test_minmax_streaming_equals_one_pass_per_channel(axis):
    rng = np.random.default_rng(1)
    # DepthwiseConv2D kernels (H, W, I, M) = (3, 3, 2, 3); channel spreads
    # differ so each channel has its own range.
    spread = np.arange(1, 7, dtype=np.float64).reshape(2, 3)
    batches = [
        _f32(rng.standard_normal((3, 3, 2, 3)) * spread * (k + 1) - k)
        for k in range(3)
    ]
    whole = np.concatenate(batches)  # one pass over all kernels
    channels = 6 if axis == (-2, -1) else 3
    per_channel = whole.reshape(-1, channels)  # flattened in order (I, M)
    observer = MinMax(axis=axis)
    for b in batches:
        observer.update(b)
    lo, hi = observer.observed_range()
    np.testing.assert_array_equal(lo, per_channel.min(axis=0))
    np.testing.assert_array_equal(hi, per_channel.max(axis=0))
    for bits, sym in [(8, False), (8, True), (4, False)]:
        enc = observer.compute_encoding(bits, is_symmetric=sym)
        assert enc.is_per_channel and enc.num_channels == channels
        _assert_same_encoding(
            enc,
            compute_encoding(
                np.min(per_channel, 0), np.max(per_channel, 0), bits, sym
            ),
        )
    # The encoding really is in (I, M) order: quantizing the kernel with it
    # keeps every value within half a step of itself.
    enc = observer.compute_encoding(8)
    y = quantize_dequantize(tf.constant(whole), enc, axis=axis).numpy()
    delta = np.broadcast_to(
        enc.delta.reshape((2, 3) if channels == 6 else (3,)), whole.shape
    )
    assert np.all(np.abs(y - whole) <= delta / 2 + 1e-6)


# ---------------------------------------------------------------------------
# Histograms


@pytest.fixture(scope="module")
def sqnr_for_hypothesis():
    return Sqnr()


def _edge_free_batch(rng, lo, hi, edges, size):
    """``size`` float32 values in [lo, hi] holding lo and hi, none near an
    inner edge (within 1e-3 bin widths) except possibly lo and hi."""
    width = edges[1] - edges[0]
    values = _f32(rng.uniform(lo, hi, size)).astype(np.float64)
    position = (values - edges[0]) / width
    frac = position - np.floor(position)
    near = (frac < 1e-3) | (frac > 1 - 1e-3)
    values[near] = lo
    values[:2] = [lo, hi]
    rng.shuffle(values)
    return _f32(values)


def _check_growing_histogram(observer, ranges, seed, size=64):
    """Feeds batches with the given (min, max) and checks the histogram."""
    rng = np.random.default_rng(seed)
    # The bin edges depend only on each batch's min and max: find them with
    # batches holding just those, then build data that avoids them.
    observer.reset()
    for lo, hi in ranges:
        observer.update(_f32(np.resize([lo, hi], size)))
    probe_edges, _ = observer.histogram_numpy()
    observer.reset()
    seen = []
    for lo, hi in ranges:
        batch = _edge_free_batch(rng, lo, hi, probe_edges[0], size)
        observer.update(batch)
        seen.append(batch)
        data = np.concatenate(seen)
        edges, counts = observer.histogram_numpy()
        assert edges.shape == (1, NUM_BINS + 1)
        assert counts.shape == (1, NUM_BINS)
        assert counts.sum() == data.size  # total mass = values seen
        lo_seen, hi_seen = observer.observed_range()
        assert lo_seen[0] == data.min() and hi_seen[0] == data.max()
        tol = 1e-6 * max(1.0, np.abs(edges).max())
        _assert_binned(data, edges[0], counts[0], tol)
    np.testing.assert_array_equal(edges, probe_edges)
    return edges[0]


@pytest.mark.parametrize("cls", HISTOGRAM, ids=_ids(HISTOGRAM))
def test_histogram_grows_without_dropping_values(cls):
    ranges = [
        (-0.7, 1.3),  # first batch
        (-3.1, 0.2),  # below the first range
        (0.1, 5.9),  # above
        (-11.3, 13.7),  # both
        (-0.5, 0.5),  # inside
    ]
    edges = _check_growing_histogram(cls(), ranges, seed=3)
    assert edges[0] <= -11.3 and edges[-1] >= 13.7


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    first_lo=st.floats(-4, 2),
    first_span=st.floats(0.01, 6),
    below=st.floats(0.001, 30),
    above=st.floats(0.001, 30),
    last=st.tuples(st.floats(-40, 40), st.floats(0, 60)),
)
def test_histogram_grows_exactly_property(
    sqnr_for_hypothesis, seed, first_lo, first_span, below, above, last
):
    first_lo = float(_f32(first_lo))
    first_hi = float(_f32(first_lo + first_span))
    ranges = [
        (first_lo, first_hi),
        (first_lo - below, first_hi),
        (first_lo, first_hi + above),
        (last[0], last[0] + last[1]),
    ]
    # XLA on CPU flushes float32 subnormals to zero, so the observed min or
    # max of a subnormal is 0; keep them out.
    ranges = [
        tuple(float(_f32(v)) if abs(v) >= 1.2e-38 else 0.0 for v in r)
        for r in ranges
    ]
    _check_growing_histogram(sqnr_for_hypothesis, ranges, seed)


def test_histogram_per_channel_grows_independently():
    rng = np.random.default_rng(5)
    observer = Sqnr(axis=-1)
    b1 = _f32(rng.uniform(-1, 1, (100, 3)))
    # Channel 0 grows below, channel 1 above, channel 2 stays inside.
    b2 = _f32(rng.uniform(-1, 1, (100, 3)) * [[7.0, 1.0, 0.5]] - [[3, 0, 0]])
    b3 = _f32(rng.uniform(-1, 1, (100, 3)) * [[1.0, 9.0, 0.5]] + [[0, 6, 0]])
    for b in (b1, b2, b3):
        observer.update(b)
    data = np.concatenate([b1, b2, b3])
    edges, counts = observer.histogram_numpy()
    assert edges.shape == (3, NUM_BINS + 1) and counts.shape == (3, NUM_BINS)
    for c in range(3):
        assert counts[c].sum() == data.shape[0]
        _assert_binned(data[:, c], edges[c], counts[c], 1e-6 * 20)
    assert edges[0, 0] < -1 and edges[1, -1] > 1
    # Channel 2 never grew: its edges are still the first batch's range.
    np.testing.assert_allclose(
        edges[2, [0, -1]], [b1[:, 2].min(), b1[:, 2].max()], rtol=1e-12
    )


# ---------------------------------------------------------------------------
# Per channel = per tensor on each channel


def _channel_data(seed):
    rng = np.random.default_rng(seed)
    first = np.stack(
        [
            rng.standard_normal(300),
            5 * rng.standard_normal(300) + 2,
            rng.exponential(1.0, 300) * (rng.random(300) < 0.5),  # ReLU-like
        ],
        axis=1,
    )
    # A later batch widens the channels by different amounts.
    second = first[::-1] * [[4.0, 0.5, 3.0]] + [[-1.0, 0.0, 0.0]]
    return [_f32(first), _f32(second)]


@pytest.mark.parametrize("cls", ALL, ids=_ids(ALL))
def test_per_channel_matches_per_tensor_on_each_channel(cls):
    batches = _channel_data(seed=7)
    kwargs = {"percentile": 99.0} if cls is Percentile else {}
    per_channel = cls(axis=-1, **kwargs)
    for b in batches:
        per_channel.update(b)
    configs = [(8, False), (4, True)]
    encodings = {
        cfg: per_channel.compute_encoding(cfg[0], is_symmetric=cfg[1])
        for cfg in configs
    }
    single = cls(**kwargs)
    for c in range(batches[0].shape[1]):
        single.reset()
        for b in batches:
            single.update(b[:, c])
        if cls in HISTOGRAM:
            edges, counts = per_channel.histogram_numpy()
            edges_c, counts_c = single.histogram_numpy()
            np.testing.assert_allclose(edges[c], edges_c[0], rtol=1e-12)
            np.testing.assert_array_equal(counts[c], counts_c[0])
        for (bits, sym), enc in encodings.items():
            expected = single.compute_encoding(bits, is_symmetric=sym)
            for field in ("min", "max", "delta"):
                np.testing.assert_allclose(
                    getattr(enc, field)[c],
                    getattr(expected, field),
                    rtol=1e-6,
                    err_msg=f"channel {c} {bits}-bit {field}",
                )
            assert enc.offset[c] == expected.offset


# ---------------------------------------------------------------------------
# Range choice: clipping, MSE, zeros


@pytest.fixture(scope="module")
def gaussian_observers():
    rng = np.random.default_rng(11)
    data = _f32(rng.standard_normal(8000))
    observers = {cls: cls() for cls in ALL}
    for observer in observers.values():
        for batch in np.split(data, 2):
            observer.update(batch)
    return data, observers


@pytest.mark.parametrize("sym", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("cls", [Sqnr, Mse], ids=["Sqnr", "Mse"])
def test_search_observers_clip_gaussian_tails_at_4_bits(
    gaussian_observers, cls, sym
):
    data, observers = gaussian_observers
    enc = observers[cls].compute_encoding(4, is_symmetric=sym)
    assert float(enc.max) < 0.85 * data.max()
    if sym:
        # The signed grid has one more level below zero than above.
        assert float(enc.min) == -float(enc.max) - float(enc.delta)
    else:
        # The asymmetric grid may move by half a step to put 0 on it; its
        # width does not move.
        assert float(enc.max - enc.min) < 0.85 * (data.max() - data.min())
        assert float(enc.min) > 0.85 * data.min()
    # ...and clipping pays: less error than the min/max grid.
    minmax = observers[MinMax].compute_encoding(4, is_symmetric=sym)
    assert _quant_mse(data, enc) < 0.8 * _quant_mse(data, minmax)


@pytest.mark.parametrize("sym", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("bits", [4, 8])
def test_mse_observer_has_least_quantization_error(
    gaussian_observers, bits, sym
):
    data, observers = gaussian_observers
    errors = {
        cls.__name__: _quant_mse(
            data, observers[cls].compute_encoding(bits, is_symmetric=sym)
        )
        for cls in ALL
    }
    for error in errors.values():
        assert errors["MseObserver"] <= 1.02 * error, errors


@pytest.fixture(scope="module")
def relu_observers():
    rng = np.random.default_rng(12)
    n = 6000
    data = rng.exponential(1.0, n) * (rng.random(n) >= 0.7)  # 70% zeros
    data = _f32(data)
    assert (data == 0).mean() > 0.65
    observers = {cls: cls() for cls in ALL}
    for observer in observers.values():
        for batch in np.split(data, 3):
            observer.update(batch)
    return data, observers


@pytest.mark.parametrize("cls", ALL, ids=_ids(ALL))
def test_zero_spike_stays_in_observed_range(relu_observers, cls):
    data, observers = relu_observers
    observer = observers[cls]
    lo, hi = observer.observed_range()
    assert lo[0] == 0.0 and hi[0] == data.max()
    for bits in (4, 8):
        enc = observer.compute_encoding(bits)
        _assert_valid_encoding(enc)
        assert float(enc.min) == 0.0
        assert 0.0 < float(enc.max) <= data.max() * (1 + 1e-7)
        # The zeros stay exact.
        assert quantize_dequantize(tf.zeros(3), enc).numpy().tolist() == [0] * 3
        sym = observer.compute_encoding(bits, is_symmetric=True)
        _assert_valid_encoding(sym)
        assert float(sym.max) <= data.max() * (1 + 1e-7)
        unsigned = observer.compute_encoding(
            bits, is_symmetric=True, unsigned_symmetric=True
        )
        _assert_valid_encoding(unsigned)
        assert float(unsigned.min) == 0.0
        assert float(unsigned.max) <= data.max() * (1 + 1e-7)


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_observer_best_on_zero_spike(relu_observers, bits):
    data, observers = relu_observers
    errors = {
        cls.__name__: _quant_mse(data, observers[cls].compute_encoding(bits))
        for cls in ALL
    }
    for error in errors.values():
        assert errors["MseObserver"] <= 1.02 * error, errors
    # The spike of zeros costs nothing, so it must not drag the range in:
    # at 8 bits the MSE range keeps most of the exponential tail.
    if bits == 8:
        mse_max = float(observers[Mse].compute_encoding(8).max)
        assert mse_max > 0.5 * data.max()


# ---------------------------------------------------------------------------
# PercentileObserver


def test_percentile_100_is_exact_min_max():
    rng = np.random.default_rng(13)
    data = _f32(rng.standard_normal(1000) * 3 + 0.5)
    observer = Percentile(percentile=100)
    for batch in np.split(data, 4):
        observer.update(batch)
    for bits, sym in [(8, False), (4, True)]:
        _assert_same_encoding(
            observer.compute_encoding(bits, is_symmetric=sym),
            compute_encoding(data.min(), data.max(), bits, sym),
        )


def test_percentile_99_on_arange():
    data = np.arange(10000, dtype=np.float32)
    observer = Percentile(percentile=99)
    observer.update(data)
    width = 9999.0 / NUM_BINS
    enc = observer.compute_encoding(8)
    assert float(enc.min) == 0.0  # the grid starts at 0: max is exact
    assert abs(float(enc.max) - np.percentile(data, 99)) <= width
    assert float(enc.max) < data.max()


def test_percentile_99_lower_tail():
    data = np.arange(-5000, 5000, dtype=np.float32)
    observer = Percentile(percentile=99)
    for batch in np.split(data, 2):  # the second half grows the range
        observer.update(batch)
    edges, _ = observer.histogram_numpy()
    width = edges[0, 1] - edges[0, 0]
    enc = observer.compute_encoding(16)  # fine grid: min/max barely nudged
    assert abs(float(enc.min) - np.percentile(data, 1)) <= width + enc.delta
    assert abs(float(enc.max) - np.percentile(data, 99)) <= width + enc.delta


@pytest.mark.parametrize("bad", [89, 89.99, 100.01, 101])
def test_percentile_out_of_range_rejected(bad):
    with pytest.raises(ValueError, match="percentile"):
        Percentile(percentile=bad)
    with pytest.raises(ValueError, match="percentile"):
        obs_lib.get("percentile", percentile=bad)


@pytest.mark.parametrize("good", [90, 99.99, 100])
def test_percentile_bounds_accepted(good):
    assert Percentile(percentile=good).percentile == good


# ---------------------------------------------------------------------------
# Degenerate data


@pytest.mark.parametrize("cls", ALL, ids=_ids(ALL))
def test_all_zero_tensor_and_channel(cls):
    observer = cls()
    observer.update(np.zeros((4, 5), np.float32))
    observer.update(np.zeros((4, 5), np.float32))
    expected = compute_encoding(0.0, 0.01, 8)
    enc = observer.compute_encoding(8)
    _assert_same_encoding(enc, expected, rtol=1e-12)
    assert float(enc.min) == 0.0 and abs(float(enc.max) - 0.01) < 1e-12
    _assert_valid_encoding(observer.compute_encoding(4, is_symmetric=True))

    rng = np.random.default_rng(14)
    data = _f32(rng.standard_normal((50, 2)))
    data[:, 1] = 0.0
    per_channel = cls(axis=-1)
    per_channel.update(data)
    for bits, sym in [(8, False), (4, True)]:
        enc = per_channel.compute_encoding(bits, is_symmetric=sym)
        _assert_valid_encoding(enc)
        zero = compute_encoding(0.0, 0.01, bits, sym)
        for field in ("min", "max", "delta", "offset"):
            np.testing.assert_allclose(
                getattr(enc, field)[1], getattr(zero, field), rtol=1e-12
            )
        assert enc.max[0] > 0.1


@pytest.mark.parametrize("cls", ALL, ids=_ids(ALL))
def test_constant_tensor(cls):
    observer = cls()
    for value in (5.0, -3.0, 1e-4):
        observer.reset()
        data = np.full((3, 7), value, np.float32)
        observer.update(data)
        observer.update(data)
        lo, hi = observer.observed_range()
        assert lo[0] == hi[0] == np.float32(value)
        for bits, sym in [(8, False), (4, True)]:
            enc = observer.compute_encoding(bits, is_symmetric=sym)
            _assert_valid_encoding(enc)
            y = quantize_dequantize(tf.constant(data), enc).numpy()
            assert np.all(np.isfinite(y))
            # A constant is never clipped away: it is within half a step.
            assert np.all(np.abs(y - data) <= float(enc.delta) / 2 + 1e-6)


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("cls", ALL, ids=_ids(ALL))
def test_non_finite_update_rejected_and_stats_unchanged(cls):
    observer = cls(axis=-1)
    rng = np.random.default_rng(15)
    # A first update with NaN records nothing.
    first = _f32(rng.standard_normal((10, 2)))
    first[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        observer.update(first)
    with pytest.raises(ValueError, match="no data"):
        observer.compute_encoding(8)

    observer.update(_f32(rng.standard_normal((10, 2))))
    before = _weights(observer)
    enc_before = observer.compute_encoding(4, is_symmetric=True)
    for bad in (np.nan, np.inf, -np.inf):
        # Values that would widen the range, and one bad value.
        batch = _f32(rng.standard_normal((10, 2)) * 100)
        batch[3, 1] = bad
        with pytest.raises(ValueError, match="NaN"):
            observer.update(batch)
        for a, b in zip(_weights(observer), before, strict=True):
            np.testing.assert_array_equal(a, b)
    _assert_same_encoding(
        observer.compute_encoding(4, is_symmetric=True), enc_before
    )


@pytest.mark.parametrize("cls", ALL, ids=_ids(ALL))
def test_bad_inputs_rejected(cls):
    observer = cls(axis=-1)
    with pytest.raises(ValueError, match="no data"):
        observer.compute_encoding(8)
    with pytest.raises(ValueError):
        observer.update(np.array([[1, 2]], np.int32))
    observer.update(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError):
        observer.update(np.array([[1, 2, 3]], np.int64))
    with pytest.raises(ValueError, match="channel"):
        observer.update(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError):
        observer.compute_encoding(1)
    assert int(observer.num_updates.numpy()) == 1

    observer.reset()
    with pytest.raises(ValueError, match="no data"):
        observer.compute_encoding(8)


def test_channel_count_checked_for_tuple_axis():
    depthwise = MinMax(axis=(-2, -1))
    depthwise.update(np.ones((3, 3, 2, 3), np.float32))
    with pytest.raises(ValueError, match="channel"):
        depthwise.update(np.ones((3, 3, 3, 3), np.float32))
    depthwise.update(np.ones((5, 1, 2, 3), np.float32))  # other axes vary
    assert int(depthwise.num_updates.numpy()) == 2


# ---------------------------------------------------------------------------
# Inside tf.function


@pytest.mark.parametrize(
    "cls, prebuilt",
    [(cls, False) for cls in ALL] + [(MinMax, True), (Sqnr, True)],
    ids=[c.__name__ + "-unbuilt" for c in ALL] + ["MinMax-built", "Sqnr-built"],
)
def test_update_inside_user_tf_function(cls, prebuilt):
    observer = cls(axis=-1)
    rng = np.random.default_rng(16)
    batches = [_f32(rng.standard_normal((8, 2)) * (k + 1)) for k in range(3)]
    seen = []
    if prebuilt:
        observer.update(batches[0])
        seen.append(batches[0])
        batches = batches[1:]

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def step(x):
        observer.update(x)
        return x * 2.0

    for b in batches:
        np.testing.assert_array_equal(step(tf.constant(b)).numpy(), 2 * b)
        seen.append(b)
        data = np.concatenate(seen)
        assert int(observer.num_updates.numpy()) == len(seen)
        lo, hi = observer.observed_range()
        np.testing.assert_array_equal(lo, data.min(axis=0))
        np.testing.assert_array_equal(hi, data.max(axis=0))
        if cls in HISTOGRAM:
            _, counts = observer.histogram_numpy()
            np.testing.assert_array_equal(counts.sum(axis=1), [len(data)] * 2)

    # Inside a traced function NaN trips an assertion; nothing is recorded.
    before = _weights(observer)
    bad = np.ones((4, 2), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError):
        step(tf.constant(bad))
    for a, b in zip(_weights(observer), before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# get / serialize


@pytest.mark.parametrize(
    "name, cls",
    [
        ("tf", MinMax),
        ("tf_enhanced", Sqnr),
        ("percentile", Percentile),
        ("mse", Mse),
        ("post_training_tf", MinMax),
        ("post_training_tf_enhanced", Sqnr),
        ("post_training_percentile", Percentile),
        ("training_range_learning_with_tf_init", MinMax),
        ("training_range_learning_with_tf_enhanced_init", Sqnr),
        ("TF_Enhanced", Sqnr),
    ],
)
def test_get_scheme_names(name, cls):
    observer = obs_lib.get(name)
    assert type(observer) is cls
    assert observer.axis is None
    assert type(obs_lib.get(name, axis=-1)).__name__ == cls.__name__
    assert obs_lib.get(name, axis=-1).axis == -1


def test_get_passes_kwargs_and_instances():
    observer = obs_lib.get("percentile", percentile=99.5, axis=[-2, -1])
    assert observer.percentile == 99.5 and observer.axis == (-2, -1)
    assert obs_lib.get(observer) is observer
    restored = obs_lib.get(obs_lib.serialize(observer))
    assert type(restored) is Percentile
    assert restored.percentile == 99.5 and restored.axis == (-2, -1)


@pytest.mark.parametrize("bad", ["entropy", "", "tf-enhanced", 3, None])
def test_get_unknown_scheme(bad):
    with pytest.raises(ValueError) as info:
        obs_lib.get(bad)
    message = str(info.value)
    for scheme in ("'tf'", "'tf_enhanced'", "'percentile'", "'mse'"):
        assert scheme in message


def _configured(cls):
    out = []
    for axis in (None, -1, (-2, -1)):
        kwargs = {"axis": axis}
        if cls is Percentile:
            kwargs["percentile"] = 99.5
        out.append(cls(**kwargs))
    return out


@pytest.mark.parametrize("cls", ALL, ids=_ids(ALL))
def test_config_round_trips(cls):
    for observer in _configured(cls):
        for restored in (
            cls.from_config(observer.get_config()),
            obs_lib.deserialize(obs_lib.serialize(observer)),
            # Through JSON, where tuples become lists.
            obs_lib.deserialize(
                json.loads(json.dumps(obs_lib.serialize(observer)))
            ),
        ):
            assert type(restored) is cls
            assert restored.axis == observer.axis
            assert restored.name == observer.name
            if cls is Percentile:
                assert restored.percentile == 99.5


def _fed(cls, axis, seed):
    rng = np.random.default_rng(seed)
    kwargs = {"axis": axis}
    if cls is Percentile:
        kwargs["percentile"] = 99.0
    observer = cls(**kwargs)
    shape = (5, 3, 1, 2)
    for k in range(2):
        observer.update(_f32(rng.standard_normal(shape) * (k + 1) + k))
    return observer


@pytest.mark.parametrize("cls", ALL, ids=_ids(ALL))
def test_serialize_then_set_weights_gives_same_encoding(cls):
    for axis in (None, (-2, -1)):
        observer = _fed(cls, axis, seed=17)
        config = json.loads(
            json.dumps(keras.saving.serialize_keras_object(observer))
        )
        restored = keras.saving.deserialize_keras_object(config)
        assert type(restored) is cls and restored.axis == observer.axis
        restored.set_weights(observer.get_weights())
        for a, b in zip(_weights(restored), _weights(observer), strict=True):
            np.testing.assert_array_equal(a, b)
        configs = [(4, True)] if axis else [(8, False), (4, True)]
        for bits, sym in configs:
            _assert_same_encoding(
                restored.compute_encoding(bits, is_symmetric=sym),
                observer.compute_encoding(bits, is_symmetric=sym),
            )


def test_observers_in_saved_functional_model(tmp_path):
    rng = np.random.default_rng(18)
    inputs = keras.Input((3,))
    first = Sqnr(axis=-1, name="act_in")
    second = Percentile(percentile=99.5, name="act_out")
    outputs = second(keras.layers.Dense(2, name="dense")(first(inputs)))
    model = keras.Model(inputs, outputs)

    data = _f32(rng.standard_normal((8, 3)))
    # The observers pass tensors through unchanged while calibrating.
    expected = model.get_layer("dense")(data).numpy()
    np.testing.assert_allclose(
        model.predict(data, batch_size=4, verbose=0), expected, rtol=1e-6
    )
    assert int(first.num_updates.numpy()) == 2
    _, counts = first.histogram_numpy()
    np.testing.assert_array_equal(counts.sum(axis=1), [8, 8, 8])
    lo, hi = first.observed_range()
    np.testing.assert_array_equal(lo, data.min(axis=0))
    np.testing.assert_array_equal(hi, data.max(axis=0))

    path = str(tmp_path / "calibrated.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for name, cls in (("act_in", Sqnr), ("act_out", Percentile)):
        original, restored = model.get_layer(name), loaded.get_layer(name)
        assert type(restored) is cls
        assert restored.axis == original.axis
        for a, b in zip(_weights(restored), _weights(original), strict=True):
            np.testing.assert_array_equal(a, b)
        for bits, sym in [(8, False), (4, True)]:
            _assert_same_encoding(
                restored.compute_encoding(bits, is_symmetric=sym),
                original.compute_encoding(bits, is_symmetric=sym),
            )
    assert loaded.get_layer("act_out").percentile == 99.5
    # The loaded model keeps calibrating.
    loaded(data * 10)
    restored = loaded.get_layer("act_in")
    assert int(restored.num_updates.numpy()) == 3
    np.testing.assert_array_equal(
        restored.observed_range()[1], 10 * data.max(axis=0)
    )
