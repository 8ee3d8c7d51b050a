"""prepare_model: every model shape as one flat functional graph."""

import keras
import numpy as np
import pytest

from aimet_keras.graph import prepare_model
from aimet_keras.graph import walk
from tests.model_shapes import nested_shared_multi_io


def _same_outputs(a, b, inputs):
    for x, y in zip(
        keras.tree.flatten(a.predict(inputs, verbose=0)),
        keras.tree.flatten(b.predict(inputs, verbose=0)),
    ):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_nested_models_are_inlined_and_shared_layers_stay_shared():
    model = nested_shared_multi_io()
    before = [w.copy() for w in model.get_weights()]
    flat = prepare_model(model)
    names = [op.name for op in flat.operations]
    # The outer "fc" keeps its name; the nested one is prefixed.
    assert "fc" in names and "inner_fc" in names
    assert not any(isinstance(op, keras.Model) for op in flat.operations)
    calls = [site.operation.name for site in walk(flat)]
    assert calls.count("shared") == 2
    assert flat.get_layer("shared") is not model.get_layer("shared")
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(5, 8)).astype("float32") for _ in range(2)]
    _same_outputs(model, flat, data)
    for x, y in zip(before, model.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_copy_false_uses_the_callers_layers():
    with pytest.raises(ValueError, match="'fc' of nested model 'inner'"):
        prepare_model(nested_shared_multi_io(), copy=False)
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    model = keras.Model(inputs, shared(shared(inputs)))
    flat = prepare_model(model, copy=False)
    assert flat.get_layer("shared") is model.get_layer("shared")


class SmallSubclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.flatten(keras.ops.relu(self.conv(x))))


def test_subclassed_models_are_traced():
    model = SmallSubclassed()
    data = np.random.default_rng(1).normal(size=(3, 6, 6, 1)).astype("float32")
    model(data)
    flat = prepare_model(model)
    assert [type(op).__name__ for op in flat.operations] == [
        "InputLayer",
        "Conv2D",
        "Relu",
        "Flatten",
        "Dense",
    ]
    _same_outputs(model, flat, data)


def test_unbuilt_subclassed_model_takes_an_input_shape():
    flat = prepare_model(SmallSubclassed(), input_shape=(None, 6, 6, 1))
    assert flat.output.shape == (None, 2)
    with pytest.raises(ValueError, match="not built.*input_shape"):
        prepare_model(SmallSubclassed())


def test_untraceable_call_fails_with_the_fix():
    import tensorflow as tf

    class UsesTf(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return tf.nn.relu(self.dense(x))

    model = UsesTf()
    model(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="could not be traced.*keras.ops"):
        prepare_model(model)


def test_a_layer_without_a_usable_config_is_named():
    class NoConfig(keras.layers.Layer):
        def __init__(self, units):
            super().__init__()
            self.units = units

        def call(self, x):
            return x[..., : self.units]

    inputs = keras.Input((4,))
    model = keras.Model(inputs, NoConfig(2)(inputs))
    with pytest.raises(ValueError, match="(?s)no_config.*get_config"):
        prepare_model(model)


def test_not_a_model():
    with pytest.raises(TypeError, match="keras.Model"):
        prepare_model(keras.layers.Dense(2))


def test_split_separable_convolutions_computes_the_same():
    import numpy as np

    from aimet_keras.graph import split_separable_convolutions

    inputs = keras.Input((12, 12, 3))
    x = keras.layers.SeparableConv2D(
        8,
        3,
        strides=2,
        padding="same",
        depth_multiplier=2,
        activation="relu",
        name="sep",
    )(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.SeparableConv2D(4, 3, use_bias=False, name="sep2")(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).random((4, 12, 12, 3)).astype("float32")
    split = split_separable_convolutions(model)
    names = [layer.name for layer in split.layers[1:]]
    assert names == ["sep_depthwise", "sep", "bn", "sep2_depthwise", "sep2"]
    assert type(split.get_layer("sep")).__name__ == "Conv2D"
    np.testing.assert_allclose(
        split.predict(images, verbose=0),
        model.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
    # The caller's model keeps its SeparableConv2D layers.
    assert type(model.get_layer("sep")).__name__ == "SeparableConv2D"


def test_split_activations_computes_the_same_and_keeps_relu_fused():
    from aimet_keras.graph import split_activations

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_relu")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="sigmoid", name="conv_sig")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="fc")(x)
    model = keras.Model(inputs, outputs)
    split = split_activations(model)
    assert [layer.name for layer in split.layers[1:]] == [
        "conv_relu",
        "conv_sig",
        "conv_sig_activation",
        "pool",
        "fc",
        "fc_activation",
    ]
    assert split.get_layer("conv_relu").activation.__name__ == "relu"
    assert split.get_layer("fc").activation.__name__ == "linear"
    data = np.random.default_rng(0).normal(size=(4, 8, 8, 3))
    np.testing.assert_allclose(
        split.predict(data, verbose=0),
        model.predict(data, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
    # The caller's model keeps its layers and activations.
    assert model.get_layer("fc").activation.__name__ == "softmax"
    assert len(model.layers) == 5


class _SavesDerivedSizes(keras.layers.Layer):
    """Saves a size its constructor does not take (as keras-hub's
    ViTPatchingAndEmbedding saves num_patches)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(self.units,), name="scale")

    def call(self, inputs):
        return inputs * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units, "derived": 4}


class _ForgetsAnArgument(_SavesDerivedSizes):
    def get_config(self):
        config = super().get_config()
        del config["units"]
        return config


def test_copy_drops_config_keys_the_constructor_does_not_take():
    from aimet_keras.graph import prepare

    layer = _SavesDerivedSizes(3, name="scaled")
    layer.build((None, 3))
    layer.scale.assign([1.0, 2.0, 3.0])
    copy = prepare.copy_operation(layer)
    assert copy.units == 3
    np.testing.assert_array_equal(copy.scale.numpy(), [1.0, 2.0, 3.0])
    missing = _ForgetsAnArgument(3, name="forgets")
    missing.build((None, 3))
    with pytest.raises(ValueError, match=r"(?s)'forgets'.*get_config"):
        prepare.copy_operation(missing)
