"""The evaluator and the train-end compression callback."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras import zoo
from aimet_keras.compress import CompressAtTrainEnd
from aimet_keras.compress import accuracy_evaluator
from aimet_keras.compress import model_cost


@pytest.fixture(scope="module")
def slice_():
    return zoo.load_fashion_mnist_slice("calibration")


def test_accuracy_evaluator_counts_batches(slice_):
    images, labels = slice_
    model = zoo.load_model("resnet", compile=False)
    predicted = model.predict(images[:300], verbose=0).argmax(1)
    evaluate = accuracy_evaluator((images[:300], labels[:300]), batch_size=100)
    assert evaluate(model, None) == pytest.approx(
        np.mean(predicted == labels[:300])
    )
    assert evaluate(model, 1) == pytest.approx(
        np.mean(predicted[:100] == labels[:100])
    )
    one_hot = np.eye(10)[labels[:300]]
    dataset = tf.data.Dataset.from_tensor_slices((images[:300], one_hot))
    from_dataset = accuracy_evaluator(dataset.batch(50))
    assert from_dataset(model, 2) == pytest.approx(
        np.mean(predicted[:100] == labels[:100])
    )
    with pytest.raises(ValueError, match="300 inputs but 2 labels"):
        accuracy_evaluator((images[:300], labels[:2]))(model, 1)


def _small_classifier():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 4))
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(24, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="fc")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_spatial_svd_then_channel_pruning_at_train_end(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(96, 12, 12, 4)).astype("f4")
    labels = rng.integers(0, 3, 96)
    model = _small_classifier()
    compress = CompressAtTrainEnd(
        (0.8, 0.6),
        (images[:64], labels[:64]),
        scheme=("spatial_svd", "channel_pruning"),
        num_comp_ratio_candidates=3,
        data=images[64:],
        num_reconstruction_samples=300,
        save_path=str(tmp_path / "small.keras"),
        plot_path=str(tmp_path / "sensitivity.svg"),
        verbose=0,
    )
    model.fit(images, labels, epochs=1, verbose=0, callbacks=[compress])
    trained = [w.copy() for w in model.get_weights()]
    first, second = compress.stats
    assert (first.scheme, second.scheme) == ("spatial_svd", "channel_pruning")
    small = compress.compressed_model
    kept = model_cost(small).macs / model_cost(model).macs
    assert 0.59 < kept <= 0.6
    # Channel pruning can prune the factorised pairs too.
    assert {"conv0_b", "conv1_b"} <= set(second.ratios)
    for before, after in zip(trained, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    loaded = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(
        loaded.predict(images[:32], verbose=0),
        small.predict(images[:32], verbose=0),
        atol=1e-6,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sensitivity.1.svg",
        "sensitivity.2.svg",
        "small.keras",
    ]


def test_bad_settings_are_clear_errors(slice_):
    data = (slice_[0][:8], slice_[1][:8])
    with pytest.raises(ValueError, match="one target_comp_ratio per scheme"):
        CompressAtTrainEnd(0.5, data, scheme=("spatial_svd", "weight_svd"))
    with pytest.raises(ValueError, match="falling from stage to stage"):
        CompressAtTrainEnd(
            (0.5, 0.7), data, scheme=("spatial_svd", "channel_pruning")
        )
    with pytest.raises(ValueError, match="scheme='svd'"):
        CompressAtTrainEnd(0.5, data, scheme="svd")
    with pytest.raises(ValueError, match="validation_data"):
        CompressAtTrainEnd(0.5)
