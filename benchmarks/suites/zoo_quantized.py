"""Suite ``zoo_quantized``: the quantized variants the model zoo ships.

For each reference model and variant (``w8a8``, ``w4a8`` AdaRound, ``w4a4``
block reconstruction; see :mod:`aimet_keras.zoo.quantized`) it runs the
recipe from scratch on the first 1,024 Fashion-MNIST training images,
measures top-1 on the full 10,000-image test set and on the shipped
2,000-image slice, exports the W8A8 variant to integer TFLite, and then
loads the variant back from its files (:func:`~aimet_keras.zoo.load_quantized`)
to check that the files reproduce the sim exactly.

With ``--update-results`` the recipes, encodings and weights replace the
ones shipped in ``aimet_keras/zoo/data/quantized``; otherwise they go to
``artifacts/zoo_quantized``.
"""

import pathlib
import tempfile
import time

import numpy as np

from benchmarks import harness

__all__ = ["run"]

SCRATCH_DIR = pathlib.Path("artifacts") / "zoo_quantized"
QUICK = dict(calibration=128, iterations=20, test_images=500)


def _top1(model, images, labels):
    return harness.top1_accuracy(model, images, labels)


def _tflite_top1(sim, images, labels):
    from aimet_keras import export_tflite
    from aimet_keras.export.tflite import run_tflite

    exported = export_tflite(sim, f"{tempfile.mkdtemp()}/model.tflite")
    predictions = run_tflite(exported.path, images)
    return float(np.mean(predictions.argmax(-1) == labels))


def run(quick=False, update_results=False):
    from aimet_keras import zoo
    from aimet_keras.zoo import quantized

    sizes = QUICK if quick else {}
    calibration_count = sizes.get("calibration", quantized.CALIBRATION_IMAGES)
    iterations = sizes.get("iterations", quantized.ITERATIONS)
    calibration = quantized.calibration_images(calibration_count)
    test_images, test_labels = zoo.load_fashion_mnist("test")
    limit = sizes.get("test_images")
    test_images, test_labels = test_images[:limit], test_labels[:limit]
    slice_images, slice_labels = zoo.load_fashion_mnist_slice("test")
    directory = (
        quantized.QUANTIZED_DIR
        if update_results and not quick
        else SCRATCH_DIR / ("quick" if quick else "full")
    )

    table = harness.Table(
        f"Quantized variants made from their recipes ({calibration_count:,} "
        f"calibration images, {iterations:,} iterations), top-1 on "
        f"{len(test_labels):,} test images",
        [
            "model",
            "variant",
            "FP32",
            "quantized",
            "drop (pt)",
            "exported TFLite",
            "slice FP32",
            "slice quantized",
            "recipe s",
            "load s",
            "reload = made",
            "files KiB",
        ],
        formats={
            "FP32": "{:.2%}",
            "quantized": "{:.2%}",
            "drop (pt)": "{:+.2f}",
            "exported TFLite": "{:.2%}",
            "slice FP32": "{:.2%}",
            "slice quantized": "{:.2%}",
            "recipe s": "{:.0f}",
            "load s": "{:.1f}",
            "files KiB": "{:.0f}",
        },
    )
    for name in zoo.MODEL_NAMES:
        model = zoo.load_model(name, compile=False)
        fp32 = _top1(model, test_images, test_labels)
        slice_fp32 = _top1(model, slice_images, slice_labels)
        for variant in quantized.VARIANTS:
            if (name, variant) in quantized.NOT_SHIPPED:
                continue
            sim, steps = quantized.make_quantized(
                name, variant, calibration, iterations=iterations
            )
            accuracy = _top1(sim.model, test_images, test_labels)
            slice_accuracy = _top1(sim.model, slice_images, slice_labels)
            exported = (
                _tflite_top1(sim, test_images, test_labels)
                if variant == "w8a8"
                else None
            )
            details = {
                "steps": steps,
                "calibration": {
                    "images": calibration_count,
                    "source": "Fashion-MNIST training set, first images",
                },
                "accuracy": {
                    "test_images": len(test_labels),
                    "fp32": fp32,
                    "quantized": accuracy,
                    "exported_tflite": exported,
                    "slice_images": len(slice_labels),
                    "slice_fp32": slice_fp32,
                    "slice_quantized": slice_accuracy,
                },
            }
            paths = quantized.save_quantized(
                sim, name, variant, details, directory
            )
            started = time.perf_counter()
            loaded = quantized.load_quantized(name, variant, directory)
            load_seconds = time.perf_counter() - started
            made = sim.model.predict(slice_images, batch_size=500, verbose=0)
            again = loaded.model.predict(
                slice_images, batch_size=500, verbose=0
            )
            size = sum(path.stat().st_size for path in paths.values() if path)
            table.add_row(
                name,
                variant,
                fp32,
                accuracy,
                100 * (fp32 - accuracy),
                exported,
                slice_fp32,
                slice_accuracy,
                sum(step["seconds"] for step in steps),
                load_seconds,
                bool(np.array_equal(made, again)),
                size / 1024,
            )
    table.notes.extend(
        [
            "quantized: the sim the recipe made; exported TFLite: its "
            "integer TFLite export (W8A8 only: the htp variants' 4-bit "
            "grids are for QNN, exported as encodings and ONNX).",
            "reload = made: the sim load_quantized rebuilds from the files "
            "gives the same outputs, bit for bit, on the slice.",
            f"Files written to {directory}.",
            *(
                f"Not made: {name} {variant}: {why}"
                for (name, variant), why in quantized.NOT_SHIPPED.items()
            ),
        ]
    )
    return harness.Report(
        suite="zoo_quantized",
        tables=[table],
        settings=dict(
            calibration=calibration_count,
            iterations=iterations,
            test_images=len(test_labels),
        ),
        quick=quick,
    )
