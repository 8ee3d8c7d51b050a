"""Model inputs for the command line: arrays, image folders and TFRecords.

Each loader returns ``(inputs, labels)``: float32 inputs shaped for the
model (batch first) and integer labels, or None where the source has none.
Errors are ``ValueError`` or ``FileNotFoundError`` naming the file and the
fix; nothing loads TensorFlow until a folder or TFRecord needs it.
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import tokenize
import zipfile
import zlib

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
        ValueError: for an unknown kind of file, a corrupt one, a file
            with no inputs, inputs that are not real numbers, hold NaN or
            inf or do not fit ``input_shape``, or labels that are not one
            whole number per input; naming the file.

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
        with open(path, "rb") as file:
            inputs = _read_npy(file, path.stat().st_size, f"Data {path}")
        labels = None
    elif path.suffix in (".tfrecord", ".tfrecords"):
        inputs, labels = _tfrecord(
            path, input_shape, pixel_range, image_feature, label_feature
        )
    else:
        raise ValueError(
            f"Data {path}: not a .npz, .npy, .tfrecord or a folder of images."
        )
    inputs = np.asarray(inputs)
    if not (
        np.issubdtype(inputs.dtype, np.integer)
        or np.issubdtype(inputs.dtype, np.floating)
    ):
        raise ValueError(
            f"Data {path} holds {inputs.dtype} values, not real numbers."
        )
    _check_fits(path, inputs, input_shape)
    with np.errstate(over="ignore", invalid="ignore"):
        inputs = inputs.astype("float32")
    _check_finite(path, inputs)
    if labels is not None:
        labels = _labels(path, np.asarray(labels), len(inputs))
    return inputs, labels


def _check_finite(path, inputs):
    """NaN or inf (or values past float32's range) would reach the
    calibration as NaN ranges: refuse them here, naming the sample."""
    bad = ~np.isfinite(inputs.reshape(len(inputs), -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"Data {path}: {int(bad.sum())} of {len(inputs)} inputs hold NaN "
            f"or inf (or values beyond float32's range), the first at index "
            f"{int(np.argmax(bad))}; clean or drop those samples."
        )


def _labels(path, labels, count):
    """Integer class labels, one per input, as int64."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != count:
        raise ValueError(
            f"Data {path} has {count} inputs but "
            + (
                f"{len(labels)} labels"
                if labels.ndim == 1
                else f"labels of shape {labels.shape}"
            )
            + "; give one integer label per input."
        )
    whole = np.issubdtype(labels.dtype, np.integer)
    if np.issubdtype(labels.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            whole = bool(
                np.all(np.isfinite(labels) & (labels == np.round(labels)))
            )
    limit = np.iinfo(np.int64)
    if not whole or (
        labels.size and (labels.min() < limit.min or labels.max() > limit.max)
    ):
        raise ValueError(
            f"Data {path} holds labels of type {labels.dtype} that are not "
            f"all whole numbers within int64 (first: {labels[:3].tolist()}); "
            "give integer class labels."
        )
    return labels.astype("int64")


def _check_fits(path, inputs, input_shape):
    shape = tuple(inputs.shape[1:])
    fits = (
        inputs.ndim > 0
        and len(shape) == len(input_shape)
        and all(
            want is None or want == got for want, got in zip(input_shape, shape)
        )
    )
    if not fits or len(inputs) == 0:
        raise ValueError(
            f"Data {path} holds inputs of shape {tuple(inputs.shape)}, which "
            f"do not fit the model's input (batch, "
            f"{', '.join(str(d) for d in input_shape)}); give samples of "
            "that shape (a folder of images is resized to it)."
        )


# What a corrupt .npy or .npz makes numpy and zipfile raise.
_ARRAY_FILE_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    SyntaxError,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # a compression method zipfile lacks
    RuntimeError,  # zipfile: an entry flagged encrypted
)


def _read_npy(file, size, where):
    """The array in an open ``.npy`` of ``size`` bytes, checked first.

    The header must describe no more data than the file holds (numpy
    would otherwise allocate whatever a corrupt header says) and no
    pickled objects.
    """
    try:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(file)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(file)
        else:
            raise ValueError(f"npy format version {version} is not read")
        shape, _, dtype = header
        if dtype.hasobject:
            raise ValueError("it holds Python objects, which need pickle")
        needed = math.prod(shape) * dtype.itemsize
        if needed > size - file.tell():
            raise ValueError(
                f"its header promises {needed} bytes of data for shape "
                f"{shape}; the file holds {size - file.tell()}"
            )
        file.seek(0)
        return np.load(file, allow_pickle=False)
    except _ARRAY_FILE_ERRORS as error:
        raise ValueError(
            f"{where} is not a readable .npy array: {error}"
        ) from None


def _npz(path):
    try:
        with zipfile.ZipFile(path) as archive:
            members = {
                info.filename[: -len(".npy")]: info
                for info in archive.infolist()
                if info.filename.endswith(".npy")
            }
            keys = list(members)
            input_key = next((k for k in _INPUT_KEYS if k in keys), None)
            if input_key is None and len(keys) == 1:
                input_key = keys[0]
            if input_key is None:
                raise ValueError(
                    f"Data {path} has arrays {keys}; name the inputs one of "
                    f"{list(_INPUT_KEYS)}."
                )
            label_key = next((k for k in _LABEL_KEYS if k in keys), None)
            arrays = []
            for key in (input_key, label_key):
                if key is None:
                    arrays.append(None)
                    continue
                with archive.open(members[key]) as member:
                    # Seekable for np.load: read the member into memory.
                    raw = member.read()
                where = f"Array {key!r} of {path}"
                arrays.append(_read_npy(io.BytesIO(raw), len(raw), where))
            return tuple(arrays)
    except _ARRAY_FILE_ERRORS as error:
        if str(path) in str(error):
            raise
        raise ValueError(
            f"Data {path} is not a readable .npz archive: {error}"
        ) from None


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


def _features(serialized, where):
    """The features of a serialized ``tf.train.Example``."""
    import tensorflow as tf
    from google.protobuf import message

    try:
        return tf.train.Example.FromString(serialized).features.feature
    except message.DecodeError as error:
        raise ValueError(
            f"{where} is not a tf.train.Example: {error}"
        ) from None


def _tfrecord(path, input_shape, pixel_range, image_feature, label_feature):
    import tensorflow as tf

    input_shape = _image_shape(path, input_shape)
    images, labels = [], []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path))):
            where = f"Record {index} of {path}"
            features = _features(record.numpy(), where)
            if image_feature not in features:
                raise ValueError(
                    f"{where} has no feature {image_feature!r} (it has "
                    f"{sorted(features)}); name the image feature with "
                    "--image-feature."
                )
            encoded = features[image_feature].bytes_list.value
            if len(encoded) != 1:
                raise ValueError(
                    f"{where}: feature {image_feature!r} holds "
                    f"{len(encoded)} byte strings; one encoded image is "
                    "expected."
                )
            images.append(_decoded(tf, encoded[0], input_shape, where))
            if label_feature in features:
                label = features[label_feature].int64_list.value
                if len(label) != 1:
                    raise ValueError(
                        f"{where}: feature {label_feature!r} holds "
                        f"{len(label)} int64 values; one label is expected."
                    )
                labels.append(label[0])
    except tf.errors.DataLossError as error:
        raise ValueError(
            f"Data {path} is not a readable TFRecord: "
            f"{str(error).splitlines()[0]}"
        ) from None
    if not images:
        raise ValueError(f"Data {path} holds no records.")
    kept = labels if len(labels) == len(images) else None
    return _scaled(np.stack(images), pixel_range), kept
