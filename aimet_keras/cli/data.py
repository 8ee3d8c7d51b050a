"""Model inputs for the command line: arrays, image folders and TFRecords.

Each loader returns ``(inputs, labels)``: float32 inputs shaped for the
model (batch first) and integer labels, or None where the source has none.
Errors are ``ValueError`` or ``FileNotFoundError`` naming the file and the
fix; nothing loads TensorFlow until a folder or TFRecord needs it.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_INPUT_KEYS = ("x", "images", "inputs", "data")
_LABEL_KEYS = ("y", "labels", "label", "targets")
# What a pixel value of 0..255 becomes, by --pixel-range.
PIXEL_RANGES = {"0-1": (0.0, 1.0), "0-255": (0.0, 255.0), "-1-1": (-1.0, 1.0)}


def load_data(
    path: str | os.PathLike,
    input_shape: tuple,
    pixel_range: str = "0-1",
    image_feature: str = "image",
    label_feature: str = "label",
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(inputs, labels or None)`` from ``path``, shaped for the model.

    Args:
        path: a ``.npz`` (inputs under ``x``, ``images``, ``inputs`` or
            ``data``, or its only array; labels under ``y`` or
            ``labels``), a ``.npy`` array, a folder of images (a subfolder
            per class gives labels, in sorted order), or a ``.tfrecord``
            of ``tf.train.Example`` with an encoded image feature.
        input_shape: the model's input shape without the batch axis
            (``None`` for a free size); images are resized to it.
        pixel_range: what images' 0..255 pixels become (one of
            :data:`PIXEL_RANGES`). Arrays are taken as they are.
        image_feature: the TFRecord feature holding the encoded image.
        label_feature: the TFRecord feature holding an integer label, if
            present.

    Returns:
        ``(float32 inputs, int64 labels or None)``.

    Raises:
        FileNotFoundError: when nothing exists at ``path``.
        ValueError: for an unknown kind of file, a file with no inputs, or
            inputs whose shape does not fit ``input_shape``.

    Example:

    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.npz"
    >>> np.savez(path, x=np.zeros((4, 8, 8, 1)), y=np.arange(4))
    >>> x, y = load_data(path, (8, 8, 1))
    >>> x.shape, x.dtype.name, y.tolist()
    ((4, 8, 8, 1), 'float32', [0, 1, 2, 3])
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Data {path} not found.")
    if pixel_range not in PIXEL_RANGES:
        raise ValueError(
            f"pixel range {pixel_range!r}; use one of {list(PIXEL_RANGES)}."
        )
    if path.is_dir():
        inputs, labels = _image_folder(path, input_shape, pixel_range)
    elif path.suffix == ".npz":
        inputs, labels = _npz(path)
    elif path.suffix == ".npy":
        inputs, labels = np.load(path, allow_pickle=False), None
    elif path.suffix in (".tfrecord", ".tfrecords"):
        inputs, labels = _tfrecord(
            path, input_shape, pixel_range, image_feature, label_feature
        )
    else:
        raise ValueError(
            f"Data {path}: not a .npz, .npy, .tfrecord or a folder of images."
        )
    inputs = np.asarray(inputs)
    if not np.issubdtype(inputs.dtype, np.number):
        raise ValueError(
            f"Data {path} holds {inputs.dtype} values, not numbers."
        )
    inputs = inputs.astype("float32")
    _check_fits(path, inputs, input_shape)
    if labels is not None:
        labels = np.asarray(labels).astype("int64").reshape(-1)
        if len(labels) != len(inputs):
            raise ValueError(
                f"Data {path} has {len(inputs)} inputs but {len(labels)} "
                "labels; give one label per input."
            )
    return inputs, labels


def _check_fits(path, inputs, input_shape):
    shape = tuple(inputs.shape[1:])
    fits = len(shape) == len(input_shape) and all(
        want is None or want == got for want, got in zip(input_shape, shape)
    )
    if not fits or len(inputs) == 0:
        raise ValueError(
            f"Data {path} holds inputs of shape {tuple(inputs.shape)}, which "
            f"do not fit the model's input (batch, "
            f"{', '.join(str(d) for d in input_shape)}); give samples of "
            "that shape (a folder of images is resized to it)."
        )


def _npz(path):
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        input_key = next((k for k in _INPUT_KEYS if k in keys), None)
        if input_key is None and len(keys) == 1:
            input_key = keys[0]
        if input_key is None:
            raise ValueError(
                f"Data {path} has arrays {keys}; name the inputs one of "
                f"{list(_INPUT_KEYS)}."
            )
        label_key = next((k for k in _LABEL_KEYS if k in keys), None)
        labels = archive[label_key] if label_key else None
        return archive[input_key], labels


def _scaled(pixels, pixel_range):
    low, high = PIXEL_RANGES[pixel_range]
    return low + pixels.astype("float32") * ((high - low) / 255.0)


def _decoded(tf, encoded, input_shape, where):
    height, width, channels = input_shape
    try:
        image = tf.io.decode_image(
            encoded, channels=channels or 0, expand_animations=False
        )
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise ValueError(
            f"{where} is not an image TensorFlow decodes: "
            f"{str(error).splitlines()[0]}"
        ) from None
    if height and width:
        image = tf.image.resize(image, (height, width))
    return image.numpy()


def _image_shape(path, input_shape):
    if len(input_shape) != 3:
        raise ValueError(
            f"Data {path} holds images, but the model's input has shape "
            f"{tuple(input_shape)}; images need (height, width, channels)."
        )
    return input_shape


def _image_folder(path, input_shape, pixel_range):
    import tensorflow as tf

    input_shape = _image_shape(path, input_shape)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    folders = [(path / name, index) for index, name in enumerate(classes)]
    if not folders:
        folders = [(path, None)]
    images, labels = [], []
    for folder, label in folders:
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            encoded = tf.io.read_file(os.fspath(file))
            images.append(_decoded(tf, encoded, input_shape, f"File {file}"))
            labels.append(label)
    if not images:
        raise ValueError(
            f"Data folder {path} holds no {'/'.join(_IMAGE_SUFFIXES)} "
            "images (directly or in one subfolder per class)."
        )
    stacked = _scaled(np.stack(images), pixel_range)
    return stacked, None if labels[0] is None else labels


def _tfrecord(path, input_shape, pixel_range, image_feature, label_feature):
    import tensorflow as tf

    input_shape = _image_shape(path, input_shape)
    images, labels = [], []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path))):
            example = tf.train.Example.FromString(record.numpy())
            features = example.features.feature
            if image_feature not in features:
                raise ValueError(
                    f"Record {index} of {path} has no feature "
                    f"{image_feature!r} (it has {sorted(features)}); name "
                    "the image feature with --image-feature."
                )
            (encoded,) = features[image_feature].bytes_list.value
            where = f"Record {index} of {path}"
            images.append(_decoded(tf, encoded, input_shape, where))
            if label_feature in features:
                labels.append(features[label_feature].int64_list.value[0])
    except tf.errors.DataLossError as error:
        raise ValueError(
            f"Data {path} is not a readable TFRecord: "
            f"{str(error).splitlines()[0]}"
        ) from None
    if not images:
        raise ValueError(f"Data {path} holds no records.")
    kept = labels if len(labels) == len(images) else None
    return _scaled(np.stack(images), pixel_range), kept
