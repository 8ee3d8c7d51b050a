"""keras.ops calls with Python constants, as keras.applications writes them.

MobileNetV3's hard sigmoid is ``ReLU(6.0)(x + 3.0) * (1.0 / 6.0)``: in a
functional model each operator is an op called with a tensor and a float.
"""

import keras
import numpy as np

from aimet_keras.sim import QuantizationSimModel


def _hard_swish_model():
    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(6, name="fc")(inputs)
    gate = keras.layers.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)
    outputs = keras.layers.Multiply(name="hard_swish")([x, gate])
    return keras.Model(inputs, outputs)


def test_ops_with_constants_are_simulated_and_reload(tmp_path):
    model = _hard_swish_model()
    data = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    sim = QuantizationSimModel(model)
    sim.compute_encodings(data)
    expected = model.predict(data, verbose=0)
    got = sim.model.predict(data, verbose=0)
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    # Quantized, so not equal; within a few of the output's steps.
    assert 0 < np.max(np.abs(got - expected)) <= 4 * step
    # The add and the multiply by a constant are wrapped, their constants
    # kept: each quantizes its one tensor input and its output.
    # (The ops' names carry global counters: compared by class.)
    counts = sorted(
        (type(w.layer).__name__, len(w.input_quantizers))
        for w in sim.quant_wrappers()
    )
    assert counts == [
        ("Add", 1),
        ("Dense", 1),
        ("Multiply", 1),  # x * (1 / 6)
        ("Multiply", 2),  # the hard_swish layer
        ("ReLU", 1),
    ]
    path = tmp_path / "sim.keras"
    sim.model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(data, verbose=0), got)
