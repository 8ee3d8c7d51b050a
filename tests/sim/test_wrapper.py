"""QuantizationWrapper: float equivalence, quantized math, state, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras.quant import quantize_dequantize
from aimet_keras.sim import QuantizationWrapper
from aimet_keras.sim import TensorQuantizer
from aimet_keras.sim import weight_key

RNG = np.random.default_rng(0)
IMAGES = RNG.standard_normal((4, 8, 8, 3)).astype("float32")
TOKENS = RNG.standard_normal((4, 6, 8)).astype("float32")

# (layer factory, inputs): one row per layer type the wrapper must carry.
LAYERS = {
    "Conv2D": (lambda: keras.layers.Conv2D(4, 3), [IMAGES]),
    "DepthwiseConv2D": (lambda: keras.layers.DepthwiseConv2D(3), [IMAGES]),
    "Conv2DTranspose": (lambda: keras.layers.Conv2DTranspose(2, 3), [IMAGES]),
    "Dense": (lambda: keras.layers.Dense(5), [TOKENS]),
    "BatchNormalization": (keras.layers.BatchNormalization, [IMAGES]),
    "LayerNormalization": (keras.layers.LayerNormalization, [TOKENS]),
    "Add": (keras.layers.Add, [[IMAGES, IMAGES * 2.0]]),
    "Concatenate": (keras.layers.Concatenate, [[TOKENS, TOKENS]]),
    "MultiHeadAttention": (
        lambda: keras.layers.MultiHeadAttention(2, 4),
        [TOKENS, TOKENS],
    ),
}


def _built(factory, args):
    layer = factory()
    layer(*args)  # builds with every argument's shape
    return layer


def _wrap(layer, args, make_quantizer):
    num_inputs = len(keras.tree.flatten(args))
    num_outputs = len(keras.tree.flatten(layer(*args)))
    return QuantizationWrapper(
        layer,
        [make_quantizer() for _ in range(num_inputs)],
        [make_quantizer() for _ in range(num_outputs)],
        {
            weight_key(layer, w): make_quantizer()
            for w in layer.trainable_weights
        },
    )


def _calibrate(wrapper, args):
    for quantizer in wrapper.quantizers:
        quantizer.observing = True
    wrapper(*args)
    for quantizer in wrapper.quantizers:
        quantizer.compute_encoding()
        quantizer.observing = False


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_disabled_wrapper_equals_the_layer(name):
    factory, args = LAYERS[name]
    layer = _built(factory, args)
    wrapper = _wrap(layer, args, lambda: TensorQuantizer(enabled=False))
    np.testing.assert_array_equal(
        keras.tree.flatten(wrapper(*args))[0].numpy(),
        keras.tree.flatten(layer(*args))[0].numpy(),
    )
    assert wrapper.name == layer.name


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_calibrated_wrapper_stays_close_to_float(name):
    factory, args = LAYERS[name]
    layer = _built(factory, args)
    wrapper = _wrap(layer, args, lambda: TensorQuantizer(bitwidth=8))
    _calibrate(wrapper, args)
    quantized = keras.tree.flatten(wrapper(*args))[0].numpy()
    reference = keras.tree.flatten(layer(*args))[0].numpy()
    assert not np.array_equal(quantized, reference)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(quantized, reference, atol=0.05 * scale)


def test_dense_math_is_quantized_inputs_weights_and_outputs():
    layer = _built(lambda: keras.layers.Dense(3), [TOKENS])
    wrapper = _wrap(layer, [TOKENS], lambda: TensorQuantizer(bitwidth=4))
    _calibrate(wrapper, [TOKENS])
    (q_in,), (q_out,) = wrapper.input_quantizers, wrapper.output_quantizers
    q_kernel = wrapper.param_quantizers["kernel"]
    q_bias = wrapper.param_quantizers["bias"]
    x = quantize_dequantize(TOKENS, q_in.encoding).numpy()
    kernel = quantize_dequantize(layer.kernel, q_kernel.encoding).numpy()
    bias = quantize_dequantize(layer.bias, q_bias.encoding).numpy()
    want = quantize_dequantize(x @ kernel + bias, q_out.encoding).numpy()
    np.testing.assert_allclose(wrapper(TOKENS).numpy(), want, atol=1e-5)
    # The float weights themselves are untouched.
    assert not np.array_equal(layer.kernel.numpy(), kernel)


def test_batch_norm_statistics_update_in_training():
    layer = _built(keras.layers.BatchNormalization, [IMAGES])
    wrapper = _wrap(layer, [IMAGES], lambda: TensorQuantizer(bitwidth=8))
    _calibrate(wrapper, [IMAGES])
    before = layer.moving_mean.numpy().copy()
    wrapper(IMAGES, training=True)
    assert not np.array_equal(layer.moving_mean.numpy(), before)
    frozen = layer.moving_mean.numpy().copy()
    wrapper(IMAGES, training=False)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), frozen)


def test_gradients_reach_float_weights_and_xla_matches():
    layer = _built(lambda: keras.layers.Conv2D(4, 3), [IMAGES])
    wrapper = _wrap(layer, [IMAGES], lambda: TensorQuantizer(bitwidth=8))
    _calibrate(wrapper, [IMAGES])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(wrapper(IMAGES) ** 2)
    grads = tape.gradient(loss, [layer.kernel, layer.bias])
    assert all(
        g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads
    )
    compiled = tf.function(wrapper.__call__, jit_compile=True)
    np.testing.assert_allclose(
        compiled(IMAGES).numpy(), wrapper(IMAGES).numpy(), atol=1e-5
    )


def test_functional_model_save_and_load(tmp_path):
    inputs = keras.Input((6, 8))
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    outputs = keras.layers.Dense(3, name="dense")(attended)
    model = keras.Model(inputs, outputs)
    original_weights = [w.copy() for w in model.get_weights()]

    def wrap(layer):
        copy = layer.__class__.from_config(layer.get_config())
        copy.build_from_config(layer.get_build_config())
        copy.set_weights(layer.get_weights())
        num_inputs = (
            2 if isinstance(layer, keras.layers.MultiHeadAttention) else 1
        )
        return _wrap(
            copy, [TOKENS] * num_inputs, lambda: TensorQuantizer(bitwidth=8)
        )

    sim = keras.models.clone_model(model, clone_function=wrap)
    for layer in sim.layers[1:]:
        for quantizer in layer.quantizers:
            quantizer.observing = True
    sim(TOKENS)
    for layer in sim.layers[1:]:
        for quantizer in layer.quantizers:
            quantizer.compute_encoding()
            quantizer.observing = False
    want = sim(TOKENS).numpy()
    np.testing.assert_allclose(want, model(TOKENS).numpy(), atol=0.1)
    path = tmp_path / "sim.keras"
    sim.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("dense"), QuantizationWrapper)
    np.testing.assert_array_equal(loaded(TOKENS).numpy(), want)
    # The caller's model is untouched by wrapping and calibrating.
    assert not any(isinstance(x, QuantizationWrapper) for x in model.layers)
    for before, after in zip(original_weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match="'late'.*not built"):
        QuantizationWrapper(keras.layers.Dense(2, name="late"))
    dense = _built(lambda: keras.layers.Dense(2, name="d"), [TOKENS])
    with pytest.raises(ValueError, match="'d' has no weight 'gamma'"):
        QuantizationWrapper(
            dense, param_quantizers={"gamma": TensorQuantizer()}
        )
    wrapper = QuantizationWrapper(dense, [], [TensorQuantizer()])
    with pytest.raises(ValueError, match="d: the layer has 1 input tensor"):
        wrapper(TOKENS)
