"""Suite ``zoo``: the reference models every other benchmark builds on.

* The three Fashion-MNIST models (``resnet``, ``mobilenet_v2``,
  ``transformer``): top-1 accuracy of the FP32 model on the full 10,000-image
  test set and on the shipped 2,000-image slice, parameter counts and
  ``.keras`` file sizes. A model whose file is not on disk yet gets a
  "not trained yet" row.
* The ``fer`` package's pretrained mini-Xception: parameters, layer types,
  and the distribution of its predictions on the 100 real faces of
  ``skimage.data.lfw_subset()`` resized to 64x64 (there are no emotion
  labels offline, so this shows the model behaves like a classifier of real
  faces, not its accuracy).
"""

import collections
import importlib.util

import numpy as np

from benchmarks import harness

__all__ = ["run"]

# Inference batch size; it does not change the results.
BATCH_SIZE = 500

# --quick evaluates on the first images of each set only.
QUICK_NUM_IMAGES = 1000
FER_INPUT_SIZE = 64
# The fer package's label order (fer.FER._get_labels).
FER_EMOTIONS = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)
LFW_NUM_FACES = 100  # lfw_subset(): 100 faces, then 100 non-faces


def _fashion_mnist_sets(quick):
    """``{column: (images, labels) or None}`` and notes on what is missing."""
    from aimet_keras import zoo

    limit = QUICK_NUM_IMAGES if quick else None
    sets, notes = {}, []
    try:
        full = zoo.load_fashion_mnist("test")
    except FileNotFoundError as error:
        full = None
        notes.append(f"Full test set unavailable: {error}")
    sliced = zoo.load_fashion_mnist_slice("test")
    for column, data in (("full test set", full), ("shipped slice", sliced)):
        if data is None:
            sets[f"top-1, {column}"] = None
            continue
        images, labels = data[0][:limit], data[1][:limit]
        sets[f"top-1, {column} ({len(labels):,})"] = (images, labels)
    return sets, notes


def _fashion_mnist_table(quick):
    from aimet_keras import zoo

    sets, notes = _fashion_mnist_sets(quick)
    columns = ["model", "status", "parameters", "file KiB"] + list(sets)
    table = harness.Table(
        "Fashion-MNIST reference models (FP32)",
        columns,
        notes=notes,
        formats={"file KiB": "{:,.0f}", "parameters": "{:,}"}
        | {column: "{:.2%}" for column in sets},
    )
    for name in zoo.MODEL_NAMES:
        model = harness.load_reference_model(name)
        if model is None:
            table.add_row(name, "not trained yet", *[None] * (len(columns) - 2))
            continue
        accuracies = [
            None if data is None else harness.top1_accuracy(model, *data)
            for data in sets.values()
        ]
        size_kib = zoo.model_path(name).stat().st_size / 1024
        table.add_row(
            name, "trained", model.count_params(), size_kib, *accuracies
        )
    table.notes.append(
        "Top-1 accuracy of the model's argmax over its class probabilities. "
        "Train missing models with "
        "`python examples/zoo/train_reference_models.py`."
    )
    if quick:
        table.notes.append(
            f"--quick: first {QUICK_NUM_IMAGES:,} images of each set."
        )
    return table


def _lfw_faces():
    """The 100 LFW faces as fer input, ``(100, 64, 64, 1)`` in [-1, 1]."""
    from skimage import data
    from skimage import transform

    faces = data.lfw_subset()[:LFW_NUM_FACES].astype(np.float32)
    if faces.max() > 1.0:  # uint8 in older scikit-image releases
        faces /= 255.0
    size = (FER_INPUT_SIZE, FER_INPUT_SIZE)
    resized = np.stack(
        [transform.resize(face, size, order=1) for face in faces]
    )
    return ((resized - 0.5) * 2.0)[..., np.newaxis].astype(np.float32)


def _fer_tables():
    from aimet_keras import zoo

    summary = harness.Table(
        "fer mini-Xception (pretrained emotion classifier)",
        ["status", "parameters", "trainable", "layers", "input", "classes"],
        formats={"parameters": "{:,}", "trainable": "{:,}"},
    )
    try:
        model = zoo.load_fer_model()
    except ModuleNotFoundError as error:
        summary.add_row("not installed", None, None, None, None, None)
        summary.notes.append(str(error))
        return [summary]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    summary.add_row(
        "loaded",
        model.count_params(),
        trainable,
        len(model.layers),
        str(model.input_shape),
        model.output_shape[-1],
    )
    layer_types = harness.Table("fer layer types", ["layer type", "count"])
    counts = collections.Counter(type(layer).__name__ for layer in model.layers)
    for layer_type, count in counts.most_common():
        layer_types.add_row(layer_type, count)
    tables = [summary, layer_types]

    predictions = harness.Table(
        f"fer predictions on the {LFW_NUM_FACES} LFW faces of "
        "skimage.data.lfw_subset()",
        ["emotion", "top-1 count", "top-1 share", "mean probability"],
        formats={"top-1 share": "{:.0%}", "mean probability": "{:.3f}"},
    )
    if importlib.util.find_spec("skimage") is None:
        predictions.notes.append(
            "Skipped: scikit-image is not installed (`pip install "
            "scikit-image`); the faces come from skimage.data.lfw_subset()."
        )
        return tables + [predictions]
    probabilities = model.predict(
        _lfw_faces(), batch_size=BATCH_SIZE, verbose=0
    )
    top1 = np.bincount(
        np.argmax(probabilities, -1), minlength=len(FER_EMOTIONS)
    )
    for index, emotion in enumerate(FER_EMOTIONS):
        predictions.add_row(
            emotion,
            int(top1[index]),
            top1[index] / len(probabilities),
            float(probabilities[:, index].mean()),
        )
    predictions.notes += [
        "The 25x25 grey face crops are resized bilinearly to 64x64 and scaled "
        "to [-1, 1], fer's own preprocessing; there are no emotion labels, so "
        "this is a distribution, not an accuracy.",
        "A real classifier spreads its predictions over several emotions; a "
        "broken load (wrong weights or scaling) collapses onto one class.",
    ]
    return tables + [predictions]


def run(quick=False):
    """Runs the suite.

    Args:
        quick: evaluate on the first 1,000 images of each set only.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    tables = [_fashion_mnist_table(quick)] + _fer_tables()
    settings = {"batch_size": BATCH_SIZE}
    if quick:
        settings["max_images"] = QUICK_NUM_IMAGES
    return harness.Report("zoo", tables, settings, quick=quick)
