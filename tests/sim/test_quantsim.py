"""QuantizationSimModel on the reference models and small models."""

import keras
import numpy as np
import pytest

from aimet_keras import zoo
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import QuantizationWrapper


@pytest.fixture(scope="module")
def data():
    calibration, _ = zoo.load_fashion_mnist_slice("calibration")
    return calibration[:500], zoo.load_fashion_mnist_slice("test")


@pytest.fixture(scope="module")
def resnet():
    return zoo.load_model("resnet")


def test_w8a8_resnet_stays_within_half_a_point(resnet, data):
    calibration, (images, labels) = data
    weights_before = [w.copy() for w in resnet.get_weights()]
    sim = QuantizationSimModel(resnet)
    sim.compute_encodings(calibration)
    sim.model.compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    fp32 = resnet.evaluate(images, labels, batch_size=500, verbose=0)[1]
    w8a8 = sim.model.evaluate(images, labels, batch_size=500, verbose=0)[1]
    assert abs(fp32 - w8a8) <= 0.005
    # Quantization is really applied: outputs move, a little.
    float_out = resnet.predict(images[:64], verbose=0)
    sim_out = sim.model.predict(images[:64], verbose=0)
    assert 0 < np.abs(float_out - sim_out).max() < 0.2
    # The caller's model is untouched.
    assert not any(isinstance(x, QuantizationWrapper) for x in resnet.layers)
    for before, after in zip(weights_before, resnet.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_w4_weights_hurt_more_than_w8(resnet, data):
    calibration, (images, labels) = data
    results = {}
    for bits in (8, 4):
        sim = QuantizationSimModel(
            resnet, default_param_bw=bits, config_file="htp"
        )
        sim.compute_encodings(calibration[:200])
        predictions = sim.model.predict(images[:1000], verbose=0)
        results[bits] = np.mean(predictions.argmax(-1) == labels[:1000])
    assert results[4] < results[8]


def test_callback_form_and_summary(resnet, data):
    calibration, _ = data
    seen = []

    def forward(model, batches):
        for batch in batches:
            seen.append(len(batch))
            model(batch)

    sim = QuantizationSimModel(resnet, quant_scheme="post_training_tf")
    sim.compute_encodings(forward, [calibration[:100], calibration[100:200]])
    assert seen == [100, 100]
    relu = sim.model.get_layer("stem_relu")
    assert relu.output_quantizers[0].encoding is not None
    assert relu.output_quantizers[0].encoding.min == 0.0
    lines = []
    sim.summary(print_fn=lines.append)
    assert any(line.strip().startswith("stem_conv (Conv)") for line in lines)
    assert any("int8 sym" in line for line in lines)


def test_simulated_model_saves_and_reloads(tmp_path, data):
    calibration, (images, _) = data
    model = zoo.load_model("mobilenet_v2")
    sim = QuantizationSimModel(model, config_file="tflite_int8")
    sim.compute_encodings(calibration[:100])
    want = sim.model.predict(images[:16], verbose=0)
    path = tmp_path / "sim.keras"
    sim.model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(images[:16], verbose=0), want, atol=1e-6
    )


def test_unused_activation_quantizers_are_disabled():
    inputs = keras.Input((4,))
    used = keras.layers.Dense(3, name="used")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="unused")(used))
    sim = QuantizationSimModel(model)

    def first_layer_only(m, _):
        keras.Model(m.input, m.get_layer("used").output)(np.ones((2, 4)))

    sim.compute_encodings(first_layer_only)
    assert sim.model.get_layer("used").output_quantizers[0].enabled
    assert not sim.model.get_layer("unused").output_quantizers[0].enabled


def test_bad_input():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="'subclassed'.*not built.*input"):
        QuantizationSimModel(Subclassed())
    with pytest.raises(TypeError, match="keras.Model"):
        QuantizationSimModel(keras.layers.Dense(2))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="quant_scheme='best'"):
        QuantizationSimModel(model, quant_scheme="best")
    with pytest.raises(ValueError, match="rounding_mode='stochastic'"):
        QuantizationSimModel(model, rounding_mode="stochastic")
    with pytest.raises(ValueError, match="default_param_bw=1 is out of range"):
        QuantizationSimModel(model, default_param_bw=1)
    with pytest.raises(ValueError, match="default_output_bw=40"):
        QuantizationSimModel(model, default_output_bw=40)
    with pytest.raises(ValueError, match="default_data_type='float8'"):
        QuantizationSimModel(model, default_data_type="float8")
    with pytest.raises(ValueError, match="'sequential.*' is not built"):
        QuantizationSimModel(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="per_chanel"):
        QuantizationSimModel(
            model, config_file={"defaults": {"per_chanel": "True"}}
        )


def test_calibration_shows_progress_when_asked(capsys):
    inputs = keras.Input((8,))
    sim = QuantizationSimModel(
        keras.Model(inputs, keras.layers.Dense(2)(inputs))
    )
    data = np.random.default_rng(0).random((100, 8)).astype("float32")
    sim.compute_encodings(data, verbose=1)
    shown = capsys.readouterr().out
    assert "Calibrating" in shown and "4/4" in shown  # 100 samples, 32 a batch
    sim.compute_encodings(data)  # "auto": not a terminal here
    assert capsys.readouterr().out == ""


def test_quantize_model_one_liner(resnet, data):
    import aimet_keras

    calibration, (images, _) = data
    quantized = aimet_keras.quantize_model(resnet, calibration[:200])
    assert isinstance(quantized.get_layer("stem_conv"), QuantizationWrapper)
    predictions = quantized.predict(images[:32], verbose=0)
    agreement = np.mean(
        predictions.argmax(-1)
        == resnet.predict(images[:32], verbose=0).argmax(-1)
    )
    assert agreement >= 0.9


