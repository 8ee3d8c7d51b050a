"""export_tflite: PReLU layers run as int8 PRELU ops on the sim's grids."""

import os

import keras
import numpy as np
import pytest

import aimet_keras
from aimet_keras import export_tflite
from aimet_keras import ptq
from aimet_keras.export import tflite as tflite_lib
from aimet_keras.sim import QuantizationSimModel
from tests.export import run_tflite


def _prelu_model():
    """Conv + PReLU(shared_axes=[1, 2]), then Dense + PReLU(): alphas of
    shape ``(1, 1, C)`` and ``(C,)``, as in mtcnn's RNet and ONet."""
    inputs = keras.Input((8, 8, 3), name="x")
    x = keras.layers.Conv2D(6, 3, name="conv")(inputs)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu_conv")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(10, name="fc")(x)
    outputs = keras.layers.PReLU(name="prelu_fc")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    for name in ("prelu_conv", "prelu_fc"):
        layer = model.get_layer(name)
        # Keras initialises alpha to 0 (a ReLU): slopes of both signs.
        alpha = rng.uniform(-0.5, 0.5, layer.alpha.shape).astype("float32")
        layer.set_weights([alpha])
    return model


def _calibrated(model, **options):
    images = np.random.default_rng(0).normal(size=(128, 8, 8, 3))
    images = images.astype("float32")
    sim = QuantizationSimModel(model, **options)
    sim.compute_encodings(images)
    return sim, images


def _sim_alpha(sim, layer):
    wrapper = {w.name: w for w in sim.quant_wrappers()}[layer]
    ((variable, quantizer),) = wrapper.quantized_weights()
    return np.asarray(quantizer(variable)), quantizer.encoding


def _file_alphas(interpreter, layers):
    """``{layer: (int8 values, scale, zero point)}`` of each PReLU's alpha."""
    found = {}
    for tensor in interpreter.get_tensor_details():
        # The layer's own output is named <layer>, its weights <layer>/<i>.
        layer, _, inner = tensor["name"].partition("/")
        if layer in layers and inner and tensor["dtype"] == np.int8:
            assert layer not in found, tensor["name"]  # the only int8 weight
            found[layer] = (
                interpreter.get_tensor(tensor["index"]),
                *tensor["quantization"],
            )
    return found


def test_prelu_is_an_int8_op_with_the_sims_alpha(tmp_path):
    sim, images = _calibrated(_prelu_model(), config_file="tflite_int8")
    exported = export_tflite(sim, tmp_path / "m.tflite", allow_changes=False)
    assert exported.changes == ()
    interpreter = tflite_lib.load_interpreter(model_path=str(exported.path))
    ops = tflite_lib.tflite_ops(interpreter)
    prelus = [(i, o) for name, i, o in ops if name == "PRELU"]
    assert prelus == [(("int8", "int8"), ("int8",))] * 2
    # The float island the converter wrote is gone: only the boundaries
    # (de)quantize.
    names = [name for name, _, _ in ops]
    assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE"
    assert "QUANTIZE" not in names[1:] and "DEQUANTIZE" not in names[:-1]
    # Each alpha is the sim's quantized alpha, on the sim's grid.
    layers = ("prelu_conv", "prelu_fc")
    for layer, (values, scale, zero_point) in _file_alphas(
        interpreter, layers
    ).items():
        expected, encoding = _sim_alpha(sim, layer)
        assert zero_point == 0
        np.testing.assert_allclose(scale, float(encoding.delta), rtol=1e-6)
        np.testing.assert_allclose(
            values.reshape(expected.shape) * scale, expected, atol=1e-7
        )
        assert np.count_nonzero(values) > values.size // 2  # not the init


