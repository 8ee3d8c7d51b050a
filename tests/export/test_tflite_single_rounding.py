"""The sim rounds a tensor once where the TFLite converter does.

Two graph shapes made NASNetMobile's TFLite export round twice where the sim
rounded once or the other way round (98.5% top-1 agreement):

* two equal ReLUs on one tensor (NASNet's stem): the converter merges them,
  so the convolution before them fuses the ReLU and rounds once;
* a concatenation: TFLite keeps one scale on its inputs and output, so the
  converter gives the producers that feed only it the concatenation's output
  scale (they round once, onto its grid) and requantizes the others; XNNPACK
  requantizes with an 8-bit multiplier, so the sim puts those on the
  concatenation's grid as well.

And TFLite's int8 average pooling rounds a tie (a quarter of the means of a
2x2 window) away from the signed integer zero, where AIMET rounds it up;
``Normalization`` and ``Rescaling`` run as 1x1 depthwise convolutions whose
int32 bias is rounded (EfficientNet's preprocessing).
"""

import keras
import numpy as np
import pytest

from aimet_keras import export_tflite
from aimet_keras.export import layer_outputs as lo
from aimet_keras.sim import QuantizationSimModel


def _model():
    inputs = keras.Input((12, 12, 3))
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    left = keras.layers.Activation("relu", name="relu_left")(stem)
    right = keras.layers.Activation("relu", name="relu_right")(stem)
    left = keras.layers.Conv2D(8, 3, padding="same", name="conv_left")(left)
    right = keras.layers.Conv2D(8, 1, name="conv_right")(right)
    added = keras.layers.Add(name="add")([left, right])
    shared = keras.layers.Conv2D(8, 1, name="shared")(right)
    joined = keras.layers.Concatenate(name="concat")([added, shared])
    also = keras.layers.ReLU(name="also")(shared)
    x = keras.layers.Concatenate(name="concat2")([joined, also])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def images():
    return (
        np.random.default_rng(0).normal(size=(64, 12, 12, 3)).astype("float32")
    )


@pytest.fixture(scope="module")
def sim(images):
    keras.utils.set_random_seed(0)
    sim = QuantizationSimModel(_model(), config_file="tflite_int8")
    sim.compute_encodings(images)
    return sim


def test_equal_activations_of_one_tensor_are_one_layer(sim):
    names = {layer.name for layer in sim.model.layers}
    assert len(names & {"relu_left", "relu_right"}) == 1
    # Its only consumer now, the ReLU fuses into the convolution.
    assert not sim.model.get_layer("stem").output_quantizers[0].enabled


def test_the_callers_model_keeps_both(sim):
    model = _model()
    QuantizationSimModel(model, config_file="tflite_int8")
    assert {"relu_left", "relu_right"} <= {layer.name for layer in model.layers}


def test_producers_of_a_concatenation_round_onto_its_grid(sim):
    concat = sim.model.get_layer("concat").output_quantizers[0]
    added = sim.model.get_layer("add").output_quantizers[0]
    # Feeds the concatenation and another layer: on its grid as well.
    shared = sim.model.get_layer("shared").output_quantizers[0]
    assert added.tied and shared.tied
    for producer in (added, shared):
        np.testing.assert_allclose(
            producer.encoding.delta, concat.encoding.delta
        )
        np.testing.assert_allclose(
            producer.encoding.offset, concat.encoding.offset
        )
    # Nested: the inner concatenation feeds only the outer one, so its
    # producers follow the chain to the outer grid.
    outer = sim.model.get_layer("concat2").output_quantizers[0]
    np.testing.assert_allclose(added.encoding.delta, outer.encoding.delta)


def test_tflite_rounds_where_the_sim_rounds(sim, images, tmp_path):
    exported = export_tflite(sim, tmp_path / "model.tflite")
    reference = lo.sim_layer_outputs(sim, images)
    target = lo.tflite_layer_outputs(exported, images)
    steps = lo.output_steps(sim)

    def off(layer, channels=slice(None)):
        expected = reference[layer]
        got = np.reshape(target[layer], np.shape(expected))
        apart = np.abs(got - expected) > 0.5 * steps[layer]
        return float(np.mean(apart[..., channels]))

    (relu,) = {"relu_left", "relu_right"} & set(reference)
    # A rounding the sim misses puts a quarter of the values or more a
    # step apart; the kernels' own roundings, well under 1%. A producer
    # left on a grid of its own would come into the concatenation through
    # XNNPACK's 8-bit requantization multiplier, a few percent a step off.
    for layer in (relu, "conv_left", "conv_right", "add", "also", "concat"):
        assert off(layer) < 0.01, layer


def test_average_pooling_rounds_ties_as_tflite_does(images, tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 1, name="conv")(inputs)
    pooled = keras.layers.AveragePooling2D(2, name="pool")(x)
    same = keras.layers.AveragePooling2D(
        3, strides=1, padding="same", name="pool_same"
    )(x)
    x = keras.layers.Concatenate(name="concat")(
        [keras.layers.Flatten()(pooled), keras.layers.Flatten()(same)]
    )
    sim = QuantizationSimModel(
        keras.Model(inputs, x), config_file="tflite_int8"
    )
    sim.compute_encodings(images)
    exported = export_tflite(sim, tmp_path / "pool.tflite")
    reference = lo.sim_layer_outputs(sim, images)
    target = lo.tflite_layer_outputs(exported, images)
    conv = sim.model.get_layer("conv").output_quantizers[0]
    step = float(conv.encoding.delta)
    for layer in ("pool", "pool_same"):
        got = np.reshape(target[layer], reference[layer].shape)
        # Integer means: the same level everywhere, ties included.
        np.testing.assert_array_less(np.abs(got - reference[layer]), step / 2)


def test_preprocessing_layers_round_their_bias_as_tflite_does(tmp_path):
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Normalization(
        mean=[0.485, 0.456, 0.406],
        variance=[0.229**2, 0.224**2, 0.225**2],
        name="normalize",
    )(x)
    x = keras.layers.Rescaling(0.5, offset=0.1, name="shift")(x)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    images = np.random.default_rng(2).integers(0, 256, (64, 12, 12, 3))
    images = images.astype("float32")
    keras.utils.set_random_seed(2)
    sim = QuantizationSimModel(
        keras.Model(inputs, x), config_file="tflite_int8"
    )
    sim.compute_encodings(images)
    for name in ("normalize", "shift"):
        layer = sim.model.get_layer(name)
        assert type(layer.layer).__name__ == "DepthwiseConv2D"
        assert layer.param_quantizers["bias"].tied
    exported = export_tflite(sim, tmp_path / "preprocess.tflite")
    reference = lo.sim_layer_outputs(sim, images)
    target = lo.tflite_layer_outputs(exported, images)
    steps = lo.output_steps(sim)
    for layer in ("normalize", "shift"):
        got = np.reshape(target[layer], reference[layer].shape)
        np.testing.assert_array_less(
            np.abs(got - reference[layer]), steps[layer] / 2
        )
