"""A saved sim holds the model and its grids, not calibration statistics."""

import zipfile

import h5py
import keras
import numpy as np

from aimet_keras.sim import QuantizationSimModel


def _wide_model():
    # Many output channels: per-channel weight statistics weigh most.
    inputs = keras.Input((8, 8, 16), name="x")
    x = keras.layers.Conv2D(512, 1, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(512, 1, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="fc")(x))


def test_saved_sim_is_about_the_size_of_the_float_model(tmp_path):
    model = _wide_model()
    data = np.random.default_rng(0).normal(size=(32, 8, 8, 16))
    data = data.astype("float32")
    sim = QuantizationSimModel(model, quant_scheme="tf_enhanced")
    sim.compute_encodings(data)
    model.save(tmp_path / "fp32.keras")
    sim.model.save(tmp_path / "sim.keras")
    fp32_size = (tmp_path / "fp32.keras").stat().st_size
    sim_size = (tmp_path / "sim.keras").stat().st_size
    # No observer statistics in the file: only the layers' weights and the
    # quantizers' grids.
    with zipfile.ZipFile(tmp_path / "sim.keras") as archive:
        archive.extract("model.weights.h5", tmp_path)
    saved = []
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        weights.visititems(
            lambda name, item: (
                saved.append(name) if isinstance(item, h5py.Dataset) else None
            )
        )
    assert saved and not [name for name in saved if "/observer/" in name]
    assert sim_size <= 1.2 * fp32_size

    reloaded = keras.saving.load_model(tmp_path / "sim.keras")
    np.testing.assert_array_equal(
        reloaded.predict(data, verbose=0), sim.model.predict(data, verbose=0)
    )
    # The statistics start empty, so calibrating again starts afresh.
    quantizer = reloaded.get_layer("conv2").param_quantizers["kernel"]
    assert int(quantizer.observer.num_updates.numpy()) == 0
