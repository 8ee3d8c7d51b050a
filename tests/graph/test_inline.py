"""Composite layers: simulated through their sublayers, as a flat graph."""

import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras.graph import composite_sublayers
from aimet_keras.graph import inline_composite_layers
from aimet_keras.graph import prepare_model
from aimet_keras.graph import walk
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import register_quantization_rule
from aimet_keras.sim import unregister_quantization_rule

T, D = 6, 8


class Block(keras.layers.Layer):
    """Dense, self-attention under a padding mask, residual, LayerNorm."""

    def __init__(self, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads

    def build(self, shape):
        self.proj = keras.layers.Dense(shape[-1], name="proj")
        self.proj.build(shape)
        self.attention = keras.layers.MultiHeadAttention(
            self.heads, shape[-1] // self.heads, name="attention"
        )
        self.attention.build(shape, shape)
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.norm.build(shape)

    def call(self, x, padding_mask=None, training=None):
        mask = None
        if padding_mask is not None:
            mask = keras.ops.cast(padding_mask[:, None, :], "bool")
        y = keras.ops.gelu(self.proj(x))
        y = self.attention(y, y, attention_mask=mask, training=training)
        return self.norm(x + y)

    def get_config(self):
        return dict(super().get_config(), heads=self.heads)


class Outer(keras.layers.Layer):
    """A composite of a composite: Block, then a Dense."""

    def build(self, shape):
        self.block = Block(name="block")
        self.block.build(shape)
        self.head = keras.layers.Dense(4, name="head")
        self.head.build(shape)

    def call(self, x, padding_mask=None):
        return self.head(self.block(x, padding_mask=padding_mask))


class RawScale(keras.layers.Layer):
    """Raw TensorFlow math on a weight of its own: opaque."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), name="gamma")

    def call(self, x):
        return tf.multiply(x, self.gamma)


class RawBlock(keras.layers.Layer):
    """Keras sublayers, but a tf.* call between them: cannot be traced."""

    def build(self, shape):
        self.fc = keras.layers.Dense(shape[-1], name="fc")
        self.fc.build(shape)

    def call(self, x):
        return tf.nn.relu(self.fc(x))


class Gated(keras.layers.Layer):
    """A sublayer and a weight of its own, read with keras.ops."""

    def build(self, shape):
        self.fc = keras.layers.Dense(shape[-1], name="fc")
        self.fc.build(shape)
        self.gate = self.add_weight(shape=(shape[-1],), name="gate")

    def call(self, x):
        return self.fc(x) * self.gate


def _model(layer):
    x = keras.Input((T, D), name="x")
    mask = keras.Input((T,), dtype="int32", name="padding_mask")
    hidden = keras.layers.Dense(D, name="embed")(x)
    outputs = layer(hidden, padding_mask=mask)
    return keras.Model([x, mask], keras.layers.Dense(3, name="out")(outputs))


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, D)).astype("float32")
    lengths = rng.integers(1, T + 1, size=(n, 1))
    mask = (np.arange(T)[None] < lengths).astype("int32")
    return [x, mask]


def _assert_same(a, b, data):
    for x, y in zip(
        keras.tree.flatten(a.predict(data, verbose=0)),
        keras.tree.flatten(b.predict(data, verbose=0)),
    ):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_sublayers_become_layers_of_the_graph_with_the_same_outputs():
    model = _model(Block(name="block"))
    flat = prepare_model(model)
    names = [site.operation.name for site in walk(flat)]
    for name in ("block_proj", "block_attention", "block_norm"):
        assert name in names
    assert "block" not in names
    kinds = {type(site.operation).__name__ for site in walk(flat)}
    assert {"Dense", "MultiHeadAttention", "LayerNormalization"} <= kinds
    assert {"Gelu", "Add", "Cast"} <= kinds
    _assert_same(model, flat, _data())
    # The caller's layers keep their names.
    assert model.get_layer("block").proj.name == "proj"


def test_the_inlined_sublayers_share_the_composites_weights():
    block = Block(name="block")
    model = _model(block)
    flat = prepare_model(model, copy=False)
    assert flat.get_layer("block_proj") is block.proj
    assert flat.get_layer("block_attention") is block.attention
    assert flat.get_layer("block_proj").kernel is block.proj.kernel
    # One set of variables: what trains in one trains in the other.
    block.proj.kernel.assign(block.proj.kernel * 2.0)
    _assert_same(model, flat, _data())
    assert len(flat.weights) == len(model.weights)


def test_nested_and_shared_composites_are_inlined():
    x = keras.Input((T, D))
    mask = keras.Input((T,), dtype="int32")
    outer = Outer(name="outer")
    shared = Block(name="shared")
    y = shared(shared(x, padding_mask=mask), padding_mask=mask)
    model = keras.Model([x, mask], outer(y, padding_mask=mask))
    flat = prepare_model(model)
    calls = [site.operation.name for site in walk(flat)]
    assert calls.count("shared_proj") == 2  # one layer, called twice
    assert "outer_block_attention" in calls and "outer_head" in calls
    assert not [c for c in calls if c in ("outer", "shared", "outer_block")]
    _assert_same(model, flat, _data())


def test_the_sim_quantizes_inside_the_composite_in_strict_mode():
    model = _model(Block(name="block"))
    sim = QuantizationSimModel(model, strict=True)
    data = _data(64)
    sim.compute_encodings(data)
    dense = sim.model.get_layer("block_proj")
    assert dense.param_quantizers["kernel"].enabled
    attention = sim.model.get_layer("block_attention")
    for key in ("query/kernel", "key/kernel", "value/kernel"):
        assert attention.param_quantizers[key].enabled
    assert attention.internal_quantizers["softmax"].is_initialized
    assert sim.model.get_layer("block_norm").output_quantizers[0].enabled
    expected = model.predict(data, verbose=0)
    got = sim.model.predict(data, verbose=0)
    assert np.abs(got - expected).max() <= 0.1 * np.abs(expected).max()


def test_a_registered_rule_keeps_the_composite_whole():
    register_quantization_rule(Block, op_type="Gemm")
    try:
        flat = prepare_model(_model(Block(name="block")))
    finally:
        unregister_quantization_rule(Block)
    assert "block" in [site.operation.name for site in walk(flat)]


def test_raw_tensorflow_math_on_own_weights_stays_output_only():
    inputs = keras.Input((D,))
    model = keras.Model(inputs, RawScale(name="raw")(inputs))
    with pytest.warns(UserWarning, match="'raw'.*register_quantization_rule"):
        sim = QuantizationSimModel(model)
    wrapper = sim.model.get_layer("raw")
    assert not wrapper.param_quantizers["gamma"].enabled
    assert wrapper.output_quantizers[0].enabled
    with pytest.raises(ValueError, match="'raw'"):
        QuantizationSimModel(model, strict=True)


@pytest.mark.parametrize(
    "layer, reason",
    [
        (RawBlock, "cannot run on symbolic tensors"),
        (Gated, "weights of its own"),
    ],
)
def test_a_composite_that_cannot_be_inlined_warns_why(layer, reason):
    inputs = keras.Input((D,))
    model = keras.Model(inputs, layer(name="opaque")(inputs))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sim = QuantizationSimModel(model)
        prepared = prepare_model(model)
    messages = [str(w.message) for w in caught]
    # The fallback says why, and the sim that it is not simulated inside.
    assert any(
        re.search(f"'opaque'.*{reason}.*register_quantization_rule", m)
        for m in messages
    )
    assert any("No quantization rule for 'opaque'" in m for m in messages)
    wrapper = sim.model.get_layer("opaque")
    assert wrapper.output_quantizers[0].enabled
    assert not any(q.enabled for q in wrapper.param_quantizers.values())
    data = np.random.default_rng(0).normal(size=(4, D)).astype("float32")
    _assert_same(model, prepared, data)


class MaskedBlock(keras.layers.Layer):
    """Reads the Keras mask of its input through ``mask``, and drops it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def build(self, shape):
        self.fc = keras.layers.Dense(shape[-1], name="fc")
        self.fc.build(shape)

    def call(self, x, mask=None):
        weights = keras.ops.cast(mask, x.dtype)[..., None]
        return self.fc(x) * weights


def test_an_input_mask_becomes_an_edge_of_the_graph():
    tokens = keras.Input((T,), dtype="int32")
    x = keras.layers.Embedding(10, D, mask_zero=True, name="embed")(tokens)
    model = keras.Model(tokens, MaskedBlock(name="masked")(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        flat = prepare_model(model)
    assert "masked_fc" in [site.operation.name for site in walk(flat)]
    ids = np.random.default_rng(0).integers(0, 10, size=(8, T))
    _assert_same(model, flat, ids.astype("int32"))


def test_an_output_mask_the_sublayers_drop_keeps_the_layer_whole():
    class Passing(MaskedBlock):
        def compute_mask(self, inputs, mask=None):
            return mask

    tokens = keras.Input((T,), dtype="int32")
    x = keras.layers.Embedding(10, D, mask_zero=True)(tokens)
    x = Passing(name="passing")(x)
    model = keras.Model(tokens, keras.layers.GlobalAveragePooling1D()(x))
    with pytest.warns(UserWarning, match="'passing'.*Keras mask"):
        flat = prepare_model(model)
    ids = np.random.default_rng(0).integers(0, 10, size=(8, T))
    _assert_same(model, flat, ids.astype("int32"))


def test_composite_sublayers_reads_the_tracked_sublayers():
    # Guards the one private Keras attribute inlining reads.
    block = Block()
    block.build((None, T, D))
    assert [s.name for s in composite_sublayers(block)] == [
        "proj",
        "attention",
        "norm",
    ]
    assert composite_sublayers(keras.layers.Dense(2)) == []


def test_a_model_without_composites_is_returned_as_is():
    inputs = keras.Input((D,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert inline_composite_layers(model) is model
