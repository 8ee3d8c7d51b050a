"""Long steps show a Keras progress bar when asked, and stay quiet in logs."""

import keras
import numpy as np

from aimet_keras.sim import QuantizationSimModel


def test_long_post_training_steps_show_progress_when_asked(capsys):
    from aimet_keras import ptq

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="b")(x))
    data = np.random.default_rng(0).random((64, 8)).astype("float32")
    ptq.correct_bias(model, data, verbose=1)
    assert "Correcting biases" in capsys.readouterr().out
    sim = QuantizationSimModel(model)
    sim.compute_encodings(data, verbose=0)
    ptq.optimize_activation_ranges(sim, data, ("tf", "mse"), verbose=1)
    shown = capsys.readouterr().out
    assert "Calibrating each scheme" in shown and "2/2" in shown
    ptq.optimize_activation_ranges(sim, data, ("tf", "mse"))  # "auto"
    assert capsys.readouterr().out == ""


def test_the_compression_search_shows_progress_when_asked(capsys):
    from aimet_keras import compress

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="b")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    compress.compress_model(
        model,
        lambda m, n: 1.0,
        None,
        0.8,
        num_comp_ratio_candidates=4,
        verbose=1,
    )
    shown = capsys.readouterr().out
    assert "Scoring 2 layers x 3 ratios" in shown and "6/6" in shown
