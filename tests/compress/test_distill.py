"""Inputs distilled from batch-norm statistics."""

import keras
import numpy as np
import pytest

from aimet_keras import zoo
from aimet_keras.compress import distilled_data
from aimet_keras.compress import spatial_svd


@pytest.fixture(scope="module")
def resnet():
    return zoo.load_model("resnet", compile=False)


@pytest.fixture(scope="module")
def distilled(resnet):
    return distilled_data(resnet, num_images=128, steps=150, verbose=0)


def test_the_batch_norms_see_their_own_statistics(resnet, distilled):
    bns = [
        layer
        for layer in resnet.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    probe = keras.Model(resnet.inputs, [bn.input for bn in bns])
    noise = np.random.default_rng(1).standard_normal(distilled.shape)
    for images, within in ((distilled, True), (noise.astype("f4"), False)):
        misfits = []
        for bn, seen in zip(bns, probe.predict(images, verbose=0)):
            deviation = np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            mean = seen.reshape(-1, seen.shape[-1]).mean(0)
            misfits.append(
                np.abs(mean - bn.moving_mean.numpy()).mean() / deviation.mean()
            )
        assert (max(misfits) < 0.2) == within, misfits


def test_a_refit_on_distilled_inputs_beats_none(resnet, distilled):
    """Spatial SVD's second factors refit on distilled inputs follow the
    original on real images more closely than the weight-only SVD."""
    images, _ = zoo.load_fashion_mnist_slice("calibration")
    ranks = {"stage2_b_conv": 12, "stage3_a_conv": 12, "stage3_b_conv": 16}
    original = resnet.predict(images[:500], verbose=0)
    errors = {}
    for label, data in (("none", None), ("distilled", distilled)):
        smaller = spatial_svd(resnet, ranks, data, 1000)
        out = smaller.predict(images[:500], verbose=0)
        errors[label] = float(np.mean((out - original) ** 2))
    assert errors["distilled"] < 0.7 * errors["none"], errors


def test_bad_models_are_clear_errors():
    inputs = keras.Input((4, 4, 3))
    plain = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="no BatchNormalization"):
        distilled_data(plain, num_images=2, steps=1, verbose=0)
    unsized = keras.Input((None, None, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 3)(unsized))
    with pytest.raises(ValueError, match="unknown size"):
        distilled_data(keras.Model(unsized, x), verbose=0)
    with pytest.raises(ValueError, match="num_images=0"):
        distilled_data(plain, num_images=0)
