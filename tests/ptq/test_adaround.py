"""AdaRound: better layer outputs than nearest, weights on the grid, frozen
by the sim, at every bitwidth, per-tensor and per-channel."""

import json

import keras
import numpy as np
import pytest

from aimet_keras.ptq import Adaround
from aimet_keras.ptq import AdaroundParameters
from aimet_keras.ptq import adaround
from aimet_keras.quant import quantize_dequantize
from aimet_keras.sim import QuantizationSimModel

L = keras.layers
RNG = np.random.default_rng(0)
DATA = RNG.normal(size=(256, 8, 8, 3)).astype("float32")


def _model():
    keras.utils.set_random_seed(0)  # the same weights every run
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(4, name="fc")(x))


def test_rectified_sigmoid_starts_at_the_fraction():
    kernel = RNG.normal(size=(3, 3, 2, 4)).astype("float32")
    layer = L.Conv2D(4, 3)
    layer.build((None, 8, 8, 2))
    layer.kernel.assign(kernel)
    from aimet_keras.quant import compute_encoding

    encoding = compute_encoding(-1.0, 1.0, 4, is_symmetric=True)
    params = AdaroundParameters(DATA, 1)
    rounding = adaround._LayerRounding(layer, None, encoding, None, params)
    scaled = kernel / rounding.delta
    h = adaround._rectified_sigmoid(rounding.alpha).numpy()
    np.testing.assert_allclose(h, scaled - np.floor(scaled), atol=1e-5)
    # Beta: 20 at the end of the warm start, 2 at the end.
    assert adaround._beta_at(20, 100, 0.2, (20, 2)) == pytest.approx(20)
    assert adaround._beta_at(100, 100, 0.2, (20, 2)) == pytest.approx(2)


@pytest.mark.parametrize(
    "bits,config", [(4, "default"), (2, "htp"), (8, "tflite_int8")]
)
def test_adaround_beats_nearest_and_the_sim_freezes_it(bits, config, tmp_path):
    model = _model()
    weights = [w.copy() for w in model.get_weights()]
    params = AdaroundParameters(
        DATA, num_batches=8, default_num_iterations=150, batch_size=32
    )
    rounded = Adaround.apply_adaround(
        model,
        params,
        tmp_path,
        "small",
        default_param_bw=bits,
        default_quant_scheme="tf",
        config_file=config,
        verbose=False,
    )
    path = tmp_path / "small.encodings"
    flat = json.loads(path.read_text())
    assert set(flat) == {"conv/kernel:0", "dw/kernel:0", "fc/kernel:0"}
    sim = QuantizationSimModel(
        rounded, quant_scheme="tf", default_param_bw=bits, config_file=config
    )
    sim.set_and_freeze_param_encodings(path)
    sim.compute_encodings(DATA[:64])
    for name in ("conv", "dw", "fc"):
        wrapper = sim.model.get_layer(name)
        quantizer = wrapper.param_quantizers["kernel"]
        assert quantizer.bitwidth == bits
        kernel = wrapper.layer.kernel
        # The AdaRounded weights sit on the frozen grid.
        np.testing.assert_allclose(
            quantize_dequantize(
                kernel.value, quantizer.encoding, axis=quantizer.axis
            ).numpy(),
            kernel.numpy(),
            atol=1e-6,
        )
    # Against nearest rounding on the same grid (weights only).
    nearest = QuantizationSimModel(
        model, quant_scheme="tf", default_param_bw=bits, config_file=config
    )
    nearest.compute_encodings(DATA[:64])
    for sim_ in (sim, nearest):
        for wrapper in sim_.quant_wrappers():
            for quantizer in [
                *wrapper.input_quantizers,
                *wrapper.output_quantizers,
            ]:
                quantizer.enabled = False
        sim_._retrace()
    reference = model.predict(DATA, verbose=0)
    error_ada = np.mean((sim.model.predict(DATA, verbose=0) - reference) ** 2)
    error_nearest = np.mean(
        (nearest.model.predict(DATA, verbose=0) - reference) ** 2
    )
    # At 8 bits nearest is already near-optimal: no worse is the claim.
    assert (
        error_ada < error_nearest if bits <= 4 else error_ada <= error_nearest
    )
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
