"""Suite ``real_fidelity``: stock architectures trained, then quantized.

Random weights make top-1 meaningless (near-ties everywhere), so each stock
``keras.applications`` architecture (random init, its own classifier head
with 10 classes) is first trained briefly on Fashion-MNIST: the 28x28
images padded to 32x32 (Xception: resized to 71x71, its smallest input),
repeated to 3 channels, a few epochs on part of the training split. Then,
as a user would deploy it: batch norms folded, a W8A8 sim with the
``tflite_int8`` config calibrated on 512 training images, exported to int8
TFLite and QDQ ONNX. One row per model, on the first ``TEST`` test images:

- top-1 accuracy of FP32 (batch norms re-estimated on 4096 training
  images after training), of the sim, of the TFLite converter's own full
  integer PTQ of the FP32 model (representative dataset: the same 512
  images), and sim minus FP32;
- top-1 agreement of the TFLite and ONNX exports with the sim.

Issue 17's targets: sim within 0.5 points of FP32; exports agree with the
sim on at least 99.5% of top-1.

Each model trains and is measured in a process of its own (``python -m
benchmarks.suites.real_fidelity NAME FOLDER``). Trained weights are kept in
``$AIMET_KERAS_BENCH_CACHE`` (default ``~/.cache/aimet_keras_bench``), so a
second run only quantizes. ``--quick`` runs three architectures.
ConvNeXtTiny's and Xception's weights were trained on a GPU machine with
the JAX backend and the same recipe (``benchmarks/train_elsewhere.py``);
without them in the cache the suite trains them here, for hours.
"""

import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks import train_elsewhere
from benchmarks.suites import real_models

__all__ = ["run"]

QUICK_ARCHITECTURES = ("MobileNetV3Small", "ResNet50", "DenseNet121")
# Architectures whose post-training W8A8 misses the 0.5-point target get a
# second row: AIMET's next step, quantization-aware training, as a user
# would run it (range learning from min/max ranges, a small learning rate,
# two epochs on the training images: EfficientNetB0 was 0.54 points short
# of FP32 after one, 0.15 above after two).
QAT_ARCHITECTURES = ("EfficientNetB0",)
QAT_EPOCHS, QAT_LEARNING_RATE = 2, 1e-5
SIZE = 32
TRAIN, EPOCHS, BATCH = 12000, 3, 64
CALIBRATION = 512
TEST = 10000  # the whole test split
LEGACY_TEST_IMAGES = 2000  # rows measured before the whole split was


def _cache_folder():
    folder = os.environ.get(
        "AIMET_KERAS_BENCH_CACHE",
        os.path.join(os.path.expanduser("~"), ".cache", "aimet_keras_bench"),
    )
    os.makedirs(folder, exist_ok=True)
    return folder


def _images(split, count, name):
    """Fashion-MNIST as ``name`` takes it (see ``prepare_images``)."""
    from aimet_keras.zoo.datasets import load_fashion_mnist

    images, labels = load_fashion_mnist(split)
    images = train_elsewhere.prepare_images(
        images[:count], name, real_models._resized
    )
    return images, labels[:count]


def cached_weights_path(name, size):
    """Where the trained weights of ``name`` at ``size`` are cached."""
    return os.path.join(
        _cache_folder(), f"{name}_{size}_{TRAIN}x{EPOCHS}_v2.weights.h5"
    )


def save_weights_atomically(model, path):
    """``model.save_weights(path)`` by way of a temporary file in the same
    folder: a run killed midway leaves no truncated cache for the next."""
    partial = path[: -len(".weights.h5")] + ".partial.weights.h5"
    model.save_weights(partial)
    os.replace(partial, path)


def _trained(name, size):
    """The stock model trained on Fashion-MNIST, from the cache if there."""
    import keras

    path = cached_weights_path(name, size)
    keras.utils.set_random_seed(0)
    model = real_models.stock_model(name, size)
    images, labels = _images("train", TRAIN, name)
    if os.path.exists(path):
        model.load_weights(path)
        _reestimate(model, images)
        return model, None
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(images, labels, batch_size=BATCH, epochs=EPOCHS, verbose=0)
    seconds = time.perf_counter() - start
    save_weights_atomically(model, path)
    _reestimate(model, images)
    return model, seconds


def _reestimate(model, images):
    """Moving statistics of the trained weights, not of the training's
    average: MobileNetV2/V3's batch norms (momentum 0.999) keep half their
    initial statistics after a few hundred steps, and predict one class.
    """
    import keras

    from aimet_keras import ptq

    if any(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in model.layers
    ):  # ConvNeXt has none
        ptq.reestimate_bn_stats(model, images[:4096], bn_num_batches=64)


def _agreement(candidate, reference):
    """Top-1 agreement, ``(strict, ties apart)``.

    An int8 softmax has 256 levels: two classes often share the top level,
    and the argmax then picks the lower index whichever is larger in the
    other model. *Ties apart* counts a sample as agreeing when either
    model's top class is among the other's top-level classes.
    """
    top_c, top_r = candidate.argmax(-1), reference.argmax(-1)
    rows = np.arange(len(candidate))
    tied = (reference[rows, top_c] == reference.max(-1)) | (
        candidate[rows, top_r] == candidate.max(-1)
    )
    return float(np.mean(top_c == top_r)), float(np.mean(tied))


