"""Calibration and QAT under a 2-replica ``tf.distribute.MirroredStrategy``.

TensorFlow fixes its logical devices when it initialises, which the rest of
the session has done, so the distributed runs happen in a subprocess: this
file, run as a script, splits the CPU into two logical devices, computes
every case under the strategy and on one device, and writes the encodings
as JSON; the tests compare them. Every case has a global batch that does
not divide evenly; the observer and quantizer cases also one that leaves a
replica nothing (TensorFlow's Conv2D gives an empty batch a wrong shape, so
a model cannot run on an empty shard, with or without this package).
"""

import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

# Batches of 3 from 8 images: shards (2, 1), (2, 1), (1, 1).
_DATASET_IMAGES = 8
_DATASET_BATCH = 3
# compute_encodings batches arrays by 32: shards (16, 16), (3, 2).
_ARRAY_IMAGES = 37


def _encodings(quantizers):
    """``{name: [min list, max list]}`` of the calibrated int quantizers."""
    out = {}
    for quantizer in quantizers:
        encoding = quantizer.encoding
        if encoding is not None and not encoding.is_float:
            out[quantizer.name] = [
                np.atleast_1d(encoding.min).tolist(),
                np.atleast_1d(encoding.max).tolist(),
            ]
    return out


def _quantizers(model):
    return [
        q for layer in model.layers for q in getattr(layer, "quantizers", ())
    ]


def _grid_variables(model):
    """Quantizer and observer variables, and the trainable weights.

    (Batch-norm moving statistics are left out: Keras updates each
    replica's copy from its own shard.)
    """
    quantizer_variables = [v for q in _quantizers(model) for v in q.weights]
    return quantizer_variables + list(model.trainable_weights)


def _replica_divergence(strategy, variables):
    """The largest difference between replicas' copies of any variable."""
    worst = 0.0
    for variable in variables:
        copies = strategy.experimental_local_results(variable.value)
        first = np.asarray(copies[0].numpy(), np.float64)
        for copy in copies[1:]:
            diff = np.abs(np.asarray(copy.numpy(), np.float64) - first)
            worst = max(worst, float(np.max(diff, initial=0.0)))
    return worst


def _shard_sizes(strategy, dataset):
    import tensorflow as tf

    sizes = []
    for element in strategy.experimental_distribute_dataset(dataset):
        local = strategy.run(lambda x, *_: tf.shape(x)[0], args=element)
        sizes.append(
            [int(s) for s in strategy.experimental_local_results(local)]
        )
    return sizes


def _observed(observer):
    encoding = observer.compute_encoding(8)
    return [
        np.atleast_1d(encoding.min).tolist(),
        np.atleast_1d(encoding.max).tolist(),
    ]


def _observer_cases(strategy):
    """Observers and a first-batches quantizer alone, on uneven shards."""
    import tensorflow as tf

    from aimet_keras.quant import observers
    from aimet_keras.sim import quantizer as quantizer_lib

    rng = np.random.default_rng(0)
    batches = [
        rng.standard_normal((7, 5, 4)).astype("float32"),  # shards 4, 3
        3.0 * rng.standard_normal((1, 5, 4)).astype("float32"),  # 1, 0
    ]
    dataset = tf.data.Dataset.from_tensors(batches[0]).concatenate(
        tf.data.Dataset.from_tensors(batches[1])
    )
    kinds = [(s, a) for s in ("tf", "tf_enhanced") for a in (None, -1)]

    def layers():
        made = [observers.get(s, axis=a) for s, a in kinds]
        # As quantize_model's: a range from the first two batches.
        made.append(
            quantizer_lib.TensorQuantizer(quant_scheme="tf", init_batches=2)
        )
        for layer in made:
            layer.build((None, 5, 4))
        return made

    def run_all(made):
        def run(x):
            for layer in made:
                layer(x)

        return run

    single = layers()
    # Traced, as in fit: a quantizer's range widens over its first
    # batches only in a function traced before any range was set.
    step = tf.function(
        run_all(single),
        input_signature=[tf.TensorSpec((None, 5, 4), tf.float32)],
        autograph=False,  # as Keras' steps: converting costs seconds
    )
    for batch in batches:
        step(batch)
    with strategy.scope():
        distributed = layers()
    elements = strategy.experimental_distribute_dataset(dataset)
    replica_step = run_all(distributed)
    step = tf.function(
        lambda x: strategy.run(replica_step, args=(x,)),
        input_signature=[elements.element_spec],
        autograph=False,
    )
    for element in elements:
        step(element)

    def grid(layer):
        if isinstance(layer, observers.Observer):
            return _observed(layer)
        return [
            np.atleast_1d(layer.encoding_min.numpy()).tolist(),
            np.atleast_1d(layer.encoding_max.numpy()).tolist(),
        ]

    names = [f"{s} axis={a}" for s, a in kinds] + ["first batches"]
    return [
        {
            "name": name,
            "single": grid(one),
            "distributed": grid(many),
            "divergence": _replica_divergence(strategy, many.weights),
        }
        for name, one, many in zip(names, single, distributed)
    ]


