"""Trains the reference models on the full Fashion-MNIST training set.

Needs Debian's ``dataset-fashion-mnist``. Writes
``aimet_keras/zoo/data/<name>.keras`` and prints the test accuracy on the
10,000 test images:

    python examples/zoo/train_reference_models.py --model resnet
    python examples/zoo/train_reference_models.py --model all

The recipe: AdamW with cosine decay, batch 128, fixed seeds; the conv nets
also see random horizontal flips and shifts of up to 2 pixels. Training on a
2-core CPU takes about a minute an epoch.
"""

import argparse
import json
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from aimet_keras.zoo import architectures
from aimet_keras.zoo import datasets

# (epochs, peak learning rate, weight decay, augment) per architecture. The
# small transformer underfits, so it trains longer, faster and unaugmented.
RECIPES = {
    "resnet": (12, 3e-3, 1e-4, True),
    "mobilenet_v2": (12, 3e-3, 1e-4, True),
    "transformer": (25, 3e-3, 1e-2, False),
}
BATCH_SIZE = 128
OUT_DIR = (
    pathlib.Path(__file__).resolve().parents[2] / "aimet_keras" / "zoo" / "data"
)


def _augment(image, label):
    image = tf.image.random_flip_left_right(image)
    image = tf.image.pad_to_bounding_box(image, 2, 2, 32, 32)
    image = tf.image.random_crop(image, (28, 28, 1))
    return image, label


def train(name, epochs=None):
    """Trains one architecture and saves it; returns its test accuracy."""
    keras.utils.set_random_seed(0)
    default_epochs, learning_rate, weight_decay, augment = RECIPES[name]
    epochs = epochs or default_epochs
    train_x, train_y = datasets.load_fashion_mnist("train")
    test_x, test_y = datasets.load_fashion_mnist("test")
    train_data = tf.data.Dataset.from_tensor_slices((train_x, train_y)).shuffle(
        len(train_x), seed=0
    )
    if augment:
        train_data = train_data.map(
            _augment, num_parallel_calls=tf.data.AUTOTUNE
        )
    train_data = train_data.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
    steps = epochs * int(np.ceil(len(train_x) / BATCH_SIZE))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=learning_rate, warmup_steps=steps // 20
    )
    model = architectures.ARCHITECTURES[name]()
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.time()
    model.fit(train_data, epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(test_x, test_y, batch_size=500, verbose=0)
    # Saved without the optimizer: users only evaluate and quantize these.
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = OUT_DIR / f"{name}.keras"
    model.save(path)
    record = {
        "model": name,
        "epochs": epochs,
        "params": model.count_params(),
        "test_accuracy": float(accuracy),
        "train_seconds": round(time.time() - start, 1),
    }
    print(json.dumps(record))
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", choices=[*architectures.ARCHITECTURES, "all"], default="all"
    )
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    names = (
        list(architectures.ARCHITECTURES)
        if args.model == "all"
        else [args.model]
    )
    for name in names:
        train(name, args.epochs)


if __name__ == "__main__":
    main()