def _measure(name, folder, qat_epochs=0):
    """One row, printed as ``RESULT <json>`` (run in a process of its own);
    with ``qat_epochs``, the sim is trained that long before it is measured
    and exported."""
    import keras

    from aimet_keras import export_onnx
    from aimet_keras import export_tflite
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    size = train_elsewhere.input_size(name)
    model, train_seconds = _trained(name, size)
    test_images, test_labels = _images("test", TEST, name)
    calibration, _ = _images("train", CALIBRATION, name)

    def correct(outputs):
        return real_models._top1(outputs) == test_labels

    def accuracy(outputs):
        return float(np.mean(correct(outputs)))

    fp32 = model.predict(test_images, batch_size=64, verbose=0)
    folded, _ = ptq.fold_all_batch_norms(real_models._prepared(model))
    sim = QuantizationSimModel(
        folded,
        config_file="tflite_int8",
        strict=True,
        quant_scheme=(
            "training_range_learning_with_tf_init"
            if qat_epochs
            else "tf_enhanced"
        ),
    )
    sim.compute_encodings(calibration)
    simulated = sim.model.predict(test_images, batch_size=64, verbose=0)
    result = {}
    if qat_epochs:
        result["before_qat"] = accuracy(simulated)
        train_images, train_labels = _images("train", TRAIN, name)
        sim.model.compile(
            optimizer=keras.optimizers.Adam(QAT_LEARNING_RATE),
            loss="sparse_categorical_crossentropy",
        )
        start = time.perf_counter()
        sim.model.fit(
            train_images,
            train_labels,
            batch_size=BATCH,
            epochs=qat_epochs,
            verbose=0,
        )
        result["qat_seconds"] = time.perf_counter() - start
        result["qat_epochs"] = qat_epochs
        simulated = sim.model.predict(test_images, batch_size=64, verbose=0)
    result.update(
        {
            "name": name,
            "size": size,
            "test_images": len(test_labels),
            "train_seconds": train_seconds,
            "fp32": accuracy(fp32),
            "sim": accuracy(simulated),
            # The paired difference's standard error: a 0.5-point target is
            # only resolved where this is well below it.
            "sim_se": float(
                np.std(correct(simulated).astype(float) - correct(fp32), ddof=1)
                / np.sqrt(len(test_labels))
            ),
        }
    )
    ordered = np.sort(simulated, axis=-1)
    result["sim_ties"] = float(np.mean(ordered[:, -1] == ordered[:, -2]))
    for kind, export in (
        ("tflite", lambda: export_tflite(sim, f"{folder}/{name}.tflite")),
        ("onnx", lambda: export_onnx(sim, f"{folder}/{name}.onnx")),
    ):
        try:
            exported = export()
            outputs = (
                real_models._tflite_outputs(exported.path, test_images)
                if kind == "tflite"
                else real_models._onnx_outputs(exported.qdq_path, test_images)
            )
            result[kind] = _agreement(outputs, simulated)
            result[f"{kind}_top1"] = accuracy(outputs)
        except Exception as error:  # a failed export is a result
            result[kind] = f"fails: {type(error).__name__}"
    try:
        own = real_models._converter_int8(
            model,
            calibration,
            real_models.harness_path(folder, f"{name}_own.tflite"),
        )
        result["converter"] = accuracy(
            real_models._tflite_outputs(own, test_images)
        )
    except Exception as error:
        result["converter"] = f"fails: {type(error).__name__}"
    print("RESULT " + json.dumps(result))


def _ties_apart(agreement):
    return agreement[1] if isinstance(agreement, list) else agreement


def _strict(agreement):
    return f"{agreement[0]:.2%}" if isinstance(agreement, list) else agreement


