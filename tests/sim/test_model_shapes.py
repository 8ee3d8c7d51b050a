"""QuantizationSimModel on every model shape: nested, shared, multi-I/O,
subclassed, keras.ops, custom layers."""

import keras
import numpy as np
import pytest

from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import QuantizationWrapper
from aimet_keras.sim import register_quantization_rule
from aimet_keras.sim import unregister_quantization_rule
from tests.model_shapes import nested_shared_multi_io

_RNG = np.random.default_rng(0)


def _data(*shape):
    return _RNG.normal(size=shape).astype("float32")


def _disable_all(sim):
    for wrapper in sim.quant_wrappers():
        for quantizer in wrapper.quantizers:
            quantizer.enabled = False
    sim._retrace()


def test_nested_shared_multi_io_and_ops(tmp_path):
    model = nested_shared_multi_io()
    before = [w.copy() for w in model.get_weights()]
    data = [_data(64, 8), _data(64, 8)]
    sim = QuantizationSimModel(model, quant_scheme="tf")
    sim.compute_encodings(data)
    names = [layer.name for layer in sim.model.layers]
    assert names.count("shared") == 1  # one wrapper, called twice
    assert {"inner_fc", "inner_relu", "fc"} <= set(names)
    kinds = {type(w.layer).__name__: w for w in sim.quant_wrappers()}
    # keras.ops calls are wrapped and quantized like layers.
    assert {"Add", "Softmax"} <= set(kinds)
    assert kinds["Add"].output_quantizers[0].is_initialized
    float_out = model.predict(data, verbose=0)
    sim_out = sim.model.predict(data, verbose=0)
    for x, y in zip(float_out, sim_out):
        assert 0 < np.abs(x - y).max() < 0.1
    # Saved and loaded, the simulation predicts the same.
    path = tmp_path / "sim.keras"
    sim.model.save(path)
    loaded = keras.models.load_model(path)
    for x, y in zip(sim_out, loaded.predict(data, verbose=0)):
        np.testing.assert_allclose(x, y, atol=1e-6)
    # With every quantizer off the sim is the float model.
    _disable_all(sim)
    for x, y in zip(float_out, sim.model.predict(data, verbose=0)):
        np.testing.assert_allclose(x, y, atol=1e-6)
    for x, y in zip(before, model.get_weights()):
        np.testing.assert_array_equal(x, y)


class SmallNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.pool(keras.ops.relu(self.conv(x))))


def test_subclassed_model_is_traced_and_fits():
    model = SmallNet()
    images = _data(32, 6, 6, 1)
    model(images)
    sim = QuantizationSimModel(model)
    sim.compute_encodings(images)
    assert isinstance(sim.model.get_layer("conv"), QuantizationWrapper)
    np.testing.assert_allclose(
        sim.model.predict(images, verbose=0),
        model.predict(images, verbose=0),
        atol=0.05,
    )
    sim.model.compile(optimizer="adam", loss="mse")
    history = sim.model.fit(images, _data(32, 2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


class Scale(keras.layers.Layer):
    """A custom layer with a weight, unknown to the toolkit."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), name="gamma")

    def call(self, x):
        return x * self.gamma


def _custom_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, Scale(name="scale")(inputs))


def test_unknown_custom_layer_warns_or_fails_in_strict_mode():
    model = _custom_model()
    with pytest.warns(UserWarning, match="'scale'.*register_quantization"):
        sim = QuantizationSimModel(model)
    wrapper = sim.model.get_layer("scale")
    assert not wrapper.param_quantizers["gamma"].enabled
    assert wrapper.output_quantizers[0].enabled
    with pytest.raises(ValueError, match="'scale'"):
        QuantizationSimModel(model, strict=True)


def test_registered_rule_quantizes_the_custom_weight():
    register_quantization_rule(Scale, op_type="Mul")
    try:
        sim = QuantizationSimModel(_custom_model(), strict=True)
    finally:
        unregister_quantization_rule(Scale)
    assert sim.model.get_layer("scale").param_quantizers["gamma"].enabled
    with pytest.raises(ValueError, match="Did you mean .Conv."):
        register_quantization_rule(Scale, op_type="Comv")


def test_in_place_shares_the_callers_weights():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    copy_sim = QuantizationSimModel(model)
    shared_sim = QuantizationSimModel(model, in_place=True)
    assert copy_sim.model.get_layer("fc").layer is not model.get_layer("fc")
    assert shared_sim.model.get_layer("fc").layer is model.get_layer("fc")


def test_integer_inputs_are_left_alone():
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(20, 4, name="embed")(tokens)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(tokens, keras.layers.Dense(2, name="fc")(x))
    sim = QuantizationSimModel(model)
    ids = _RNG.integers(0, 20, size=(16, 6)).astype("int32")
    sim.compute_encodings(ids)
    embed = sim.model.get_layer("embed")
    assert not embed.input_quantizers[0].enabled
    assert embed.param_quantizers["embeddings"].enabled
    assert sim.model.predict(ids, verbose=0).shape == (16, 2)


def test_callers_model_is_unchanged_in_weights_and_structure(tmp_path):
    model = nested_shared_multi_io()
    config = model.get_config()
    weights = [w.copy() for w in model.get_weights()]
    nodes = {layer.name: len(layer._inbound_nodes) for layer in model.layers}
    data = [_data(16, 8), _data(16, 8)]
    sim = QuantizationSimModel(model)
    sim.compute_encodings(data)
    sim.model.compile(optimizer="sgd", loss="mse")
    sim.model.fit(data, [_data(16, 3), _data(16, 8)], epochs=1, verbose=0)
    sim.export(tmp_path, "trained")
    assert model.get_config() == config
    assert {x.name: len(x._inbound_nodes) for x in model.layers} == nodes
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
