"""Compression on keras.applications architectures.

The miniatures of ``test_applications`` (keras.applications' own builders at
a small depth and width, 32x32) carry what the stock models carry: BN and
concatenations on ``axis=3``, bottleneck residual streams, dense blocks,
squeeze-excite gates; MobileNetV2 and a VGG-style stack are built small.
Full size (224x224) is timed in ``benchmarks/suites/compression_real.py``.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras import compress
from tests.models.test_applications import MINIATURES
from tests.models.test_applications import _common


def _mobilenet_v2():
    return keras.applications.MobileNetV2(alpha=0.35, **_common())


def _vgg_style():
    """VGG's pattern (conv-conv-pool blocks, then dense layers), small."""
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for block, width in enumerate((8, 16, 32), start=1):
        for index in (1, 2):
            x = keras.layers.Conv2D(
                width,
                3,
                padding="same",
                activation="relu",
                name=f"block{block}_conv{index}",
            )(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="predictions")(x))


BUILDERS = {
    "ResNet50": MINIATURES["ResNet50"],
    "DenseNet121": MINIATURES["DenseNet121"],
    "EfficientNetB0": MINIATURES["EfficientNetB0"],
    "MobileNetV2": _mobilenet_v2,
    "VGG": _vgg_style,
}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("f4")


def _tflite_outputs(model, images):
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = tf.lite.Interpreter(model_content=content)
    interpreter.allocate_tensors()
    (inputs,), (outputs,) = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )
    results = []
    for image in images:
        interpreter.set_tensor(inputs["index"], image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(outputs["index"])[0])
    return np.stack(results)


def test_channels_on_axis_3_are_channels(images):
    """keras.applications writes BN and concatenation axes as 3: the
    bottlenecks' inner spaces and residual streams are prunable (no layer
    of a stock ResNet was, before)."""
    resnet = MINIATURES["ResNet50"]()
    spaces = compress.prunable_layers(resnet)
    convs = [
        layer.name
        for layer in resnet.layers
        if isinstance(layer, keras.layers.Conv2D)
    ]
    # Every convolution but the stem's reads a prunable space (a stream is
    # listed once, by its first reader), and so does the classifier.
    pruner = compress.ChannelPruner(resnet, images, reconstruct=False)
    readers = set()
    for name in spaces:
        readers.update(pruner.group(name).consumers)
    assert readers == set(convs[1:]) | {"predictions"}
    # DenseNet's bottlenecks (BN axis 3 between the 1x1 and the 3x3
    # convolution); its dense-block concatenations are read again by the
    # next concatenation, which pruning refuses.
    densenet = MINIATURES["DenseNet121"]()
    inner = {
        layer.name
        for layer in densenet.layers
        if layer.name.endswith("_2_conv")
    }
    assert inner and inner <= set(compress.prunable_layers(densenet))


# MobileNetV2's 25 spaces take 90 s: the default run prunes three of them
# (an expansion's through its depthwise convolution, a residual stream and
# the classifier's), the slow run all; EfficientNet's every space (35 s)
# runs in the slow run only.
FIRST_SPACES = {
    "MobileNetV2": ("block_1_project", "block_2_expand", "predictions")
}
SLOW = ("MobileNetV2", "EfficientNetB0")


@pytest.mark.parametrize(
    "architecture, every_space",
    [(name, False) for name in sorted(FIRST_SPACES)]
    + [
        pytest.param(name, True, marks=pytest.mark.slow)
        if name in SLOW
        else (name, True)
        for name in sorted(BUILDERS)
    ],
)
def test_pruning_rebuilds_and_exports(architecture, every_space, images):
    """Every prunable space a quarter narrower: the model rebuilds, loses
    MACs, and its TFLite conversion computes what it computes; keeping
    every channel changes nothing."""
    model = BUILDERS[architecture]()
    spaces = compress.prunable_layers(model)
    assert spaces, architecture
    if not every_space:
        spaces = {name: spaces[name] for name in FIRST_SPACES[architecture]}
    unchanged = compress.channel_pruning(
        model, dict(spaces), images, reconstruct=False
    )
    np.testing.assert_array_equal(
        unchanged.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    keep = {
        name: max(1, 3 * channels // 4) for name, channels in spaces.items()
    }
    pruned = compress.channel_pruning(
        model, keep, images, num_reconstruction_samples=200
    )
    ratio = compress.model_cost(pruned).macs / compress.model_cost(model).macs
    assert ratio < (0.9 if every_space else 0.99), (architecture, ratio)
    expected = pruned.predict(images, verbose=0)
    np.testing.assert_allclose(
        _tflite_outputs(pruned, images), expected, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "architecture, scheme, target",
    [
        # Spatial SVD factorises the 3x3 convolutions only: a bottleneck
        # ResNet's 1x1 convolutions hold most of its MACs.
        ("ResNet50", "spatial_svd", 0.8),
        ("ResNet50", "channel_pruning", 0.6),
        # Weight SVD factorises Dense and 1x1 convolutions: the
        # bottlenecks' 1x1 layers, narrow (8 to 32 channels) in the miniature.
        ("ResNet50", "weight_svd", 0.95),
        pytest.param("MobileNetV2", "weight_svd", 0.6, marks=pytest.mark.slow),
        ("VGG", "spatial_svd", 0.6),
        ("VGG", "channel_pruning", 0.6),
    ],
)
def test_greedy_search_lands_on_the_target(
    architecture, scheme, target, images
):
    """The greedy ratio search on a stock architecture reaches its MACs
    target (each scheme on an architecture that has layers for it)."""
    model = BUILDERS[architecture]()
    original = model.predict(images, verbose=0)

    def fidelity(candidate, iterations):
        # Random weights: score how closely the candidate follows them.
        out = candidate.predict(images, verbose=0)
        return -float(np.mean((out - original) ** 2))

    smaller, stats = compress.compress_model(
        model,
        fidelity,
        None,
        target,
        scheme=scheme,
        num_comp_ratio_candidates=3,
        data=images,
        num_reconstruction_samples=200,
        verbose=0,
    )
    assert target - 0.1 < stats.achieved_comp_ratio <= target, (
        stats.achieved_comp_ratio
    )
    measured = (
        compress.model_cost(smaller).macs / compress.model_cost(model).macs
    )
    assert measured == pytest.approx(stats.achieved_comp_ratio, abs=1e-6)
