"""TensorQuantizer: modes, encodings, saving and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras.quant import compute_encoding
from aimet_keras.quant import observers
from aimet_keras.quant import quantize_dequantize
from aimet_keras.sim import TensorQuantizer

RNG = np.random.default_rng(0)
ACTIVATIONS = RNG.standard_normal((8, 6, 6, 4)).astype("float32") * 2.0
KERNEL = RNG.standard_normal((3, 3, 4, 5)).astype("float32")


def _calibrated(x, **kwargs):
    quantizer = TensorQuantizer(**kwargs)
    quantizer.observing = True
    np.testing.assert_array_equal(quantizer(x).numpy(), x)  # pass-through
    quantizer.compute_encoding()
    quantizer.observing = False
    return quantizer


@pytest.mark.parametrize("scheme", ["tf", "tf_enhanced", "percentile"])
@pytest.mark.parametrize("axis,x", [(None, ACTIVATIONS), (-1, KERNEL)])
def test_calibrated_quantizer_applies_the_observers_grid(scheme, axis, x):
    quantizer = _calibrated(
        x,
        bitwidth=4,
        is_symmetric=axis is not None,
        axis=axis,
        quant_scheme=scheme,
    )
    observer = observers.get(scheme, axis=axis)
    observer.update(x)
    expected = observer.compute_encoding(4, is_symmetric=axis is not None)
    np.testing.assert_allclose(
        quantizer.encoding.delta, expected.delta, rtol=1e-6
    )
    np.testing.assert_array_equal(quantizer.encoding.offset, expected.offset)
    np.testing.assert_allclose(
        quantizer(x).numpy(),
        quantize_dequantize(x, expected, axis=axis).numpy(),
        atol=1e-6,
    )


def test_pass_through_until_encoded_and_when_disabled():
    quantizer = TensorQuantizer()
    np.testing.assert_array_equal(quantizer(ACTIVATIONS).numpy(), ACTIVATIONS)
    assert quantizer.encoding is None
    quantizer = _calibrated(ACTIVATIONS, bitwidth=4)
    assert not np.array_equal(quantizer(ACTIVATIONS).numpy(), ACTIVATIONS)
    quantizer.enabled = False
    np.testing.assert_array_equal(quantizer(ACTIVATIONS).numpy(), ACTIVATIONS)


@pytest.mark.parametrize(
    "settings",
    [
        dict(is_symmetric=False),
        dict(is_symmetric=True),
        dict(is_symmetric=True, strict_symmetric=True),
        dict(is_symmetric=True, unsigned_symmetric=True),
    ],
)
def test_set_encoding_round_trips(settings):
    lo = 0.0 if settings.get("unsigned_symmetric") else -0.7
    encoding = compute_encoding(lo, 1.3, 8, **settings)
    quantizer = TensorQuantizer(bitwidth=8, **settings)
    quantizer.build((4,))
    quantizer.set_encoding(encoding)
    got = quantizer.encoding
    assert int(got.offset) == int(encoding.offset)
    np.testing.assert_allclose(got.delta, encoding.delta, rtol=1e-6)
    x = np.linspace(-2, 2, 101).astype("float32")
    np.testing.assert_allclose(
        quantizer(x).numpy(),
        quantize_dequantize(x, encoding).numpy(),
        atol=1e-6,
    )


def test_set_encoding_errors_name_the_quantizer():
    quantizer = TensorQuantizer(bitwidth=8, axis=-1, name="conv_w")
    with pytest.raises(ValueError, match="conv_w is not built"):
        quantizer.set_encoding(compute_encoding(-1, 1, 8))
    quantizer.build(KERNEL.shape)
    with pytest.raises(ValueError, match="conv_w quantizes to 8-bit"):
        quantizer.set_encoding(compute_encoding(-np.ones(5), np.ones(5), 4))
    with pytest.raises(ValueError, match="conv_w has 5 channel"):
        quantizer.set_encoding(compute_encoding(-np.ones(3), np.ones(3), 8))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="bitwidth=1"):
        TensorQuantizer(bitwidth=1)
    with pytest.raises(ValueError, match="data_type='bf16'"):
        TensorQuantizer(data_type="bf16")
    with pytest.raises(ValueError, match="float data type"):
        TensorQuantizer(bitwidth=12, data_type="float")
    with pytest.raises(ValueError, match="exponent_bits=3"):
        TensorQuantizer(bitwidth=8, data_type="float", exponent_bits=3)
    with pytest.raises(ValueError, match="quant_scheme='best'"):
        TensorQuantizer(quant_scheme="best")


def test_float16_data_type():
    quantizer = TensorQuantizer(bitwidth=16, data_type="float")
    x = np.array([1.0 + 2.0**-12, 70000.0], "float32")
    with np.errstate(over="ignore"):  # 70000 overflows fp16 to inf
        want = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(quantizer(x).numpy(), want)


def test_xla_matches_eager_and_gradient_is_straight_through():
    quantizer = _calibrated(KERNEL, bitwidth=4, is_symmetric=True, axis=-1)
    compiled = tf.function(quantizer.__call__, jit_compile=True)
    np.testing.assert_array_equal(
        compiled(KERNEL).numpy(), quantizer(KERNEL).numpy()
    )
    x = tf.constant(KERNEL * 3.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
    grad = tape.gradient(y, x).numpy()
    encoding = quantizer.encoding
    inside = (x.numpy() >= encoding.min) & (x.numpy() <= encoding.max)
    np.testing.assert_array_equal(grad, inside.astype("float32"))


def test_range_learning_makes_the_range_trainable():
    fixed = _calibrated(ACTIVATIONS, bitwidth=8)
    assert fixed.trainable_weights == []
    learned = _calibrated(ACTIVATIONS, bitwidth=8, range_learning=True)
    assert {w.name for w in learned.trainable_weights} == {
        "encoding_min",
        "encoding_max",
    }
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(learned(ACTIVATIONS * 4.0))
    grads = tape.gradient(loss, learned.trainable_weights)
    assert all(g is not None and float(tf.abs(g)) > 0 for g in grads)


def test_a_learned_range_that_crossed_gives_the_grid_calls_use():
    # Large range-learning steps can push min above max (a QAT run with a
    # large learning rate did); the export must still read the encoding.
    learned = _calibrated(ACTIVATIONS, bitwidth=8, range_learning=True)
    learned.encoding_min.assign(0.13)
    learned.encoding_max.assign(-0.15)
    encoding = learned.encoding
    assert float(encoding.min) <= 0.0 < float(encoding.max)
    np.testing.assert_array_equal(
        learned(ACTIVATIONS).numpy(),
        quantize_dequantize(ACTIVATIONS, encoding).numpy(),
    )


def test_ties_away_from_zero_rounds_a_tie_down_below_the_signed_zero():
    quantizer = TensorQuantizer(bitwidth=8, ties_away_from_zero=True)
    quantizer.build((4,))
    quantizer.set_encoding(compute_encoding(-1.28, 1.27, bitwidth=8))
    step = float(quantizer.encoding.delta)
    # Levels -1.5, -0.5, 0.5 and 1.5 of the signed integer (zero point 0).
    ties = np.array([-1.5, -0.5, 0.5, 1.5], "float32") * step
    levels = quantizer(ties).numpy() / step
    np.testing.assert_allclose(levels, [-2, -1, 1, 2], atol=1e-4)
    plain = TensorQuantizer(bitwidth=8)
    plain.build((4,))
    plain.set_encoding(quantizer.encoding)
    np.testing.assert_allclose(
        plain(ties).numpy() / step, [-1, 0, 1, 2], atol=1e-4
    )


def test_config_round_trip_and_keras_file(tmp_path):
    quantizer = TensorQuantizer(
        bitwidth=6, is_symmetric=True, axis=-1, quant_scheme="tf", name="q"
    )
    clone = TensorQuantizer.from_config(quantizer.get_config())
    assert clone.get_config() == quantizer.get_config()

    inputs = keras.Input(KERNEL.shape[1:])
    outputs = TensorQuantizer(bitwidth=4, axis=-1, name="q")(inputs)
    model = keras.Model(inputs, outputs)
    layer = model.get_layer("q")
    layer.observing = True
    model(KERNEL)
    layer.compute_encoding()
    layer.observing = False
    want = model(KERNEL).numpy()
    path = tmp_path / "q.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.get_layer("q")
    assert restored.is_initialized
    np.testing.assert_array_equal(
        restored.encoding.offset, layer.encoding.offset
    )
    np.testing.assert_array_equal(loaded(KERNEL).numpy(), want)
