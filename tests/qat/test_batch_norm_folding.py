"""Batch norm folding simulated in QAT: training, freezing, finalizing."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras import qat
from aimet_keras import zoo
from aimet_keras.sim import QuantizationSimModel


def _pair(kind):
    if kind == "conv":
        layer = keras.layers.Conv2D(6, 3, name="lin")
        shape = (None, 9, 9, 3)
    elif kind == "depthwise":
        layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="lin")
        shape = (None, 9, 9, 3)
    else:
        layer = keras.layers.Dense(6, name="lin")
        shape = (None, 5)
    layer.build(shape)
    out_shape = layer.compute_output_shape(shape)
    bn = keras.layers.BatchNormalization(name="bn")
    bn.build(out_shape)
    rng = np.random.default_rng(0)
    channels = out_shape[-1]
    bn.gamma.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    bn.beta.assign(rng.normal(size=channels).astype("float32"))
    bn.moving_mean.assign(rng.normal(size=channels).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 3, channels).astype("float32"))
    layer.bias.assign(rng.normal(size=channels).astype("float32"))
    x = rng.normal(size=(8, *shape[1:])).astype("float32")
    return layer, bn, x


def _clone(layer):
    copy = layer.__class__.from_config(layer.get_config())
    copy.build_from_config(layer.get_build_config())
    copy.set_weights(layer.get_weights())
    return copy


@pytest.mark.parametrize("kind", ["conv", "depthwise", "dense"])
def test_training_and_inference_match_the_unfolded_pair(kind):
    layer, bn, x = _pair(kind)
    ref_layer, ref_bn = _clone(layer), _clone(bn)
    folded = qat.FoldedBatchNorm(layer, bn)

    np.testing.assert_allclose(
        folded(x, training=False),
        ref_bn(ref_layer(x), training=False),
        rtol=1e-5,
        atol=1e-5,
    )
    # Training: batch statistics normalize, and the moving ones track them.
    np.testing.assert_allclose(
        folded(x, training=True),
        ref_bn(ref_layer(x), training=True),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), ref_bn.moving_mean.numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), ref_bn.moving_variance.numpy(), atol=1e-5
    )


def test_gradients_reach_kernel_and_batch_norm_parameters():
    layer, bn, x = _pair("conv")
    folded = qat.FoldedBatchNorm(layer, bn)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(folded(x, training=True) ** 2)
    grads = tape.gradient(loss, [layer.kernel, bn.gamma, bn.beta])
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def test_rejects_a_layer_with_an_activation():
    layer = keras.layers.Conv2D(2, 3, activation="relu", name="c")
    layer.build((None, 5, 5, 1))
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3, 3, 2))
    with pytest.raises(ValueError, match="'c' has an activation"):
        qat.FoldedBatchNorm(layer, bn)


@pytest.fixture(scope="module")
def calibration():
    images, labels = zoo.load_fashion_mnist_slice("calibration")
    return images[:128], labels[:128]


def _sim(calibration, **kwargs):
    model = zoo.load_model("mobilenet_v2", compile=False)
    sim = QuantizationSimModel(model, config_file="htp", **kwargs)
    sim.compute_encodings(calibration[0])
    return sim


def test_simulated_folding_keeps_the_sim_outputs_then_finalizes(
    calibration, tmp_path
):
    images = calibration[0]
    sim = _sim(calibration)
    batch_norms = [
        layer.name
        for layer in sim._prepared.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    before = sim.model.predict(images, verbose=0)
    pairs = qat.simulate_batch_norm_folding(sim)
    # Every batch norm of MobileNetV2 follows a conv or depthwise conv.
    assert sorted(bn for _, bn in pairs) == sorted(batch_norms)
    depthwise = sim.model.get_layer("block1_dw")
    assert isinstance(depthwise.layer, qat.FoldedBatchNorm)
    assert depthwise.param_quantizers["kernel"].axis == (-2, -1)
    during = sim.model.predict(images, verbose=0)
    # Same grids scaled by the fold: the same predictions, to rounding
    # (a few output steps where a rounding flips upstream).
    assert np.mean(during.argmax(1) == before.argmax(1)) >= 0.99
    assert np.mean(np.abs(during - before)) < 2e-3

    with pytest.raises(ValueError, match="finalize_batch_norm_folding"):
        sim.export(str(tmp_path), "too_early")
    assert not list(tmp_path.iterdir())

    assert qat.finalize_batch_norm_folding(sim)
    after = sim.model.predict(images, verbose=0)
    np.testing.assert_allclose(after, during, atol=2e-3)
    assert not any(
        isinstance(w.layer, qat.FoldedBatchNorm) for w in sim.quant_wrappers()
    )
    paths = sim.export(str(tmp_path), "folded")
    assert paths["encodings"].exists()


def test_frozen_statistics_train_what_inference_runs(calibration):
    images, labels = calibration
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    sim = QuantizationSimModel(model, default_param_bw=4)
    sim.compute_encodings(images)
    qat.simulate_batch_norm_folding(sim)
    wrapper = sim.model.get_layer("conv")
    bn = wrapper.layer.batch_norm
    x = images[:16]
    moving = bn.moving_mean.numpy().copy()
    assert not np.allclose(
        wrapper(x, training=True), wrapper(x, training=False), atol=1e-3
    )
    assert not np.allclose(bn.moving_mean.numpy(), moving)
    wrapper.statistics_frozen = True
    moving = bn.moving_mean.numpy().copy()
    np.testing.assert_allclose(
        wrapper(x, training=True), wrapper(x, training=False), atol=1e-6
    )
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving)


def test_a_model_with_folded_layers_saves_and_loads(calibration, tmp_path):
    images = calibration[0][:16]
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    sim = QuantizationSimModel(model)
    sim.compute_encodings(images)
    qat.simulate_batch_norm_folding(sim)
    path = tmp_path / "folded.keras"
    sim.model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0),
        sim.model.predict(images, verbose=0),
        atol=1e-6,
    )


def test_kernel_grids_scale_exactly_with_the_fold(calibration):
    # Min-max grids: the scaled grid must be the one the folded kernel
    # calibrates to (a signed 4-bit grid's extents differ by one step, so a
    # wrong scaling shows as 8/7).
    model = zoo.load_model("resnet", compile=False)
    sim = QuantizationSimModel(
        model, quant_scheme="tf", default_param_bw=4, config_file="htp"
    )
    sim.compute_encodings(calibration[0][:32])
    qat.simulate_batch_norm_folding(sim)
    for name in ("stem_conv", "stage2_proj_conv"):
        wrapper = sim.model.get_layer(name)
        folded = wrapper.weight_values()["kernel"].numpy()
        extent = np.abs(folded).reshape(-1, folded.shape[-1]).max(0)
        encoding = wrapper.param_quantizers["kernel"].encoding
        np.testing.assert_allclose(encoding.max, extent, rtol=1e-5)
