"""Trains ``real_fidelity``'s stock models on another machine (a GPU's).

ConvNeXtTiny (28M parameters) and Xception (at 71x71) take hours to train on
2 CPU cores. This script trains them with ``real_fidelity``'s recipe (seed
0, Adam 1e-3, the first 12,000 training images, 3 epochs, batch 64) on any
Keras 3 backend, JAX on a GPU machine for example, and writes the weights as
float16 shards of at most 14 MiB; ``--load`` turns the shards into the
weights file ``real_fidelity`` reads from its cache. Keras weights do not
depend on the backend; the float16 rounding (relative 5e-4) changes the
model that both FP32 and the sim are measured on, not the comparison.

Here, write the training images (the accelerator machine has no Debian
package)::

    python -m benchmarks.train_elsewhere --data data.npz

There (Keras and its dependencies installed, no TensorFlow needed)::

    KERAS_BACKEND=jax python train_elsewhere.py --data data.npz \\
        --out shards ConvNeXtTiny Xception

Here again::

    python -m benchmarks.train_elsewhere --load shards ConvNeXtTiny Xception

The script imports nothing from aimet_keras or TensorFlow in the training
step, so the file can be copied alone.
"""

import argparse
import glob
import os
import time

import numpy as np

TRAIN, EPOCHS, BATCH = 12000, 3, 64
SHARD_BYTES = 14 * 2**20
# Models whose first layers rescale 0-255 pixels themselves (Rescaling,
# Normalization): given [0, 1] images their input would span 1/255 of its
# range, and the stem's 8-bit grid would hold a few levels of it.
RAW_PIXELS = (
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "ConvNeXtTiny",
)


def input_size(name):
    """32x32 (Fashion-MNIST padded), 71x71 for Xception (its smallest)."""
    return 71 if name == "Xception" else 32


def prepare_images(images, name, resize):
    """Fashion-MNIST ``(N, 28, 28, 1)`` in [0, 1] as ``name`` takes them.

    Padded to 32x32 (a resize would blur every pixel), or resized with
    ``resize(images, size)``, repeated to 3 channels, 0-255 for the models
    of ``RAW_PIXELS``.
    """
    size = input_size(name)
    if size == 32:
        images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    else:
        images = resize(images, size)
    images = np.repeat(images, 3, axis=-1).astype("float32")
    return images * (255.0 if name in RAW_PIXELS else 1.0)


def write_data(path):
    """Writes the first ``TRAIN`` Fashion-MNIST training images (uint8)."""
    from aimet_keras.zoo.datasets import load_fashion_mnist

    images, labels = load_fashion_mnist("train", as_uint8=True)
    np.savez(path, x=images[:TRAIN], y=labels[:TRAIN])


def _model(name, size, keras):
    return getattr(keras.applications, name)(
        include_top=True, weights=None, input_shape=(size, size, 3), classes=10
    )


def train(names, data, out):
    """Trains each model and writes ``out/NAME_partK.npz`` float16 shards."""
    import keras

    with np.load(data) as arrays:
        raw, labels = arrays["x"], arrays["y"]
    for name in names:
        keras.utils.set_random_seed(0)
        model = _model(name, input_size(name), keras)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        images = prepare_images(
            raw.astype("float32")[..., None] / 255.0,
            name,
            lambda x, size: keras.ops.convert_to_numpy(
                keras.ops.image.resize(x, (size, size))
            ),
        )
        start = time.perf_counter()
        model.fit(images, labels, batch_size=BATCH, epochs=EPOCHS, verbose=2)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        shards, size_now = [[]], 0
        weights = model.get_weights()
        for index, weight in enumerate(weights):
            if size_now + 2 * weight.size > SHARD_BYTES and shards[-1]:
                shards.append([])
                size_now = 0
            shards[-1].append(index)
            size_now += 2 * weight.size
        os.makedirs(out, exist_ok=True)
        for number, indices in enumerate(shards):
            np.savez(
                os.path.join(out, f"{name}_part{number}.npz"),
                **{f"w{i:04d}": weights[i].astype(np.float16) for i in indices},
            )


def load(names, folder):
    """Writes the shards' weights into ``real_fidelity``'s cache."""
    from benchmarks.suites import real_fidelity
    from benchmarks.suites import real_models

    for name in names:
        size = input_size(name)
        weights = {}
        for path in sorted(glob.glob(os.path.join(folder, f"{name}_part*"))):
            with np.load(path) as shard:
                weights.update({key: shard[key] for key in shard.files})
        if not weights:
            raise FileNotFoundError(f"No {name}_part*.npz shards in {folder}.")
        model = real_models.stock_model(name, size)
        ordered = [weights[f"w{i:04d}"] for i in range(len(weights))]
        model.set_weights([weight.astype("float32") for weight in ordered])
        path = real_fidelity.cached_weights_path(name, size)
        model.save_weights(path)
        print(f"{name}: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--data", help="the training images (.npz)")
    parser.add_argument("--out", help="train, writing shards here")
    parser.add_argument("--load", help="load shards from this folder")
    args = parser.parse_args()
    if args.load:
        load(args.names, args.load)
    elif args.out:
        train(args.names, args.data, args.out)
    else:
        write_data(args.data)


if __name__ == "__main__":
    main()
