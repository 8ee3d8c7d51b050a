"""Range learning keeps the grids the target ties together tied.

TFLite fixes some grids (sigmoid and softmax outputs at 1/256), keeps
others on their input's (average pooling), and derives the int32 bias step from
the input's and the kernel's. After QAT with range learning the sim must
still compute on exactly those grids, or the exported model departs from
it (EfficientNetB0 after one epoch: 95.6% top-1 agreement with learned
fixed grids and stale bias steps).
"""

import keras
import numpy as np
import pytest

from aimet_keras import export_tflite
from aimet_keras.sim import QuantizationSimModel
from tests.export import run_tflite


def _model():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Activation("swish", name="swish")(x)
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(8, 3, name="conv2")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(4, name="head")(x)
    outputs = keras.layers.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(256, 12, 12, 3)).astype("float32")
    labels = rng.integers(0, 4, size=256)
    sim = QuantizationSimModel(
        _model(),
        config_file="tflite_int8",
        quant_scheme="training_range_learning_with_tf_init",
    )
    sim.compute_encodings(images[:64])
    before = {
        q.name: q.encoding.delta.copy()
        for w in sim.quant_wrappers()
        for q in w.quantizers
        if q.enabled and q.encoding is not None
    }
    # A large learning rate, so every learned range moves visibly.
    sim.model.compile(
        optimizer=keras.optimizers.Adam(3e-2),
        loss="sparse_categorical_crossentropy",
    )
    sim.model.fit(images, labels, batch_size=32, epochs=2, verbose=0)
    return sim, images, before


def test_learned_ranges_moved(trained):
    sim, _, before = trained
    source = sim.model.get_layer("swish").output_quantizers[0]
    assert source.range_learning
    assert not np.allclose(source.encoding.delta, before[source.name])


def test_fixed_grids_are_not_learned(trained):
    sim, _, _ = trained
    softmax = sim.model.get_layer("softmax").output_quantizers[0]
    sigmoid = sim.model.get_layer("swish").internal_quantizers["sigmoid"]
    for quantizer in (softmax, sigmoid):
        assert not quantizer.range_learning
        assert float(quantizer.encoding.delta) == pytest.approx(1 / 256)


def test_pooling_computes_on_its_inputs_learned_grid(trained):
    sim, images, _ = trained
    source = sim.model.get_layer("swish").output_quantizers[0]
    pool = sim.model.get_layer("pool").output_quantizers[0]
    assert pool.tied and not pool.range_learning
    assert float(pool.encoding.delta) == float(source.encoding.delta)
    # Computed, not only reported: pooled values are on the source's grid.
    probe = keras.Model(sim.model.inputs, sim.model.get_layer("pool").output)
    pooled = probe.predict(images[:8], verbose=0)
    levels = pooled / float(source.encoding.delta)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)


def test_bias_steps_are_input_step_times_kernel_step(trained):
    sim, _, _ = trained
    for name, source in (("conv2", "pool"), ("head", "gap")):
        wrapper = sim.model.get_layer(name)
        bias = wrapper.param_quantizers["bias"]
        kernel = wrapper.param_quantizers["kernel"]
        step = sim.model.get_layer(source).output_quantizers[0].encoding.delta
        np.testing.assert_allclose(
            bias.encoding.delta, step * kernel.encoding.delta, rtol=1e-6
        )
        quantized = bias(wrapper.layer.bias).numpy()
        levels = quantized / bias.encoding.delta
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)


def test_export_after_training_follows_the_sim(trained, tmp_path):
    sim, images, _ = trained
    exported = export_tflite(sim, tmp_path / "qat.tflite")
    got = run_tflite(exported.path, images)
    want = sim.model.predict(images, verbose=0)
    # Both on the softmax's 1/256 grid: at most a step apart, rarely one.
    difference = np.abs(got - want) * 256
    assert difference.max() <= 1.01
    assert np.mean(difference > 0.01) < 0.02


def test_saved_model_keeps_the_tied_grids(trained, tmp_path):
    sim, images, _ = trained
    path = tmp_path / "qat.keras"
    sim.model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(images[:32], verbose=0),
        sim.model.predict(images[:32], verbose=0),
        atol=1e-6,
    )


def test_a_file_keeps_ties_it_agrees_with_and_breaks_the_others(tmp_path):
    from aimet_keras.export import encodings as encodings_lib
    from aimet_keras.sim import export as export_lib

    rng = np.random.default_rng(1)
    images = rng.normal(size=(32, 12, 12, 3)).astype("float32")
    sim = QuantizationSimModel(_model(), config_file="tflite_int8")
    sim.compute_encodings(images)
    pool = sim.model.get_layer("pool").output_quantizers[0]
    data = export_lib.sim_encodings(sim)
    path = encodings_lib.write_encodings(tmp_path / "same.encodings", data)
    sim.load_encodings_to_sim(path)
    assert pool.tied
    # Another grid for the pool's output: the file's wins.
    (name,) = [
        n for n, (q, _) in export_lib._quantizer_table(sim).items() if q is pool
    ]
    entry = data["activation_encodings"][name][0]
    entry["max"], entry["min"] = 2 * entry["max"], 2 * entry["min"]
    entry["scale"] *= 2
    path = encodings_lib.write_encodings(tmp_path / "other.encodings", data)
    sim.load_encodings_to_sim(path)
    assert not pool.tied
    source = sim.model.get_layer("swish").output_quantizers[0]
    assert float(pool.encoding.delta) == pytest.approx(
        2 * float(source.encoding.delta), rel=1e-6
    )
