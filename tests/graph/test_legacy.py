"""Keras 2 (tf_keras) models into Keras 3, outputs unchanged."""

import json
import pathlib
import shutil

import h5py
import keras
import numpy as np
import pytest

from aimet_keras import graph
from aimet_keras.sim import QuantizationSimModel

DATA = pathlib.Path(__file__).parent / "data"
MODEL = DATA / "tf_keras_model.h5"  # written by tf_keras 2.21 (make_...py)


def _reference():
    with np.load(DATA / "tf_keras_model_outputs.npz") as data:
        return data["images"], data["outputs"]


def test_keras_3_alone_refuses_the_keras_2_file():
    with pytest.raises((TypeError, ValueError), match="groups"):
        keras.saving.load_model(MODEL, compile=False)


def test_the_keras_2_file_converts_with_the_same_outputs():
    images, outputs = _reference()
    converted = graph.from_tf_keras(MODEL)
    np.testing.assert_allclose(
        converted.predict(images, verbose=0), outputs, atol=1e-5
    )


def test_the_sim_takes_the_keras_2_file_by_path():
    images, outputs = _reference()
    sim = QuantizationSimModel(str(MODEL))
    sim.compute_encodings(images)
    simulated = sim.model.predict(images, verbose=0)
    assert np.mean(simulated.argmax(-1) == outputs.argmax(-1)) >= 0.75


def test_a_layer_keras_3_lacks_is_named(tmp_path):
    broken = tmp_path / "unknown.h5"
    shutil.copyfile(MODEL, broken)
    with h5py.File(broken, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        config["config"]["layers"][2]["class_name"] = "FancyConv"
        file.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ValueError, match="unknown.h5.*FancyConv"):
        graph.from_tf_keras(broken)


def test_a_live_tf_keras_model_converts_and_is_checked():
    k2 = pytest.importorskip("tf_keras")  # the bench extra installs it
    inputs = k2.Input((6, 6, 2))
    x = k2.layers.DepthwiseConv2D(3)(inputs)
    outputs = k2.layers.Dense(3)(k2.layers.Flatten()(x))
    model = k2.Model(inputs, outputs)
    converted = graph.from_tf_keras(model)
    images = np.random.default_rng(0).random((4, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(
        converted.predict(images, verbose=0),
        model.predict(images, verbose=0),
        atol=1e-5,
    )
