"""Readable errors for the common mistakes of QuantizationSimModel users.

NaN or inf in calibration data or in a layer, data of the wrong shape or
dtype, and a path (or something else) in place of a model: each ends in one
short line naming the input, layer or path and the fix, and leaves the
sim's encodings as they were.
"""

import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import quantize_model

_RNG = np.random.default_rng(0)


def _short(error):
    """The error's message, checked to be one readable line."""
    message = str(error.value)
    assert "\n" not in message
    assert len(message) < 300, message
    # No array dump, no TensorFlow traceback.
    assert "array(" not in message and "[[" not in message, message
    assert "Graph execution" not in message, message
    return message


def _image_model():
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(
        inputs, keras.layers.Dense(10, name="fc")(x), name="tiny"
    )


def _images(n=64):
    return _RNG.random((n, 28, 28, 1)).astype("float32")


def _activation_quantizers(sim):
    return [
        q
        for w in sim.quant_wrappers()
        for q in (*w.input_quantizers, *w.output_quantizers)
    ]


def _grids(quantizers):
    """Every quantizer's state: enabled, initialized, min, max."""
    return [
        (
            q.enabled,
            q.is_initialized,
            q.encoding_min.numpy().copy() if q.built else None,
            q.encoding_max.numpy().copy() if q.built else None,
        )
        for q in quantizers
    ]


def _assert_same_encoding(got, want):
    assert got is not None and want is not None
    # Batched differently, a matmul may sum in another order (AVX2 kernels
    # do): the same range to float32's precision.
    np.testing.assert_allclose(got.min, want.min, rtol=1e-6)
    np.testing.assert_allclose(got.max, want.max, rtol=1e-6)


def _assert_same_grids(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert a[:2] == b[:2]
        np.testing.assert_array_equal(a[2], b[2])
        np.testing.assert_array_equal(a[3], b[3])


@pytest.fixture(scope="module")
def sim():
    """A calibrated sim of the tiny image model, shared: each test that
    calibrates it successfully leaves it calibrated."""
    sim = QuantizationSimModel(_image_model())
    sim.compute_encodings(_images())
    return sim


# 1. NaN or inf.


def test_nan_in_data_names_input_sample_and_keeps_encodings(sim):
    quantizers = _activation_quantizers(sim)
    before = _grids(quantizers)
    images = _images()
    images[40, 3, 3, 0] = np.nan
    images[45, 0, 0, 0] = np.inf
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(images)
    message = _short(error)
    assert "input 'image'" in message
    assert "sample 40" in message and "batch 1" in message
    assert "2 bad" in message
    assert "'conv' (Conv2D)" in message
    assert "np.isfinite" in message
    # The statistics of batch 0 were dropped: encodings are as before,
    # and the sim calibrates normally afterwards.
    _assert_same_grids(before, _grids(quantizers))
    sim.compute_encodings(images[:32])
    relu = sim.model.get_layer("relu").output_quantizers[0]
    assert np.isfinite(relu.encoding.max) and relu.encoding.max > 0


def test_nan_on_a_first_calibration_leaves_no_encoding():
    sim = QuantizationSimModel(_image_model())
    images = _images(8)
    images[5] = np.nan
    with pytest.raises(ValueError, match="sample 5"):
        sim.compute_encodings(images)
    quantizers = [q for q in _activation_quantizers(sim) if q.enabled]
    assert quantizers
    assert all(q.encoding is None for q in quantizers)
    # Weight grids follow the (finite) weights.
    kernel = sim.model.get_layer("conv").param_quantizers["kernel"]
    assert np.isfinite(kernel.encoding.max).all()


def test_nan_in_a_dataset_names_batch_and_sample(sim):
    images = _images()
    images[20, 1, 1, 0] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(64)))
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(dataset.batch(16))
    message = _short(error)
    assert message.startswith("Calibration dataset batch 1 ")
    assert "sample 4 of the batch" in message and "input 'image'" in message


def test_quantize_model_with_nan_data():
    images = _images(16)
    images[3] = np.inf
    with pytest.raises(ValueError) as error:
        quantize_model(_image_model(), images)
    assert "input 'image' holds NaN or inf at sample 3" in _short(error)