def test_4_bit_alpha_keeps_its_grid_in_int8(tmp_path):
    sim, _ = _calibrated(
        _prelu_model(), config_file="tflite_int8", default_param_bw=4
    )
    exported = export_tflite(sim, tmp_path / "m.tflite", allow_changes=False)
    interpreter = tflite_lib.load_interpreter(model_path=str(exported.path))
    alphas = _file_alphas(interpreter, ("prelu_conv", "prelu_fc"))
    assert len(alphas) == 2
    for layer, (values, scale, _) in alphas.items():
        expected, encoding = _sim_alpha(sim, layer)
        assert encoding.bitwidth == 4
        # The 4-bit levels, stored in int8 with the same step.
        assert np.abs(values).max() <= 7
        np.testing.assert_allclose(
            values.reshape(expected.shape) * scale, expected, atol=1e-7
        )


def test_prelu_model_computes_what_the_sim_computes(tmp_path):
    sim, images = _calibrated(_prelu_model(), config_file="tflite_int8")
    exported = export_tflite(sim, tmp_path / "m.tflite")
    got = run_tflite(exported.path, images)
    expected = sim.model.predict(images, verbose=0)
    step = float(sim.quant_wrappers()[-1].output_quantizers[0].encoding.delta)
    # Integer rounding inside the kernels: within a step on nearly every
    # output, two at most (a step earlier carried through the Dense).
    assert np.mean(np.abs(got - expected) <= step * 1.001) >= 0.98
    assert np.max(np.abs(got - expected)) <= 2.001 * step
    # Negative inputs reached the alphas: the slopes were exercised.
    assert np.mean(expected < 0) > 0.1


def test_prelu_in_16x8_mode_is_refused(tmp_path):
    """TFLite's PRELU kernel takes float, uint8 and int8, not int16."""
    sim, _ = _calibrated(
        _prelu_model(), config_file="tflite_16x8", default_output_bw=16
    )
    with pytest.raises(ValueError, match=r"not fully integer.*PRELU"):
        export_tflite(sim, tmp_path / "m.tflite", mode="16x8")
    assert list(tmp_path.iterdir()) == []


def _rnet():
    mtcnn = pytest.importorskip("mtcnn")
    from mtcnn.network.rnet import RNet
    from mtcnn.utils.tensorflow import load_weights

    model = RNet()
    model.build()
    weights = os.path.join(
        os.path.dirname(mtcnn.__file__), "assets", "weights", "rnet.lz4"
    )
    model.set_weights(load_weights(weights))
    return model


def _faces():
    """The 200 LFW faces and non-faces as RNet input (24x24 RGB)."""
    skimage = pytest.importorskip("skimage")
    from skimage import transform

    grey = skimage.data.lfw_subset()
    resized = np.stack([transform.resize(g, (24, 24)) for g in grey])
    rgb = np.repeat(resized[..., None], 3, axis=-1) * 255.0
    return ((rgb - 127.5) / 128.0).astype(np.float32)


def _run_all_outputs(path, images):
    interpreter = tflite_lib.load_interpreter(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    return [
        interpreter.get_tensor(out["index"])
        for out in interpreter.get_output_details()
    ]


def test_mtcnn_rnet_face_scores_follow_the_sim(tmp_path):
    model = _rnet()
    faces = _faces()
    split = aimet_keras.graph.split_activations(model)
    folded, _ = ptq.fold_all_batch_norms(split)
    sim = QuantizationSimModel(folded, config_file="tflite_int8")
    sim.compute_encodings(faces[::4])  # 25 faces, 25 non-faces
    exported = export_tflite(sim, tmp_path / "rnet.tflite")
    ops = tflite_lib.tflite_ops(
        tflite_lib.load_interpreter(model_path=str(exported.path))
    )
    assert [name for name, _, _ in ops].count("PRELU") == 4
    expected = keras.tree.flatten(sim.model.predict(faces, verbose=0))[-1]
    # The face score is the (N, 2) output; the box regression is (N, 4).
    (got,) = [
        out
        for out in _run_all_outputs(exported.path, faces)
        if out.shape == expected.shape
    ]
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.97
