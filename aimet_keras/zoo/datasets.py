"""Fashion-MNIST: the shipped slice and the full set from Debian's package.

The slice (``fashion_mnist_slice.npz``, 2,000 test and 1,000 calibration
images) ships inside the wheel so that examples and tests run without any
download. The full set (60,000 training and 10,000 test images) is read from
the IDX files of the Debian package ``dataset-fashion-mnist``; nothing is
ever downloaded at run time.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "load_fashion_mnist",
    "load_fashion_mnist_slice",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Where Debian's ``dataset-fashion-mnist`` puts the IDX files; the
# ``AIMET_KERAS_FASHION_MNIST_DIR`` environment variable overrides it.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_SLICE_PATH = pathlib.Path(__file__).parent / "data" / "fashion_mnist_slice.npz"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX headers: magic plus dimensions, 4 bytes each.
_IMAGE_HEADER_BYTES = 16
_LABEL_HEADER_BYTES = 8


def _to_model_input(images):
    """uint8 (N, 28, 28) to the float32 (N, 28, 28, 1) in [0, 1] models take."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def _read_idx(path, header_bytes):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header_bytes)


def load_fashion_mnist(
    split: str = "test",
    directory: str | os.PathLike | None = None,
    as_uint8: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads the full Fashion-MNIST split from Debian's IDX files.

    Install the data with ``apt-get install dataset-fashion-mnist``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
            Defaults to ``"test"``.
        directory: folder holding the four ``*-idx?-ubyte.gz`` files.
            Defaults to ``$AIMET_KERAS_FASHION_MNIST_DIR`` or
            ``/usr/share/datasets/fashion-mnist``.
        as_uint8: return the raw ``(N, 28, 28)`` uint8 images instead of
            float32 ``(N, 28, 28, 1)`` scaled to [0, 1]. Defaults to False.

    Returns:
        A tuple ``(images, labels)``; labels are int64 class indices.

    Raises:
        ValueError: for an unknown split.
        FileNotFoundError: when the IDX files are missing, naming the path
            and the package that provides them.

    Example:

    >>> x, y = load_fashion_mnist("test")  # doctest: +SKIP
    >>> x.shape, y.shape  # doctest: +SKIP
    ((10000, 28, 28, 1), (10000,))
    >>> load_fashion_mnist("validation")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: split='validation' is not a Fashion-MNIST split; ...
    """
    if split not in _IDX_FILES:
        raise ValueError(
            f"split={split!r} is not a Fashion-MNIST split; use 'train' or "
            "'test'."
        )
    directory = pathlib.Path(
        directory
        or os.environ.get("AIMET_KERAS_FASHION_MNIST_DIR", FASHION_MNIST_DIR)
    )
    image_file, label_file = (directory / name for name in _IDX_FILES[split])
    for path in (image_file, label_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {path} not found. Install it with "
                "`apt-get install dataset-fashion-mnist`, set "
                "AIMET_KERAS_FASHION_MNIST_DIR, or use "
                "load_fashion_mnist_slice() for the shipped slice."
            )
    images = _read_idx(image_file, _IMAGE_HEADER_BYTES).reshape(-1, 28, 28)
    labels = _read_idx(label_file, _LABEL_HEADER_BYTES).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(
            f"{image_file} holds {len(images)} images but {label_file} holds "
            f"{len(labels)} labels; the files are corrupt."
        )
    return (images if as_uint8 else _to_model_input(images)), labels


def load_fashion_mnist_slice(
    part: str = "test", as_uint8: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Loads the Fashion-MNIST slice shipped with aimet_keras.

    The ``"test"`` part is the first 2,000 images of the official test set;
    the ``"calibration"`` part is 1,000 images drawn at random (seed 0) from
    the training set, for calibrating quantization ranges without touching
    test data.

    Args:
        part: ``"test"`` or ``"calibration"``. Defaults to ``"test"``.
        as_uint8: return raw uint8 ``(N, 28, 28)`` images. Defaults to False.

    Returns:
        A tuple ``(images, labels)``: float32 ``(N, 28, 28, 1)`` images in
        [0, 1] (unless ``as_uint8``) and int64 labels.

    Example:

    >>> x, y = load_fashion_mnist_slice("calibration")
    >>> x.shape
    (1000, 28, 28, 1)
    """
    if part not in ("test", "calibration"):
        raise ValueError(
            f"part={part!r} is not in the shipped slice; use 'test' or "
            "'calibration'."
        )
    with np.load(_SLICE_PATH) as data:
        images, labels = data[f"{part}_images"], data[f"{part}_labels"]
    return (images if as_uint8 else _to_model_input(images)), labels.astype(
        np.int64
    )