def test_a_layer_that_overflows_is_named():
    inputs = keras.Input((4,), name="features")
    x = keras.layers.Dense(
        3, name="fc1", kernel_initializer=keras.initializers.Constant(100.0)
    )(inputs)
    x = keras.layers.Activation("exponential", name="exp")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(x))
    sim = QuantizationSimModel(model)
    data = 1 + np.abs(_RNG.normal(size=(16, 4))).astype("float32")
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(data)
    message = _short(error)
    assert message.startswith("Layer 'exp' (Activation) outputs NaN or inf")
    assert "sample 0" in message and "from finite inputs" in message
    # Nothing calibrated from the overflow.
    assert sim.model.get_layer("fc2").input_quantizers[0].encoding is None


def test_an_unquantized_nan_weight_is_named_with_its_layer():
    inputs = keras.Input((4,), name="features")
    first = keras.layers.Dense(3, name="fc1")
    model = keras.Model(
        inputs, keras.layers.Dense(2, name="fc2")(first(inputs))
    )
    kernel, bias = first.get_weights()
    bias[1] = np.nan
    first.set_weights([kernel, bias])  # biases are not quantized by default
    sim = QuantizationSimModel(model)
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(_RNG.normal(size=(8, 4)).astype("float32"))
    message = _short(error)
    assert message.startswith("Layer 'fc1' (Dense) outputs NaN or inf")
    assert "weight 'bias'" in message


def test_a_non_finite_quantized_weight_is_named_before_any_grid_changes():
    inputs = keras.Input((4,), name="features")
    x = keras.layers.Dense(3, name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(x))
    sim = QuantizationSimModel(model)
    data = _RNG.normal(size=(8, 4)).astype("float32")
    sim.compute_encodings(data)
    params = [
        sim.model.get_layer(name).param_quantizers["kernel"]
        for name in ("fc1", "fc2")
    ]
    before = _grids(params + _activation_quantizers(sim))
    for name in ("fc1", "fc2"):
        layer = sim.model.get_layer(name).layer
        layer.kernel.assign(layer.kernel.numpy() * 2)
    kernel = sim.model.get_layer("fc2").layer.kernel
    value = kernel.numpy()
    value[0, 1] = np.inf
    kernel.assign(value)
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(data)
    message = _short(error)
    assert message.startswith("Layer 'fc2' (Dense): weight 'kernel' holds 1 ")
    # fc1's weight changed too, but no grid moved.
    _assert_same_grids(before, _grids(params + _activation_quantizers(sim)))


def test_nan_met_in_a_callback_names_the_layer(sim):
    before = _grids(_activation_quantizers(sim))
    images = _images(4)
    images[2] = np.nan

    def forward(model, batches):
        for batch in batches:
            model(batch)

    with pytest.raises(ValueError) as error:
        sim.compute_encodings(forward, [images])
    message = _short(error)
    assert message.startswith("Layer 'conv' (Conv2D) saw NaN or inf")
    assert "during forward_pass_callback" in message
    _assert_same_grids(before, _grids(_activation_quantizers(sim)))


def test_a_forward_pass_that_runs_no_data_is_refused(sim):
    before = _grids(_activation_quantizers(sim))
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(lambda model, batches: None, [])
    assert "forward_pass_callback ran no data" in _short(error)
    # AIMET would disable every activation quantizer here, silently.
    _assert_same_grids(before, _grids(_activation_quantizers(sim)))


def _compiled_sim(model, data):
    sim = QuantizationSimModel(model)
    sim.compute_encodings(data)
    sim.model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return sim


def _data_error(error):
    """Our line in the message of a check that stopped a traced step
    (TensorFlow puts it after the node's trace)."""
    found = re.search(r"Layer '.*? was given NaN or inf.*", error.value.message)
    assert found, error.value.message
    return found.group(0)


