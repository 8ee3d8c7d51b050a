"""Normalization and Rescaling as 1x1 depthwise convolutions."""

import keras
import numpy as np
import pytest

from aimet_keras.graph import channel_affine
from aimet_keras.graph import channel_affines_as_depthwise


def _model():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = keras.layers.Normalization(
        mean=[0.1, -0.2, 0.3], variance=[4.0, 0.25, 0.01], name="normalize"
    )(x)
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    flat = keras.layers.Flatten(name="flat")(x)
    # On vectors TFLite runs no depthwise convolution: left as it is.
    outputs = keras.layers.Rescaling(2.0, name="vector_rescale")(flat)
    return keras.Model(inputs, outputs)


def test_rewritten_layers_compute_the_same():
    model = _model()
    rewritten = channel_affines_as_depthwise(model)
    kinds = {layer.name: type(layer).__name__ for layer in rewritten.layers}
    assert kinds["rescale"] == kinds["normalize"] == "DepthwiseConv2D"
    assert kinds["vector_rescale"] == "Rescaling"
    images = np.random.default_rng(0).uniform(0, 255, (4, 6, 6, 3))
    np.testing.assert_allclose(
        rewritten.predict(images, verbose=0),
        model.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-4,
    )
    # The caller's model is not changed.
    assert type(model.get_layer("normalize")).__name__ == "Normalization"


def test_variance_below_epsilon_divides_by_epsilon():
    layer = keras.layers.Normalization(mean=[0.1, 0.0], variance=[4.0, 1e-16])
    layer.build((None, 4, 4, 2))
    scale, bias = channel_affine(layer)
    assert scale[1] == 1 / keras.config.epsilon()
    assert bias[0] == pytest.approx(-0.1 / 2.0)


def test_inverted_normalization_and_other_layers_are_kept():
    inverted = keras.layers.Normalization(mean=0.0, variance=1.0, invert=True)
    inverted.build((None, 4, 4, 3))
    assert channel_affine(inverted) is None
    assert channel_affine(keras.layers.ReLU()) is None
    model = _model()
    assert channel_affines_as_depthwise(model, where=lambda _: False) is model
