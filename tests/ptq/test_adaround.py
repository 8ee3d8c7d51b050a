"""AdaRound: better layer outputs than nearest, weights on the grid, frozen
by the sim, at every bitwidth, per-tensor and per-channel."""

import json

import keras
import numpy as np
import pytest

from aimet_keras.ptq import Adaround
from aimet_keras.ptq import AdaroundParameters
from aimet_keras.ptq import adaround
from aimet_keras.ptq import set_precision
from aimet_keras.quant import quantize_dequantize
from aimet_keras.sim import QuantizationSimModel
from tests.ptq import assert_kernel_on_its_grid

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
    from aimet_keras.quant import compute_encoding

    encoding = compute_encoding(-1.0, 1.0, 4, is_symmetric=True)
    rounding = adaround.SoftRounding(kernel, encoding, None, "conv")
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
        assert_kernel_on_its_grid(wrapper)
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


def test_every_layer_reconstructs_better_than_nearest(tmp_path):
    """Each layer's output, on inputs from the layers before it as rounded,
    is closer to the FP32 model's with AdaRound's weights than with nearest
    rounding on the same grid; checked apart from AdaRound's bookkeeping."""
    from aimet_keras import zoo
    from aimet_keras.ptq import fold_all_batch_norms

    folded, _ = fold_all_batch_norms(zoo.load_model("resnet", compile=False))
    images = zoo.load_fashion_mnist_slice("calibration")[0][:128]
    params = AdaroundParameters(
        images, num_batches=4, default_num_iterations=80, batch_size=32
    )
    rounded = Adaround.apply_adaround(
        folded, params, tmp_path, "resnet", config_file="htp", verbose=False
    )
    # The grids AdaRound used, read back through a sim of the FP32 model.
    grids = QuantizationSimModel(folded, default_param_bw=4, config_file="htp")
    grids.set_and_freeze_param_encodings(tmp_path / "resnet.encodings")
    names = [
        k.split("/")[0]
        for k in json.loads((tmp_path / "resnet.encodings").read_text())
    ]
    assert len(names) >= 10
    from aimet_keras.graph import walk

    rounded_sites = {s.operation.name: s for s in walk(rounded)}
    fp32_sites = {s.operation.name: s for s in walk(folded)}
    consumers = {id(x): s.operation for s in walk(folded) for x in s.inputs}
    for name in names:
        layer = rounded.get_layer(name)
        follower = consumers[id(fp32_sites[name].outputs[0])]
        relu = follower.name if isinstance(follower, L.ReLU) else None
        x = keras.Model(rounded.inputs, rounded_sites[name].inputs[0]).predict(
            images, verbose=0
        )
        target = keras.Model(
            folded.inputs, fp32_sites[relu or name].outputs[0]
        ).predict(images, verbose=0)
        quantizer = grids.model.get_layer(name).param_quantizers["kernel"]
        nearest = quantize_dequantize(
            folded.get_layer(name).kernel.value,
            quantizer.encoding,
            axis=quantizer.axis,
        ).numpy()
        adarounded = layer.kernel.numpy()

        def error(kernel, layer=layer, relu=relu, x=x, target=target):
            layer.kernel.assign(kernel)
            y = np.asarray(layer(x))
            y = np.maximum(y, 0) if relu else y
            return float(np.mean(np.sum((y - target) ** 2, -1)))

        assert error(adarounded) < error(nearest), name
        layer.kernel.assign(adarounded)