def test_quantize_model_folds_batch_norms_so_it_exports(resnet, data, tmp_path):
    import aimet_keras

    calibration, (images, _) = data
    bn_names = {
        layer.name
        for layer in resnet.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    quantized = aimet_keras.quantize_model(resnet, calibration[:64])
    assert not bn_names & {layer.name for layer in quantized.layers}
    exported = aimet_keras.export_tflite(quantized, tmp_path / "r.tflite")
    assert exported.path.exists()
    # The caller's model keeps its batch norms.
    assert bn_names <= {layer.name for layer in resnet.layers}
    quantized.save(tmp_path / "q.keras")  # the sim it keeps is not saved
    with pytest.raises(TypeError, match="QuantizationSimModel or the model"):
        aimet_keras.export_tflite(resnet, tmp_path / "fp32.tflite")
    kept = aimet_keras.quantize_model(
        resnet, calibration[:64], fold_batch_norms=False
    )
    assert bn_names <= {layer.name for layer in kept.layers}
    with pytest.raises(ValueError, match="BatchNormalization|batch norm"):
        aimet_keras.export_tflite(kept, tmp_path / "kept.tflite")


def test_quantize_model_exports_a_stock_softmax_head(tmp_path):
    import aimet_keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, name="separable")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(size=(16, 8, 8, 3))
    quantized = aimet_keras.quantize_model(model, images.astype("float32"))
    exported = aimet_keras.export_tflite(quantized, tmp_path / "m.tflite")
    assert exported.path.exists()
    # The caller's model is as it was.
    assert model.get_layer("head").activation.__name__ == "softmax"


def test_quantize_model_without_data_is_ready_for_qat(resnet, data, tmp_path):
    import aimet_keras

    calibration, (images, labels) = data
    model = aimet_keras.quantize_model(resnet)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    labels_for_fit = resnet.predict(calibration, verbose=0).argmax(-1)
    model.fit(calibration, labels_for_fit, batch_size=100, epochs=1, verbose=0)
    quantizers = [
        q
        for layer in model.layers
        if isinstance(layer, QuantizationWrapper)
        for q in layer.quantizers
        if q.enabled
    ]
    assert quantizers and all(q.is_initialized for q in quantizers)
    fp32 = resnet.evaluate(images, labels, verbose=0)[1]
    qat = model.evaluate(images, labels, verbose=0)[1]
    assert abs(fp32 - qat) < 0.02
    # The ranges are those of the first batch: the model saves with them.
    path = tmp_path / "qat.keras"
    model.save(path)
    np.testing.assert_allclose(
        keras.models.load_model(path).predict(images[:32], verbose=0),
        model.predict(images[:32], verbose=0),
        atol=1e-6,
    )


def test_weight_grids_follow_the_weights_across_calibrations():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs))
    data = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    sim = QuantizationSimModel(model)
    sim.compute_encodings(data)
    wrapper = sim.model.get_layer("fc")
    quantizer = wrapper.param_quantizers["kernel"]
    first = quantizer.encoding.max.copy()
    sim.compute_encodings(data)
    np.testing.assert_array_equal(quantizer.encoding.max, first)
    wrapper.layer.kernel.assign(wrapper.layer.kernel.numpy() * 3.0)
    sim.compute_encodings(data)
    np.testing.assert_allclose(quantizer.encoding.max, first * 3.0, rtol=1e-2)


def test_encoding_constraints_fix_an_output_grid(tmp_path):
    """tflite_int8 pins softmax's output to TFLite's grid, whatever the data."""
    inputs = keras.Input((6,), name="x")
    logits = keras.layers.Dense(5, name="fc")(inputs)
    outputs = keras.layers.Softmax(name="probabilities")(logits)
    model = keras.Model(inputs, outputs)
    # Near-uniform outputs: calibration alone would pick a range near 0.2.
    data = 0.01 * np.random.default_rng(0).normal(size=(64, 6))
    sim = QuantizationSimModel(model, config_file="tflite_int8")
    sim.compute_encodings(data.astype("float32"))
    quantizer = sim.quant_wrappers()[-1].output_quantizers[0]
    assert quantizer.fixed_range == (0.0, 0.99609375)
    assert float(quantizer.encoding.delta) == 1 / 256
    assert int(quantizer.encoding.offset) == 0
    assert sim.quant_wrappers()[0].output_quantizers[0].fixed_range is None
    path = tmp_path / "sim.keras"
    sim.model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("probabilities").output_quantizers[
        0
    ].fixed_range == (0.0, 0.99609375)


def test_calibration_then_predict_with_a_fused_batch_norm():
    # Under tflite_int8 a standalone BatchNormalization (after an Add) has
    # only weight quantizers on, so inference fuses it into one kernel;
    # calibration, which hands the quantized weights to its own trace, must
    # not leave that trace's tensors in the kept kernel.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Add()(
        [keras.layers.Conv2D(4, 1)(inputs), keras.layers.Conv2D(4, 1)(inputs)]
    )
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.ReLU()(x)
    sim = QuantizationSimModel(
        keras.Model(inputs, outputs), config_file="tflite_int8"
    )
    data = np.random.default_rng(0).random((8, 8, 8, 3)).astype("float32")
    sim.compute_encodings(data)
    traced = sim.model.predict(data, verbose=0)
    np.testing.assert_allclose(traced, sim.model(data), atol=1e-6)
