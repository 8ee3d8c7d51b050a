"""The cost model against MACs counted by hand."""

import keras
import pytest

from aimet_keras import zoo
from aimet_keras.compress import model_cost


def _cost(layer, input_shape):
    inputs = keras.Input(input_shape)
    return model_cost(keras.Model(inputs, layer(inputs)))[layer.name]


@pytest.mark.parametrize(
    "layer, input_shape, macs, memory",
    [
        # 3x3 stride 2 valid on 9x9: 4x4 outputs, 8 filters over 3 channels.
        (
            keras.layers.Conv2D(8, 3, strides=2, name="c"),
            (9, 9, 3),
            16 * 216,
            216,
        ),
        # Two groups: each filter sees 2 of the 4 input channels.
        (keras.layers.Conv2D(6, 1, groups=2, name="c"), (5, 5, 4), 25 * 12, 12),
        (keras.layers.Conv1D(4, 3, name="c"), (10, 2), 8 * 24, 24),
        # Depthwise, multiplier 2: 6 outputs per position, 9 taps each.
        (
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="c"),
            (6, 6, 3),
            16 * 54,
            54,
        ),
        # Separable: the depthwise part, then 1x1 from 3 to 5 channels.
        (
            keras.layers.SeparableConv2D(5, 3, name="c"),
            (6, 6, 3),
            16 * (27 + 15),
            42,
        ),
        # Transposed: every input position scatters a full kernel.
        (
            keras.layers.Conv2DTranspose(2, 3, strides=2, name="c"),
            (4, 4, 3),
            16 * 54,
            54,
        ),
        # Dense on tokens: each of the 7 positions.
        (keras.layers.Dense(5, name="c"), (7, 3), 7 * 15, 15),
    ],
)
def test_layer_costs_match_hand_counts(layer, input_shape, macs, memory):
    cost = _cost(layer, input_shape)
    assert (cost.macs, cost.memory) == (macs, memory)


def test_a_shared_layer_costs_macs_per_call_and_memory_once():
    dense = keras.layers.Dense(4, name="shared")
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], keras.layers.Add()([dense(a), dense(b)]))
    cost = model_cost(model)["shared"]
    assert (cost.macs, cost.memory) == (24, 12)


def test_reference_model_totals_and_table():
    model = zoo.load_model("resnet", compile=False)
    weights = [w.copy() for w in model.get_weights()]
    cost = model_cost(model)
    assert cost.macs == sum(layer.macs for layer in cost.layers)
    stem = cost["stem_conv"]  # 3x3, 1 -> 16 channels, 28x28 'same'
    assert stem.macs == 28 * 28 * 9 * 16
    table = cost.to_markdown()
    assert "| stem_conv | Conv2D |" in table and "| total |" in table
    # BN, ReLU, pooling cost nothing; every conv and the logits count.
    assert {layer.layer_type for layer in cost.layers} == {"Conv2D", "Dense"}
    for before, after in zip(weights, model.get_weights()):
        assert (before == after).all()
    with pytest.raises(KeyError, match="no_such_layer"):
        cost["no_such_layer"]


def test_unknown_spatial_size_is_a_clear_error():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs))
    with pytest.raises(ValueError, match="'conv'.*unknown spatial size"):
        model_cost(model)


def test_latency_is_measured_not_counted(tmp_path):
    from aimet_keras.compress import LatencyTable
    from aimet_keras.compress import callbacks as callbacks_lib

    model = zoo.load_model("resnet", compile=False)
    with pytest.raises(ValueError, match="latency is measured"):
        model_cost(model).total("latency")
    # CompressAtTrainEnd's stage targets read time as the search does: the
    # sum of the weighted layers' measured times, from the same table.
    table = LatencyTable(path=tmp_path / "sub" / "times.json")
    seconds = callbacks_lib._cost(
        model, {"cost_metric": "latency", "latency_table": table}
    )
    assert 0 < seconds < 1
    assert (tmp_path / "sub" / "times.json").is_file()  # folder created
