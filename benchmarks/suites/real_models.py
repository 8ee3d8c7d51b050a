"""Suite ``real_models``: stock architectures end to end, at real sizes.

1. Coverage: each stock ``keras.applications`` architecture with its
   classifier head (random weights, batch norms re-estimated on real photos
   so that its activations have real statistics) is split, BN-folded,
   simulated W8A8 with the ``tflite_int8`` config, calibrated on photo
   crops and exported to int8 TFLite and QDQ ONNX. One row per model:
   parameters, sim build time, calibration time over the FP32 forward time
   on the same images, top-1 agreement with FP32 of the sim and of the
   TFLite converter's own int8 (representative dataset, same images),
   agreement of the TFLite and ONNX exports with the sim, file sizes.

Speed and memory at real size are suite ``real_models_speed``; fidelity on
trained models is ``real_fidelity``.

``--quick`` runs three architectures at 64x64.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import harness

__all__ = ["peak_resident_mib", "run", "run_child", "stock_model"]

ARCHITECTURES = (
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "ResNet50",
    "ResNet50V2",
    "DenseNet121",
    "ConvNeXtTiny",
    "Xception",
    "NASNetMobile",
)
QUICK_ARCHITECTURES = ("MobileNetV3Small", "ResNet50", "EfficientNetB0")
CLASSES = 10
SIZE, QUICK_SIZE = 224, 64
IMAGES, QUICK_IMAGES = 64, 32


def stock_model(name, size, classes=CLASSES):
    """A stock ``keras.applications`` model, random weights, its head."""
    import keras

    if name == "Xception":
        size = max(size, 71)  # Xception takes 71x71 and more
    builder = getattr(keras.applications, name)
    options = dict(
        include_top=True,
        weights=None,
        input_shape=(size, size, 3),
        classes=classes,
    )
    if name == "MobileNetV2":
        options["alpha"] = 1.0
    return builder(**options)


def _prepared(model):
    from aimet_keras import graph

    return graph.split_for_deployment(model)


def _top1(outputs):
    return np.argmax(outputs, axis=-1)


def _tflite_outputs(path, images):
    from aimet_keras.export.tflite import run_tflite

    return run_tflite(path, images)


def _converter_int8(model, images, path):
    """The TFLite converter's own full-integer PTQ of ``model``."""
    import tensorflow as tf

    from aimet_keras import _quiet

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [image[None]] for image in images
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with _quiet.quiet_conversion():
        path.write_bytes(converter.convert())
    return path


def _model_row(name, size, count, folder):
    """One coverage row, in a process of its own (run as ``python -m
    benchmarks.suites.real_models NAME SIZE COUNT FOLDER``): its peak
    memory is its own, and one model's failure stops only its row."""
    import keras

    from aimet_keras import export_onnx
    from aimet_keras import export_tflite
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel
    from benchmarks.photos import photo_crops

    images = photo_crops(count, size)
    keras.utils.set_random_seed(0)
    model = stock_model(name, size)
    if name == "Xception":
        images = _resized(images, 71) if size < 71 else images
    if any(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in model.layers
    ):  # ConvNeXt has none
        ptq.reestimate_bn_stats(model, images, bn_num_batches=4, batch_size=16)
    fp32 = model.predict(images, batch_size=32, verbose=0)
    start = time.perf_counter()
    model.predict(images, batch_size=32, verbose=0)
    forward = time.perf_counter() - start
    model_path = os.path.join(folder, f"{name}.keras")
    model.save(model_path)

    start = time.perf_counter()
    folded, _ = ptq.fold_all_batch_norms(_prepared(model))
    sim = QuantizationSimModel(folded, config_file="tflite_int8", strict=True)
    build = time.perf_counter() - start
    start = time.perf_counter()
    sim.compute_encodings(images)
    calibration = time.perf_counter() - start
    simulated = sim.model.predict(images, batch_size=32, verbose=0)
    sim_path = os.path.join(folder, f"{name}_sim.keras")
    sim.model.save(sim_path)

    exported = export_tflite(sim, os.path.join(folder, f"{name}.tflite"))
    tflite_agreement = np.mean(
        _top1(_tflite_outputs(exported.path, images)) == _top1(simulated)
    )
    tflite_mib = exported.size_bytes / 2**20
    try:
        own = _converter_int8(
            model, images, harness_path(folder, f"{name}_own.tflite")
        )
        converter_agreement = np.mean(
            _top1(_tflite_outputs(own, images)) == _top1(fp32)
        )
    except Exception as error:  # the converter's failure is a result
        converter_agreement = f"fails: {type(error).__name__}"
    onnx_files = export_onnx(sim, os.path.join(folder, f"{name}.onnx"))
    onnx_agreement = np.mean(
        _top1(_onnx_outputs(onnx_files.qdq_path, images)) == _top1(simulated)
    )
    row = [
        name,
        size if name != "Xception" else max(size, 71),
        model.count_params() / 1e6,
        build,
        calibration / forward,
        np.mean(_top1(simulated) == _top1(fp32)),
        converter_agreement,
        tflite_agreement,
        onnx_agreement,
        os.path.getsize(model_path) / 2**20,
        os.path.getsize(sim_path) / os.path.getsize(model_path),
        tflite_mib,
        peak_resident_mib(),
    ]
    print("RESULT " + json.dumps({"row": [_plain(v) for v in row]}))


