"""Layer connections of functional models."""

import keras

from aimet_keras.graph import layer_connections


def _residual():
    inputs = keras.Input((8, 8, 3), name="image")
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    add = keras.layers.Add(name="add")([inputs, conv])
    head = keras.layers.ReLU(name="relu")(add)
    side = keras.layers.Flatten(name="side")(conv)
    return keras.Model(inputs, [head, side])


def test_producers_consumers_inputs_outputs():
    connections = layer_connections(_residual())
    assert connections.producers["add"] == [None, "conv"]
    assert sorted(connections.consumers["conv"]) == ["add", "side"]
    assert connections.sole_consumer("add") == "relu"
    assert connections.sole_consumer("conv") is None  # two consumers
    assert connections.model_input_layers == {"conv", "add"}
    assert connections.model_output_layers == {"relu", "side"}


def test_sequential_models_work():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="a"),
            keras.layers.ReLU(name="b"),
        ]
    )
    connections = layer_connections(model)
    assert connections.producers == {"a": [None], "b": ["a"]}
    assert connections.model_output_layers == {"b"}


def test_a_shared_layer_has_all_its_consumers_and_fuses_with_none():
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    first = keras.layers.ReLU(name="first")(shared(inputs))
    model = keras.Model(inputs, keras.layers.ReLU(name="second")(shared(first)))
    connections = layer_connections(model)
    assert connections.producers["shared"] == [None]
    assert connections.consumers["shared"] == ["first", "second"]
    assert connections.sole_consumer("shared") is None
