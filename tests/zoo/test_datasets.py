"""Fashion-MNIST: the shipped slice and the Debian loader."""

import gzip
import pathlib

import numpy as np
import pytest

from aimet_keras.zoo import datasets

FULL_SET = (
    pathlib.Path(datasets.FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz"
)
needs_full_set = pytest.mark.skipif(
    not FULL_SET.is_file(),
    reason="Debian's dataset-fashion-mnist is not installed "
    "(.ci/run installs it)",
)


@pytest.mark.parametrize("part,count", [("test", 2000), ("calibration", 1000)])
def test_slice_shapes_and_range(part, count):
    images, labels = datasets.load_fashion_mnist_slice(part)
    assert images.shape == (count, 28, 28, 1)
    assert images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))


def test_slice_uint8_is_raw():
    images, _ = datasets.load_fashion_mnist_slice("test", as_uint8=True)
    assert images.dtype == np.uint8 and images.shape == (2000, 28, 28)


def test_slice_rejects_unknown_part():
    with pytest.raises(ValueError, match="part='train'"):
        datasets.load_fashion_mnist_slice("train")


@needs_full_set
def test_full_test_set_matches_slice():
    images, labels = datasets.load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28, 1) and labels.shape == (10000,)
    slice_images, slice_labels = datasets.load_fashion_mnist_slice("test")
    np.testing.assert_array_equal(images[:2000], slice_images)
    np.testing.assert_array_equal(labels[:2000], slice_labels)


@needs_full_set
def test_full_train_set_has_balanced_classes():
    _, labels = datasets.load_fashion_mnist("train")
    assert labels.shape == (60000,)
    np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)


def test_missing_directory_names_path_and_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        datasets.load_fashion_mnist("test", directory=tmp_path)


def test_unknown_split():
    with pytest.raises(ValueError, match="split='valid'"):
        datasets.load_fashion_mnist("valid")


def _write_idx(path, header, payload):
    with gzip.open(path, "wb") as f:
        f.write(header + payload)


def test_idx_parsing_on_a_tiny_file(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    _write_idx(
        tmp_path / "t10k-images-idx3-ubyte.gz", b"\0" * 16, images.tobytes()
    )
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", b"\0" * 8, bytes([3, 7]))
    x, y = datasets.load_fashion_mnist(
        "test", directory=tmp_path, as_uint8=True
    )
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, [3, 7])


def test_idx_count_mismatch_is_reported(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    _write_idx(
        tmp_path / "t10k-images-idx3-ubyte.gz", b"\0" * 16, images.tobytes()
    )
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", b"\0" * 8, bytes([1]))
    with pytest.raises(ValueError, match="corrupt"):
        datasets.load_fashion_mnist("test", directory=tmp_path)