def test_param_bw_override_list_rounds_those_layers_to_their_bits(tmp_path):
    params = AdaroundParameters(
        DATA, num_batches=2, default_num_iterations=20, batch_size=32
    )
    model = _model()
    rounded = Adaround.apply_adaround(
        model,
        params,
        tmp_path,
        "mixed",
        default_param_bw=8,
        param_bw_override_list=[("dw", 4), (model.get_layer("fc"), 3)],
        verbose=False,
    )
    written = json.loads((tmp_path / "mixed.encodings").read_text())
    bits = {name.split("/")[0]: e[0]["bitwidth"] for name, e in written.items()}
    assert bits == {"conv": 8, "dw": 4, "fc": 3}
    sim = QuantizationSimModel(rounded, default_param_bw=8)
    set_precision(sim, "dw", param=4)
    set_precision(sim, "fc", param=3)
    sim.set_and_freeze_param_encodings(tmp_path / "mixed.encodings")
    for name in bits:
        assert_kernel_on_its_grid(sim.model.get_layer(name))
    with pytest.raises(ValueError, match="no layer of the sim matches"):
        Adaround.apply_adaround(
            model,
            params,
            tmp_path,
            "bad",
            param_bw_override_list=[("missing", 4)],
            verbose=False,
        )


@pytest.mark.parametrize("as_dataset", [False, True])
def test_nan_in_the_data_is_refused_before_anything_is_written(
    tmp_path, as_dataset
):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    data = np.random.default_rng(0).normal(size=(16, 6, 6, 2))
    data = data.astype("float32")
    data[5, 1, 1, 0] = np.nan
    data[9, 0, 0, 1] = np.inf
    data_set = tf.data.Dataset.from_tensor_slices(data).batch(8)
    params = AdaroundParameters(
        data_set if as_dataset else data,
        num_batches=2,
        batch_size=8,
        default_num_iterations=5,
    )
    with pytest.raises(ValueError, match=r"2 of its 16 samples.*sample 5"):
        Adaround.apply_adaround(model, params, tmp_path, "m", verbose=False)
    assert list(tmp_path.iterdir()) == []


def _kernels(model):
    return {w.path: w.numpy() for w in model.weights if "kernel" in w.path}


def test_caches_spilled_to_disk_give_the_same_rounding(tmp_path, monkeypatch):
    """A zero-byte limit puts the samples and every layer's inputs and
    targets in memory-mapped files: the rounding is the one computed in
    memory, and the files are gone afterwards."""
    import tensorflow as tf

    from aimet_keras.ptq import sample_cache

    opened = []
    real = sample_cache.SampleCache.__init__

    def counting(self, *args, **kwargs):
        real(self, *args, **kwargs)
        opened.append(self.on_disk)

    monkeypatch.setattr(sample_cache.SampleCache, "__init__", counting)
    data_set = tf.data.Dataset.from_tensor_slices(DATA[:64]).batch(16)
    rounded = {}
    for limit in (None, 0):
        folder = tmp_path / f"cache_{limit}"
        folder.mkdir()
        params = AdaroundParameters(
            data_set,
            num_batches=4,
            default_num_iterations=30,
            cache_limit_bytes=limit,
            cache_folder=folder,
        )
        model = Adaround.apply_adaround(
            _model(), params, tmp_path / str(limit), "m", verbose=False
        )
        rounded[limit] = _kernels(model)
        assert list(folder.iterdir()) == []  # every cache file deleted
    # Two caches (inputs, targets) per layer: conv, dw, fc.
    assert opened == [False] * 6 + [True] * 6
    assert rounded[None].keys() == rounded[0].keys()
    for name, kernel in rounded[None].items():
        np.testing.assert_array_equal(kernel, rounded[0][name], err_msg=name)
    assert (tmp_path / "0" / "m.encodings").read_bytes() == (
        tmp_path / "None" / "m.encodings"
    ).read_bytes()


def test_empty_data_is_refused():
    params = AdaroundParameters(DATA[:0], num_batches=2)
    with pytest.raises(ValueError, match="data_set holds no samples"):
        params.samples()


def test_data_of_the_wrong_shape_is_refused_naming_the_input(tmp_path):
    params = AdaroundParameters(DATA[:, :6], num_batches=2)
    with pytest.raises(
        ValueError, match=r"shape \(1, 6, 8, 3\).*\(None, 8, 8, 3\)"
    ):
        Adaround.apply_adaround(_model(), params, tmp_path, "m", verbose=False)
    assert list(tmp_path.iterdir()) == []