def run(quick=False, names=None):
    """Runs the suite.

    Args:
        quick: three architectures only.
        names: architectures to run (default: all of ``real_models``').

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    import tempfile

    names = names or (
        QUICK_ARCHITECTURES if quick else real_models.ARCHITECTURES
    )
    runs = [(name,) for name in names] + [
        (name, QAT_EPOCHS) for name in QAT_ARCHITECTURES if name in names
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="real_fidelity_") as folder:
        for name, *qat in runs:
            try:
                rows.append(
                    real_models.run_child(
                        "benchmarks.suites.real_fidelity", name, folder, *qat
                    )
                )
            except RuntimeError as error:
                message = " ".join(str(error).split())[-160:]
                rows.append({"name": name, "error": message})
                if qat:
                    rows[-1]["qat_epochs"] = qat[0]
    return report(rows, quick)


def report(rows, quick=False):
    """The suite's report from its rows (the children's results).

    Example:

    >>> report([{"name": "ResNet50", "error": "out of memory"}]).suite
    'real_fidelity'
    """
    table = harness.Table(
        f"Stock keras.applications trained on Fashion-MNIST ({TRAIN} images,"
        f" {EPOCHS} epochs), W8A8 tflite_int8, top-1 on the test split",
        [
            "model",
            "input",
            "test images",
            "train s",
            "FP32",
            "sim W8A8",
            "sim - FP32 (pt)",
            "s.e. (pt)",
            "TFLite's own int8",
            "sim top-1 ties",
            "TFLite = sim",
            "ONNX = sim",
            "strict TFLite / ONNX = sim",
        ],
        formats={
            "train s": "{:.0f}",
            "FP32": "{:.2%}",
            "sim W8A8": "{:.2%}",
            "sim - FP32 (pt)": "{:+.2f}",
            "s.e. (pt)": "{:.2f}",
            "TFLite's own int8": "{:.2%}",
            "TFLite = sim": "{:.2%}",
            "ONNX = sim": "{:.2%}",
            "sim top-1 ties": "{:.1%}",
        },
    )
    for row in (row for row in rows if "qat_epochs" not in row):
        if "error" in row:
            table.add_row(row["name"], *[None] * 11, f"fails: {row['error']}")
            continue
        table.add_row(
            row["name"],
            row["size"],
            row.get("test_images", LEGACY_TEST_IMAGES),
            row["train_seconds"],
            row["fp32"],
            row["sim"],
            100 * (row["sim"] - row["fp32"]),
            100 * row["sim_se"] if "sim_se" in row else None,
            row["converter"],
            row["sim_ties"],
            *(_ties_apart(row[kind]) for kind in ("tflite", "onnx")),
            " / ".join(_strict(row[kind]) for kind in ("tflite", "onnx")),
        )
    table.notes += [
        "Targets (issue 17): sim within 0.5 points of FP32; TFLite and ONNX "
        "agree with the sim on at least 99.5% of top-1.",
        "TFLite / ONNX = sim count a sample whose top class is tied at the "
        "top level of the other model's 8-bit softmax as agreeing (sim "
        "top-1 ties: how often the sim's two top classes share a level); "
        "the strict column counts argmax only.",
        "train s is empty where the trained weights came from the cache.",
        "s.e.: the standard error of sim - FP32 over the test images (the "
        "paired difference of per-image correctness); empty for rows "
        "measured before it was recorded.",
    ]
    tables = [table]
    qat_rows = [row for row in rows if "qat_epochs" in row]
    if qat_rows:
        tables.append(_qat_table(qat_rows))
    return harness.Report(
        suite="real_fidelity",
        tables=tables,
        settings={
            "size": SIZE,
            "train_images": TRAIN,
            "epochs": EPOCHS,
            "calibration": CALIBRATION,
            "test_images": TEST,
        },
        quick=quick,
    )


def _qat_table(rows):
    """The rows whose sim was trained (QAT) before it was measured."""
    table = harness.Table(
        f"W8A8 tflite_int8 after quantization-aware training (Adam "
        f"{QAT_LEARNING_RATE:g}, {TRAIN} training images), top-1 on {TEST} "
        "test images",
        [
            "model",
            "QAT epochs",
            "QAT s",
            "FP32",
            "sim before QAT",
            "sim after QAT",
            "sim - FP32 (pt)",
            "s.e. (pt)",
            "exported TFLite",
            "TFLite = sim",
            "ONNX = sim",
            "strict TFLite / ONNX = sim",
        ],
        formats={
            "QAT s": "{:.0f}",
            "FP32": "{:.2%}",
            "sim before QAT": "{:.2%}",
            "sim after QAT": "{:.2%}",
            "sim - FP32 (pt)": "{:+.2f}",
            "s.e. (pt)": "{:.2f}",
            "exported TFLite": "{:.2%}",
            "TFLite = sim": "{:.2%}",
            "ONNX = sim": "{:.2%}",
        },
    )
    for row in rows:
        if "error" in row:
            table.add_row(
                row["name"],
                row["qat_epochs"],
                *[None] * 9,
                f"fails: {row['error']}",
            )
            continue
        table.add_row(
            row["name"],
            row["qat_epochs"],
            row["qat_seconds"],
            row["fp32"],
            row["before_qat"],
            row["sim"],
            100 * (row["sim"] - row["fp32"]),
            100 * row["sim_se"],
            row.get("tflite_top1"),
            *(_ties_apart(row[kind]) for kind in ("tflite", "onnx")),
            " / ".join(_strict(row[kind]) for kind in ("tflite", "onnx")),
        )
    table.notes.append(
        "The sim starts from min/max ranges (range learning), calibrated on "
        f"the same {CALIBRATION} images, and trains weights and ranges."
    )
    table.notes.append(
        "FP32 is the model before QAT: QAT also trains its weights for those "
        "epochs, which the float model did not get (a float model trained "
        "as long is not measured), so a gain over FP32 is partly training."
    )
    return table


if __name__ == "__main__":
    _measure(*sys.argv[1:3], *map(int, sys.argv[3:4]))
