"""Batch-norm folding: same outputs, fewer layers, caller's model kept."""

import keras
import numpy as np
import pytest

from aimet_keras import zoo
from aimet_keras.ptq import fold_all_batch_norms

L = keras.layers
RNG = np.random.default_rng(0)


def _randomize_bn(model):
    """Non-trivial BN statistics, so a wrong fold shows."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            for weight in layer.weights:
                shape = weight.shape
                if weight.name == "moving_variance":
                    value = RNG.uniform(0.5, 2.0, shape)
                else:
                    value = RNG.normal(0.0, 0.5, shape)
                    if weight.name == "gamma":
                        value += 1.0
                weight.assign(value.astype("float32"))
    return model


CASES = {
    "Conv2D": ((8, 8, 3), lambda x: L.BatchNormalization()(L.Conv2D(4, 3)(x))),
    "Conv2D no bias": (
        (8, 8, 3),
        lambda x: L.BatchNormalization()(L.Conv2D(4, 3, use_bias=False)(x)),
    ),
    "Conv1D": ((8, 3), lambda x: L.BatchNormalization()(L.Conv1D(4, 3)(x))),
    "Conv3D": (
        (4, 4, 4, 2),
        lambda x: L.BatchNormalization()(L.Conv3D(3, 2)(x)),
    ),
    "DepthwiseConv2D": (
        (8, 8, 3),
        lambda x: L.BatchNormalization()(
            L.DepthwiseConv2D(3, depth_multiplier=2)(x)
        ),
    ),
    "SeparableConv2D": (
        (8, 8, 3),
        lambda x: L.BatchNormalization()(L.SeparableConv2D(5, 3)(x)),
    ),
    "Conv2DTranspose": (
        (6, 6, 3),
        lambda x: L.BatchNormalization()(L.Conv2DTranspose(4, 3)(x)),
    ),
    "Dense": ((6,), lambda x: L.BatchNormalization()(L.Dense(4)(x))),
    "BN before valid Conv2D": (
        (8, 8, 3),
        lambda x: L.Conv2D(4, 3)(L.BatchNormalization()(L.ReLU()(x))),
    ),
    "BN before Dense": (
        (6,),
        lambda x: L.Dense(4)(L.BatchNormalization()(L.ReLU()(x))),
    ),
    "BN before DepthwiseConv2D": (
        (8, 8, 3),
        lambda x: L.DepthwiseConv2D(3)(L.BatchNormalization()(L.ReLU()(x))),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fold_keeps_outputs(name):
    shape, build = CASES[name]
    inputs = keras.Input(shape)
    model = _randomize_bn(keras.Model(inputs, build(inputs)))
    data = RNG.normal(size=(8, *shape)).astype("float32")
    folded, pairs = fold_all_batch_norms(model)
    assert len(pairs) == 1
    assert not any(isinstance(x, L.BatchNormalization) for x in folded.layers)
    np.testing.assert_allclose(
        folded.predict(data, verbose=0),
        model.predict(data, verbose=0),
        rtol=1e-4,
        atol=1e-4,
    )


def test_unfoldable_batch_norms_stay():
    inputs = keras.Input((8, 8, 3))
    # BN after a conv with its own activation; BN before a "same" conv.
    x = L.BatchNormalization(name="after_relu_conv")(
        L.Conv2D(4, 3, activation="relu")(inputs)
    )
    x = L.Conv2D(4, 3, padding="same")(x)
    model = keras.Model(inputs, x)
    folded, pairs = fold_all_batch_norms(model)
    assert pairs == []
    assert "after_relu_conv" in [layer.name for layer in folded.layers]


def test_reference_models_fold_and_callers_model_is_kept():
    images = zoo.load_fashion_mnist_slice("test")[0][:64]
    for name in ("resnet", "mobilenet_v2"):
        model = zoo.load_model(name, compile=False)
        weights = [w.copy() for w in model.get_weights()]
        num_layers = len(model.layers)
        folded, pairs = fold_all_batch_norms(model)
        bns = [x for x in model.layers if isinstance(x, L.BatchNormalization)]
        assert len(pairs) == len(bns)
        np.testing.assert_allclose(
            folded.predict(images, verbose=0),
            model.predict(images, verbose=0),
            atol=1e-5,
        )
        assert len(model.layers) == num_layers
        for before, after in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(before, after)


# htp (per-channel, the folding's hard case) in CI; default in the slow set.
@pytest.mark.parametrize(
    "config", ["htp", pytest.param("default", marks=pytest.mark.slow)]
)
def test_fold_to_scale_keeps_the_simulation(config):
    from aimet_keras.ptq import fold_all_batch_norms_to_scale
    from aimet_keras.sim import QuantizationSimModel

    model = zoo.load_model("resnet", compile=False)
    calibration = zoo.load_fashion_mnist_slice("calibration")[0][:200]
    images = zoo.load_fashion_mnist_slice("test")[0][:200]
    sim = QuantizationSimModel(model, config_file=config)
    sim.compute_encodings(calibration)
    before = sim.model.predict(images, verbose=0)
    pairs = fold_all_batch_norms_to_scale(sim)
    assert ("stem_conv", "stem_bn") in pairs
    assert not any(
        isinstance(getattr(x, "layer", None), L.BatchNormalization)
        for x in sim.model.layers
    )
    after = sim.model.predict(images, verbose=0)
    if config == "htp":
        # Per-channel grids scale with the weights: the same simulation up
        # to float rounding, which moves a few values by one output level.
        assert np.abs(after - before).mean() < 1e-3
        assert np.mean(after.argmax(-1) == before.argmax(-1)) > 0.99
    # Per-tensor grids are recomputed: close, same decisions.
    assert np.mean(after.argmax(-1) == before.argmax(-1)) > 0.97
    kernel = sim.model.get_layer("stem_conv").param_quantizers["kernel"]
    assert kernel.is_initialized
