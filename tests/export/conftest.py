"""A calibrated, BN-folded ResNet sim and test images, built once."""

import pytest


@pytest.fixture(scope="session")
def test_images():
    from aimet_keras import zoo

    return zoo.load_fashion_mnist_slice("test")


@pytest.fixture(scope="session")
def resnet_sim():
    """The shipped ResNet, BN folded, tflite_int8 config, 256 images."""
    from aimet_keras import ptq
    from aimet_keras import zoo
    from aimet_keras.sim import QuantizationSimModel

    folded, _ = ptq.fold_all_batch_norms(zoo.load_model("resnet"))
    images, _ = zoo.load_fashion_mnist_slice("calibration")
    sim = QuantizationSimModel(folded, config_file="tflite_int8")
    sim.compute_encodings(images[:256])
    return sim


@pytest.fixture(scope="session")
def resnet_sim_predictions(resnet_sim, test_images):
    images, _ = test_images
    return resnet_sim.model.predict(images, batch_size=500, verbose=0)
