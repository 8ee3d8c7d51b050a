"""TF fake-quant ops carrying AIMET grids, checked against numpy."""

import numpy as np
import pytest
import tensorflow as tf

from aimet_keras.export import deployment
from aimet_keras.quant import compute_encoding


def numpy_grid(x, encoding, axis=None):
    """AIMET's quantize-dequantize in numpy (independent of the code)."""
    delta = np.asarray(encoding.delta, np.float64)
    offset = np.asarray(encoding.offset, np.float64)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        delta, offset = delta.reshape(shape), offset.reshape(shape)
    level = np.clip(np.floor(x / delta - offset + 0.5), 0, encoding.num_steps)
    return (level + offset) * delta


@pytest.mark.parametrize(
    "lo, hi, symmetric, strict",
    [
        (-0.7, 2.3, False, False),
        (-1.0, 1.0, True, False),
        (-1.0, 1.0, True, True),
    ],
)
def test_per_tensor_fake_quant_is_aimets_grid(lo, hi, symmetric, strict):
    x = np.random.default_rng(0).uniform(-3, 3, 1000)
    encoding = compute_encoding(lo, hi, 8, symmetric, strict)
    got = deployment.fake_quant(
        tf.constant(x, tf.float32), encoding, narrow_range=strict
    ).numpy()
    np.testing.assert_allclose(got, numpy_grid(x, encoding), atol=1e-5)


def test_per_channel_on_a_middle_axis_pair():
    """DepthwiseConv2D kernels (H, W, C, M): channels are C*M."""
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 4, 2))
    peaks = np.abs(kernel).reshape(9, 8).max(0)
    encoding = compute_encoding(-peaks, peaks, 8, is_symmetric=True)
    got = deployment.fake_quant(
        tf.constant(kernel, tf.float32),
        encoding,
        axis=(-2, -1),
        narrow_range=True,
    ).numpy()
    expected = numpy_grid(kernel.reshape(9, 8), encoding, axis=1)
    np.testing.assert_allclose(got.reshape(9, 8), expected, atol=1e-5)


def test_per_channel_on_a_leading_axis():
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(5, 3, 3))
    peaks = np.abs(kernel).reshape(5, 9).max(1)
    encoding = compute_encoding(-peaks, peaks, 8, is_symmetric=True)
    got = deployment.fake_quant(
        tf.constant(kernel, tf.float32), encoding, axis=0, narrow_range=True
    ).numpy()
    np.testing.assert_allclose(
        got, numpy_grid(kernel, encoding, axis=0), atol=1e-5
    )


def test_a_4_bit_grid_in_an_8_bit_container_keeps_every_level():
    encoding = compute_encoding(-0.5, 1.0, 4)
    lo, hi = deployment.fake_quant_range(encoding, 8, narrow_range=False)
    step = (hi - lo) / 255
    assert step == pytest.approx(float(encoding.delta), rel=1e-6)
    levels = float(encoding.min) + np.arange(16) * float(encoding.delta)
    on_wide_grid = (levels - lo) / step
    np.testing.assert_allclose(on_wide_grid, np.round(on_wide_grid), atol=1e-4)
    assert lo <= levels.min() and levels.max() <= hi


def test_zero_centred_keeps_the_step():
    encoding = compute_encoding(0.0, 2.0, 8)
    wide = deployment.zero_centred(encoding, 16)
    assert float(wide.delta) == pytest.approx(float(encoding.delta))
    assert float(wide.min) < 0 < float(wide.max)