def _plain(value):
    """A JSON value: numpy scalars as Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def harness_path(folder, name):
    import pathlib

    return pathlib.Path(folder) / name


def _resized(images, size):
    import tensorflow as tf

    return tf.image.resize(images, (size, size)).numpy()


def _onnx_outputs(path, images):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run(None, {name: images[i : i + 16]})[0]
            for i in range(0, len(images), 16)
        ]
    )


def peak_resident_mib():
    """This process's peak resident memory in MiB (None off Linux)."""
    # VmHWM: this process's own peak (getrusage's maxrss keeps the parent's
    # across exec).
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def run_child(module, *args):
    """Runs ``python -m module *args`` and returns the dict it printed as
    ``RESULT <json>``: a measurement in a process of its own, so that its
    peak memory and its TensorFlow state are its own."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"{module} {' '.join(map(str, args))} failed: "
        f"{completed.stderr[-2000:]}"
    )


def run(quick=False):
    """Runs the suite.

    Args:
        quick: three architectures at 64x64.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """

    size = QUICK_SIZE if quick else SIZE
    count = QUICK_IMAGES if quick else IMAGES
    names = QUICK_ARCHITECTURES if quick else ARCHITECTURES
    coverage = harness.Table(
        f"Stock keras.applications, W8A8 tflite_int8, {count} photo crops",
        [
            "model",
            "input",
            "params (M)",
            "sim build s",
            "calibration / FP32 forward",
            "sim = FP32 top-1",
            "TFLite's own int8 = FP32",
            "TFLite = sim",
            "ONNX = sim",
            "FP32 MiB",
            "sim file / FP32",
            "TFLite MiB",
            "peak MiB",
        ],
        formats={
            "params (M)": "{:.1f}",
            "sim build s": "{:.1f}",
            "calibration / FP32 forward": "{:.2f}",
            "sim = FP32 top-1": "{:.1%}",
            "TFLite's own int8 = FP32": "{:.1%}",
            "TFLite = sim": "{:.1%}",
            "ONNX = sim": "{:.1%}",
            "FP32 MiB": "{:.1f}",
            "sim file / FP32": "{:.2f}",
            "TFLite MiB": "{:.1f}",
            "peak MiB": "{:.0f}",
        },
    )
    with tempfile.TemporaryDirectory(prefix="real_models_") as folder:
        for name in names:
            try:
                result = run_child(
                    "benchmarks.suites.real_models", name, size, count, folder
                )
                coverage.rows.append(result["row"])
            except Exception as error:
                message = " ".join(str(error).split()[-30:])[:200]
                coverage.rows.append(
                    [name, size] + [None] * 10 + [f"fails: {message}"]
                )
    coverage.notes += [
        "Random weights with batch norms re-estimated on the photos: the "
        "agreements measure fidelity, not accuracy.",
    ]
    return harness.Report(
        suite="real_models",
        tables=[coverage],
        settings={"size": size, "images": count},
        quick=quick,
    )


if __name__ == "__main__":
    _model_row(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
