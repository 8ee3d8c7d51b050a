"""Every layer the issue lists, simulated: quantizers where AIMET puts them,
the float model when all are off, outputs close to float when calibrated."""

import keras
import numpy as np
import pytest

from aimet_keras.sim import QuantizationSimModel

L = keras.layers
ops = keras.ops
IMAGE, TOKENS, VOLUME = (8, 8, 4), (6, 8), (4, 4, 4, 2)

# name: (input shape, build(inputs) -> outputs, quantized weight keys)
LAYERS = {
    "Conv1D": (TOKENS, lambda x: L.Conv1D(4, 3)(x), {"kernel"}),
    "Conv2D": (IMAGE, lambda x: L.Conv2D(4, 3)(x), {"kernel"}),
    "Conv3D": (VOLUME, lambda x: L.Conv3D(3, 2)(x), {"kernel"}),
    "DepthwiseConv2D": (IMAGE, lambda x: L.DepthwiseConv2D(3)(x), {"kernel"}),
    "SeparableConv2D": (
        IMAGE,
        lambda x: L.SeparableConv2D(4, 3)(x),
        {"depthwise_kernel", "pointwise_kernel"},
    ),
    "Conv2DTranspose": (
        IMAGE,
        lambda x: L.Conv2DTranspose(3, 3)(x),
        {"kernel"},
    ),
    "Dense": (TOKENS, lambda x: L.Dense(5)(x), {"kernel"}),
    "EinsumDense": (
        TOKENS,
        lambda x: L.EinsumDense("abc,cd->abd", output_shape=(None, 5))(x),
        {"kernel"},
    ),
    # After a ReLU: a BN right after the Dense would pair with it (AIMET
    # leaves a paired BN's parameters float, for folding).
    "BatchNormalization": (
        IMAGE,
        lambda x: L.BatchNormalization()(L.ReLU()(x)),
        {"gamma"},
    ),
    "LayerNormalization": (
        TOKENS,
        lambda x: L.LayerNormalization()(x),
        {"gamma"},
    ),
    "GroupNormalization": (
        IMAGE,
        lambda x: L.GroupNormalization(groups=2)(x),
        {"gamma"},
    ),
    "MultiHeadAttention": (
        TOKENS,
        lambda x: L.MultiHeadAttention(2, 4)(x, x),
        {
            "query/kernel",
            "key/kernel",
            "value/kernel",
            "attention_output/kernel",
        },
    ),
    "ReLU": (IMAGE, lambda x: L.ReLU()(x), set()),
    "ReLU6": (IMAGE, lambda x: L.ReLU(max_value=6.0)(x), set()),
    "PReLU": (IMAGE, lambda x: L.PReLU()(x), {"alpha"}),
    "LeakyReLU": (IMAGE, lambda x: L.LeakyReLU()(x), set()),
    "GELU": (TOKENS, lambda x: L.Activation("gelu")(x), set()),
    "swish": (TOKENS, lambda x: L.Activation("swish")(x), set()),
    "sigmoid": (TOKENS, lambda x: L.Activation("sigmoid")(x), set()),
    "tanh": (TOKENS, lambda x: L.Activation("tanh")(x), set()),
    "Softmax": (TOKENS, lambda x: L.Softmax()(x), set()),
    "Add": (IMAGE, lambda x: L.Add()([x, L.ReLU()(x)]), set()),
    "Subtract": (IMAGE, lambda x: L.Subtract()([x, L.ReLU()(x)]), set()),
    "Multiply": (IMAGE, lambda x: L.Multiply()([x, L.ReLU()(x)]), set()),
    "Concatenate": (IMAGE, lambda x: L.Concatenate()([x, L.ReLU()(x)]), set()),
    "MaxPooling2D": (IMAGE, lambda x: L.MaxPooling2D()(x), set()),
    "AveragePooling2D": (IMAGE, lambda x: L.AveragePooling2D(2)(x), set()),
    "GlobalAveragePooling2D": (
        IMAGE,
        lambda x: L.GlobalAveragePooling2D()(x),
        set(),
    ),
    "Reshape": (IMAGE, lambda x: L.Reshape((16, 16))(x), set()),
    "Flatten": (IMAGE, lambda x: L.Flatten()(x), set()),
    "Permute": (IMAGE, lambda x: L.Permute((3, 1, 2))(x), set()),
    "UpSampling2D": (IMAGE, lambda x: L.UpSampling2D()(x), set()),
    "ZeroPadding2D": (IMAGE, lambda x: L.ZeroPadding2D()(x), set()),
    "Dropout": (IMAGE, lambda x: L.Dropout(0.5)(x), set()),
    "Rescaling": (IMAGE, lambda x: L.Rescaling(0.5, offset=0.1)(x), set()),
    "Normalization": (
        IMAGE,
        lambda x: L.Normalization(mean=0.5, variance=2.0)(x),
        set(),
    ),
    "keras.ops": (
        TOKENS,
        lambda x: ops.softmax(ops.matmul(x, ops.transpose(x, (0, 2, 1)))),
        set(),
    ),
}


def _model(name):
    shape, build, _ = LAYERS[name]
    inputs = keras.Input(shape)
    # A Dense first, so every case has a quantized producer to follow.
    hidden = L.Dense(shape[-1], name="first")(inputs)
    return keras.Model(inputs, build(hidden))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_is_simulated(name):
    model = _model(name)
    shape = LAYERS[name][0]
    data = np.random.default_rng(0).normal(size=(32, *shape)).astype("float32")
    sim = QuantizationSimModel(model, strict=True)
    sim.compute_encodings(data)
    wrappers = [w for w in sim.quant_wrappers() if w.name != "first"]
    quantized = {
        key
        for w in wrappers
        for key, q in w.param_quantizers.items()
        if q.enabled
    }
    assert quantized == LAYERS[name][2]
    # Calibration reached every enabled quantizer.
    for wrapper in sim.quant_wrappers():
        for quantizer in wrapper.quantizers:
            assert quantizer.is_initialized or not quantizer.enabled
    float_out = model.predict(data, verbose=0)
    sim_out = sim.model.predict(data, verbose=0)
    scale = np.abs(float_out).max() + 1e-6
    assert np.abs(sim_out - float_out).max() <= 0.1 * scale
    for wrapper in sim.quant_wrappers():
        for quantizer in wrapper.quantizers:
            quantizer.enabled = False
    sim._retrace()
    np.testing.assert_allclose(
        sim.model.predict(data, verbose=0), float_out, rtol=1e-5, atol=1e-5
    )


def test_embedding_and_integer_inputs():
    tokens = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 4, name="embed")(tokens)
    model = keras.Model(tokens, L.GlobalAveragePooling1D()(x))
    sim = QuantizationSimModel(model, strict=True)
    ids = np.random.default_rng(0).integers(0, 20, (16, 6)).astype("int32")
    sim.compute_encodings(ids)
    embed = sim.model.get_layer("embed")
    assert embed.param_quantizers["embeddings"].enabled
    assert not embed.input_quantizers[0].enabled
    np.testing.assert_allclose(
        sim.model.predict(ids, verbose=0),
        model.predict(ids, verbose=0),
        atol=0.02,
    )
