"""AdaroundAtTrainEnd: a training script that ends with a rounded export."""

import json

import keras
import numpy as np
import pytest

from aimet_keras import ptq
from aimet_keras.export import tflite as tflite_lib


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_fit_ends_with_a_rounded_sim_and_its_tflite_model(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(96, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 3, 96)
    callback = ptq.AdaroundAtTrainEnd(
        images,
        tflite_path=tmp_path / "m.tflite",
        encodings_path=tmp_path / "enc",
        verbose=0,
        config_file="tflite_int8",
        default_param_bw=4,
        num_iterations=50,
    )
    model = _model()
    model.fit(images, labels, epochs=1, verbose=0, callbacks=[callback])
    sim = callback.sim
    layers = {layer.name for layer in sim.model.layers}
    assert "bn" not in layers and "head" in layers  # folded, split
    # The sim computes on AdaRound's weight grids, frozen.
    written = json.loads((tmp_path / "enc" / "adaround.encodings").read_text())
    kernel = sim.model.get_layer("conv").param_quantizers["kernel"]
    assert id(kernel) in sim._frozen
    (entry, *_) = written["conv/kernel:0"]
    assert kernel.encoding.bitwidth == entry["bitwidth"] == 4
    interpreter = tflite_lib.load_interpreter(
        model_path=str(callback.exported.path)
    )
    interpreter.allocate_tensors()  # a loadable integer model
    # The caller's model is the trained float model, untouched.
    assert "bn" in {layer.name for layer in model.layers}


def test_unknown_arguments_are_named():
    with pytest.raises(TypeError, match="num_iteration"):
        ptq.AdaroundAtTrainEnd(np.zeros((2, 3)), num_iteration=5)
