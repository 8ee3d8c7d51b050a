"""Rebuilds aimet_keras/zoo/data/fashion_mnist_slice.npz from Debian's files.

Run once after `apt-get install dataset-fashion-mnist`:

    python examples/zoo/make_fashion_mnist_slice.py

The test part is the first 2,000 official test images; the calibration part
is 1,000 training images drawn with seed 0.
"""

import pathlib

import numpy as np

from aimet_keras.zoo import datasets

NUM_TEST = 2000
NUM_CALIBRATION = 1000


def main():
    test_x, test_y = datasets.load_fashion_mnist("test", as_uint8=True)
    train_x, train_y = datasets.load_fashion_mnist("train", as_uint8=True)
    pick = np.random.default_rng(0).choice(
        len(train_x), NUM_CALIBRATION, replace=False
    )
    out = pathlib.Path(datasets._SLICE_PATH)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        test_images=test_x[:NUM_TEST],
        test_labels=test_y[:NUM_TEST].astype(np.uint8),
        calibration_images=train_x[pick],
        calibration_labels=train_y[pick].astype(np.uint8),
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