def test_nan_in_training_or_evaluation_data_stops_the_step_naming_the_layer():
    sim = _compiled_sim(_image_model(), _images())
    images, labels = _images(8), np.zeros(8, "int32")
    images[6, 2, 2, 0] = np.inf
    weights = [w.numpy().copy() for w in sim.model.weights]
    for run in (
        lambda: sim.model.fit(images, labels, epochs=1, verbose=0),
        lambda: sim.model.evaluate(images, labels, verbose=0),
        lambda: sim.model.predict(images, verbose=0),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            run()
        message = _data_error(error)
        assert message.startswith("Layer 'conv' (Conv2D) input 0 was given")
        assert "np.isfinite" in message
    # The failed training step changed nothing.
    for before, after in zip(weights, sim.model.weights):
        np.testing.assert_array_equal(before, after.numpy())


@keras.saving.register_keras_serializable("test_readable_errors")
class _Log(keras.layers.Layer):
    def call(self, x):
        return keras.ops.log(x)


def test_a_layer_that_makes_inf_in_evaluation_is_named():
    inputs = keras.Input((4,), name="features")
    x = keras.layers.Dense(4, name="fc1")(inputs)
    x = _Log(name="log")(keras.layers.ReLU(name="relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(x))
    model.get_layer("fc1").set_weights([np.eye(4), np.ones(4)])
    calibration = _RNG.uniform(0, 1, (16, 4)).astype("float32")
    with pytest.warns(UserWarning, match="No quantization rule for 'log'"):
        sim = _compiled_sim(model, calibration)
    sim.model.get_layer("fc1").layer.bias.assign(np.zeros(4))
    zeros = np.zeros((2, 4), "float32")  # finite data, log(0) is -inf
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        sim.model.evaluate(zeros, np.zeros(2, "int32"), verbose=0)
    assert _data_error(error).startswith(
        "Layer 'log' (_Log) output 0 was given NaN or inf"
    )


def test_a_weight_gone_nan_in_training_is_named():
    sim = _compiled_sim(_image_model(), _images())
    kernel = sim.model.get_layer("fc").layer.kernel
    broken = kernel.numpy()
    broken[0, 0] = np.nan
    kernel.assign(broken)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        sim.model.fit(_images(4), np.zeros(4, "int32"), verbose=0)
    assert _data_error(error).startswith(
        "Layer 'fc' (Dense) weight 'kernel' was given NaN or inf"
    )


def test_check_finite_can_be_turned_off_and_on():
    sim = _compiled_sim(_image_model(), _images())
    images = _images(4)
    images[1] = np.inf
    sim.check_finite = False
    assert not sim.check_finite
    # Quantizing clamps inf onto the grid: finite, wrong outputs.
    assert np.isfinite(sim.model.predict(images, verbose=0)).all()
    sim.check_finite = True
    with pytest.raises(tf.errors.InvalidArgumentError):
        sim.model.predict(images, verbose=0)


# 2. Shape and dtype.


@pytest.mark.parametrize(
    "make, given, fix",
    [
        (
            lambda x: (x[..., 0] * 255).astype("uint8"),
            "shape (64, 28, 28), dtype uint8",
            "x[..., None].astype('float32') / 255",
        ),
        (lambda x: x[..., 0], "shape (64, 28, 28),", "x[..., None]"),
        (
            lambda x: np.moveaxis(x, -1, 1),
            "shape (64, 1, 28, 28),",
            "np.moveaxis(x, 1, -1)",
        ),
        (
            lambda x: x.reshape(64, -1),
            "shape (64, 784),",
            "x.reshape(-1, 28, 28, 1)",
        ),
        (lambda x: x[0], "shape (28, 28, 1),", "x[None]"),
    ],
    ids=["raw_uint8", "no_channel", "channels_first", "flat", "one_sample"],
)
def test_wrong_shape_names_input_shapes_and_fix(sim, make, given, fix):
    before = _grids(_activation_quantizers(sim))
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(make(_images()))
    message = _short(error)
    assert message.startswith("Calibration data for input 'image' of model")
    assert given in message
    assert "expects shape (None, 28, 28, 1), dtype float32" in message
    assert fix in message
    _assert_same_grids(before, _grids(_activation_quantizers(sim)))


def test_quantize_model_with_raw_uint8_images():
    raw = (_images(16)[..., 0] * 255).astype("uint8")
    with pytest.raises(ValueError) as error:
        quantize_model(_image_model(), raw)
    message = _short(error)
    assert "(16, 28, 28)" in message and "(None, 28, 28, 1)" in message


def test_uint8_data_of_the_right_shape_is_cast_with_a_warning():
    model = _image_model()
    sim, reference = QuantizationSimModel(model), QuantizationSimModel(model)
    raw = (_images(16) * 255).astype("uint8")
    with pytest.warns(UserWarning, match=r"uint8, cast to float32.*/ 255"):
        sim.compute_encodings(raw)
    # Calibrated on the values cast, as Keras casts them.
    reference.compute_encodings(raw.astype("float32"))
    for name in ("relu", "fc"):
        got = sim.model.get_layer(name).output_quantizers[0].encoding
        want = reference.model.get_layer(name).output_quantizers[0].encoding
        _assert_same_encoding(got, want)
    assert got.max > 1  # from values up to 255, unscaled


def test_uint8_data_read_by_a_rescaling_layer_gives_no_warning():
    inputs = keras.Input((6,), name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    sim = QuantizationSimModel(model)
    raw = _RNG.integers(0, 256, (8, 6)).astype("uint8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sim.compute_encodings(raw)
    assert not [w for w in caught if "cast to" in str(w.message)]
    scale = sim.model.get_layer("scale").output_quantizers[0]
    np.testing.assert_allclose(scale.encoding.max, raw.max() / 255, rtol=0.02)


def test_structure_mistakes(sim):
    images = _images(8)
    with pytest.raises(ValueError) as error:
        sim.compute_encodings((images, np.zeros(8)))
    assert "not (x, y)" in _short(error) and "'image'" in str(error.value)
    with pytest.raises(TypeError) as error:
        sim.compute_encodings(x for x in images)
    assert "got generator" in _short(error)
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(images[:0])
    assert "no samples" in _short(error)


def test_an_empty_dataset_disables_nothing(sim):
    quantizers = _activation_quantizers(sim)
    before = _grids(quantizers)
    empty = tf.data.Dataset.from_tensor_slices(_images(0)).batch(4)
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(empty)
    assert "no batches" in _short(error)
    _assert_same_grids(before, _grids(quantizers))


@pytest.mark.parametrize(
    "dataset, fix",
    [
        (
            lambda x: tf.data.Dataset.from_tensor_slices((x, np.zeros(64))),
            "dataset.batch(32)",
        ),
        (
            lambda x: tf.data.Dataset.from_tensor_slices(
                (x[..., 0] * 255).astype("uint8")
            ).batch(8),
            "dataset.map(lambda x: tf.cast(x[..., None], tf.float32) / 255)",
        ),
        (
            lambda x: tf.data.Dataset.from_tensor_slices(x).batch(4).batch(2),
            "batched twice",
        ),
    ],
    ids=["unbatched", "raw_uint8", "batched_twice"],
)
def test_dataset_element_spec_is_checked(sim, dataset, fix):
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(dataset(_images()))
    message = _short(error)
    assert message.startswith("Calibration dataset elements for input 'image'")
    assert "expects shape (None, 28, 28, 1)" in message
    assert fix in message


@pytest.fixture(scope="module")
def two_inputs():
    # Input order differs from the names' sorted order.
    z = keras.Input((4,), name="z")
    a = keras.Input((3,), name="a")
    x = keras.layers.Concatenate(name="cat")([z, a])
    model = keras.Model([z, a], keras.layers.Dense(2, name="fc")(x))
    data = [
        _RNG.normal(size=(10, 4)).astype("float32"),
        10 * _RNG.normal(size=(10, 3)).astype("float32"),
    ]
    return QuantizationSimModel(model), data


def test_several_inputs_as_list_dict_or_dataset(two_inputs):
    sim, (z, a) = two_inputs
    fc = sim.model.get_layer("fc").output_quantizers[0]
    sim.compute_encodings([z, a])
    want = fc.encoding
    sim.compute_encodings({"a": a, "z": z})
    _assert_same_encoding(fc.encoding, want)
    dataset = tf.data.Dataset.from_tensor_slices(({"a": a, "z": z}, z[:, 0]))
    sim.compute_encodings(dataset.batch(4))
    _assert_same_encoding(fc.encoding, want)


def test_several_inputs_mistakes(two_inputs):
    sim, (z, a) = two_inputs
    cases = [
        ([a, z], ValueError, r"input 'z'.*\(10, 3\).*\(None, 4\)"),
        (z, ValueError, r"one array.*2 inputs \('z', 'a'\)"),
        ({"z": z}, ValueError, r"missing \['a'\]"),
        ([z, a[:5]], ValueError, r"'z': 10, 'a': 5"),
        (
            tf.data.Dataset.from_tensor_slices((z, a)).batch(2),
            ValueError,
            r"\(\(a, b\), y\)",
        ),
    ]
    for data, kind, pattern in cases:
        with pytest.raises(kind) as error:
            sim.compute_encodings(data)
        assert re.search(pattern, _short(error)), str(error.value)


def test_integer_inputs():
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(20, 4, name="embed")(tokens)
    model = keras.Model(tokens, keras.layers.Flatten(name="flat")(x))
    sim = QuantizationSimModel(model)
    ids = _RNG.integers(0, 20, (16, 6))  # int64: cast to int32
    sim.compute_encodings(ids)
    with pytest.raises(ValueError) as error:
        sim.compute_encodings(ids.astype("float32"))
    message = _short(error)
    assert "input 'tokens'" in message and "dtype int32" in message
    assert "x.astype('int32')" in message


# 3. A path, or something that is not a model.


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    inputs = keras.Input((4,), name="features")
    x = keras.layers.Dense(3, name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(x))
    model.save(folder / "mlp.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(folder / "mlp.h5")
    return model, folder


@pytest.mark.parametrize(
    "name, as_str", [("mlp.keras", True), ("mlp.h5", False)]
)
def test_a_model_file_path_is_loaded(saved, name, as_str):
    model, folder = saved
    path = folder / name
    sim = QuantizationSimModel(str(path) if as_str else path)
    assert [w.name for w in sim.quant_wrappers()] == ["fc1", "fc2"]
    x = _RNG.normal(size=(4, 4)).astype("float32")
    np.testing.assert_allclose(
        sim.model.get_layer("fc2").layer(sim.model.get_layer("fc1").layer(x)),
        model(x),
        atol=1e-6,
    )
    quantized = quantize_model(str(path), x)
    assert quantized.predict(x, verbose=0).shape == (4, 2)


def test_a_missing_file_is_named(saved):
    _, folder = saved
    missing = folder / "nope.keras"
    with pytest.raises(FileNotFoundError) as error:
        QuantizationSimModel(missing)
    assert f"No model file at '{missing}'" in _short(error)
    with pytest.raises(FileNotFoundError) as error:
        quantize_model("no/such/model.keras", np.zeros((2, 4)))
    assert "'no/such/model.keras'" in _short(error)


def test_a_saved_model_folder_or_other_file_says_how_to_fix(saved):
    _, folder = saved
    saved_model = folder / "exported"
    tf.saved_model.save(tf.Module(), str(saved_model))
    with pytest.raises(ValueError) as error:
        QuantizationSimModel(saved_model)
    message = _short(error)
    assert f"'{saved_model}' is a TensorFlow SavedModel folder" in message
    assert "Keras 3 cannot load" in message and ".keras" in message
    weights = folder / "weights.npy"
    np.save(weights, np.zeros(3))
    with pytest.raises(ValueError) as error:
        QuantizationSimModel(weights)
    assert "not a .keras or .h5 file" in _short(error)
    broken = folder / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError) as error:
        QuantizationSimModel(broken)
    assert "not a valid .keras file" in _short(error)
    broken = folder / "broken.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(ValueError) as error:
        QuantizationSimModel(broken)
    assert f"Could not load '{broken}'" in _short(error)


@pytest.mark.parametrize(
    "thing, named",
    [
        (None, "got NoneType"),
        (np.zeros(3), "got numpy.ndarray of shape (3,)"),
        (keras.layers.Dense(2, name="lonely"), "got layer 'lonely' (Dense)"),
    ],
    ids=["none", "array", "layer"],
)
def test_not_a_model_is_a_type_error(thing, named):
    with pytest.raises(TypeError) as error:
        QuantizationSimModel(thing)
    message = _short(error)
    assert message.startswith("model must be a keras.Model or the path")
    assert named in message


def test_a_nan_range_is_never_exported(tmp_path):
    sim = QuantizationSimModel(_image_model())
    sim.compute_encodings(_images())
    # What range learning on NaN gradients leaves.
    sim.model.get_layer("relu").output_quantizers[0].encoding_max.assign(
        np.float32(np.nan)
    )
    for version in ("0.6.1", "2.0.0"):
        with pytest.raises(ValueError) as error:
            sim.export(tmp_path, "tiny", encoding_version=version)
        assert _short(error).startswith(
            "Layer 'relu' (ReLU) output 0 has a NaN or infinite range "
            "(min 0.0, max nan)"
        )
    assert list(tmp_path.iterdir()) == []