def _tiny_model():
    """Conv, batch norm, ReLU, pooling, Dense: quick to trace."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="dense")(x)
    return keras.Model(inputs, outputs)


def main(path):
    """Computes every case and writes the results to ``path``."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    from aimet_keras import zoo
    from aimet_keras.sim import QuantizationSimModel
    from aimet_keras.sim import quantize_model

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    images, labels = zoo.load_fashion_mnist_slice("calibration")
    dataset = tf.data.Dataset.from_tensor_slices(
        (images[:_DATASET_IMAGES], labels[:_DATASET_IMAGES])
    ).batch(_DATASET_BATCH)
    results = {
        "observers": _observer_cases(strategy),
        "shards": _shard_sizes(strategy, dataset),
        "sims": [],
    }

    def scope(distributed):
        return strategy.scope() if distributed else contextlib.nullcontext()

    # The reference ResNet (tf, per-channel weights: tflite_int8) from
    # arrays; the tiny model (tf_enhanced range learning, per-tensor) from
    # a labelled dataset, then trained below.
    cases = [
        ("resnet", "tf", "tflite_int8", images[:_ARRAY_IMAGES]),
        (
            "tiny",
            "training_range_learning_with_tf_enhanced_init",
            None,
            dataset,
        ),
    ]
    for name, scheme, config, data in cases:
        sims = []
        for distributed in (False, True):
            with scope(distributed):
                model = (
                    zoo.load_model(name, compile=False)
                    if name == "resnet"
                    else _tiny_model()
                )
                sim = QuantizationSimModel(
                    model, quant_scheme=scheme, config_file=config
                )
            sim.compute_encodings(data)
            sims.append(sim)
        results["sims"].append(
            {
                "name": f"{name} {scheme} {config or 'default'}",
                "single": _encodings(_quantizers(sims[0].model)),
                "distributed": _encodings(_quantizers(sims[1].model)),
                "divergence": _replica_divergence(
                    strategy, _grid_variables(sims[1].model)
                ),
            }
        )

    # QAT: two steps of fit under the strategy, ranges learned.
    trained = sims[1].model
    activations = list(sims[1]._activation_quantizers())
    before = _encodings(activations)
    with strategy.scope():
        trained.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss="sparse_categorical_crossentropy",
        )
    history = trained.fit(
        images[:8], labels[:8], batch_size=4, epochs=1, verbose=0
    )
    results["fit"] = {
        "loss": history.history["loss"],
        "before": before,
        "after": _encodings(activations),
        "divergence": _replica_divergence(strategy, _grid_variables(trained)),
    }

    # quantize_model without data: ranges from the first batch predicted
    # (5 images: shards of 3 and 2).
    first = {}
    for distributed in (False, True):
        with scope(distributed):
            quantized = quantize_model(_tiny_model())
        quantized.predict(images[:5], batch_size=5, verbose=0)
        first["distributed" if distributed else "single"] = _encodings(
            _quantizers(quantized)
        )
    results["first_batch"] = first
    with open(path, "w") as file:
        json.dump(results, file)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("distributed") / "results.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, __file__, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if run.returncode:
        pytest.fail(f"distributed run failed:\n{run.stderr[-4000:]}")
    with open(path) as file:
        return json.load(file)


def _assert_same(single, distributed):
    assert single.keys() == distributed.keys()
    for name in single:
        for a, b in zip(single[name], distributed[name]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)


def test_batches_split_unevenly(results):
    assert results["shards"] == [[2, 1], [2, 1], [1, 1]]


def test_observers_and_first_batches_match_one_device(results):
    assert len(results["observers"]) == 5
    for case in results["observers"]:
        _assert_same(
            {case["name"]: case["single"]}, {case["name"]: case["distributed"]}
        )
        assert case["divergence"] == 0.0, case["name"]


def test_compute_encodings_matches_one_device(results):
    for case in results["sims"]:
        assert len(case["single"]) >= 5, case["name"]
        _assert_same(case["single"], case["distributed"])
        assert case["divergence"] == 0.0, case["name"]


def test_first_batch_ranges_match_one_device(results):
    first = results["first_batch"]
    assert len(first["single"]) >= 5
    _assert_same(first["single"], first["distributed"])


def test_fit_learns_ranges_under_the_strategy(results):
    fit = results["fit"]
    assert all(np.isfinite(fit["loss"]))
    changed = [
        name
        for name in fit["before"]
        if not np.allclose(fit["before"][name], fit["after"][name])
    ]
    assert len(changed) >= 2, changed  # activation grids learned
    assert fit["divergence"] == 0.0


if __name__ == "__main__":
    main(sys.argv[1])
