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
2. Speed and memory at real size: ResNet50 at 224x224, batch 32:
   ``compute_encodings`` with ``tf`` and ``tf_enhanced`` against the FP32
   forward time over the same images, peak memory of each (own process)
   against FP32 inference, the sim's ``.keras`` file against the FP32
   model's, and AdaRound W4A8's time per layer.

``--quick`` runs three architectures at 64x64 and ResNet50 at 96x96.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import harness

__all__ = ["run", "run_child", "stock_model"]

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
SPEED_SIZE, QUICK_SPEED_SIZE = 224, 96
SPEED_BATCH = 32
# Calibration sets are hundreds of images (AIMET suggests 500-1000): the
# sim's one trace is then a small part of compute_encodings' time.
SPEED_IMAGES, QUICK_SPEED_IMAGES = 256, 64
ADAROUND_ITERATIONS, QUICK_ADAROUND_ITERATIONS = 20, 5
# TFLite has no integer LayerNormalization (ConvNeXt's).
NO_TFLITE = ("ConvNeXtTiny",)


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

    model = graph.split_activations(model)
    model = graph.split_separable_convolutions(model)
    return graph.depthwise_from_grouped(model)


def _top1(outputs):
    return np.argmax(outputs, axis=-1)


def _tflite_outputs(path, images):
    from aimet_keras.export.tflite import load_interpreter

    interpreter = load_interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    (inp,), (out,) = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )
    results = []
    for image in images:
        batch = image[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            batch = np.clip(np.round(batch / scale + zero), -128, 127)
            batch = batch.astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        value = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            value = (value.astype(np.float32) - zero) * scale
        results.append(value[0])
    return np.stack(results)


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


def _model_row(name, size, images, folder):
    import keras

    from aimet_keras import export_onnx
    from aimet_keras import export_tflite
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    keras.utils.set_random_seed(0)
    model = stock_model(name, size)
    if name == "Xception":
        images = _resized(images, 71) if size < 71 else images
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

    tflite_agreement, tflite_mib, converter_agreement = None, None, None
    if name not in NO_TFLITE:
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
    return [
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
    ]


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


def _peak_resident_mib():
    # VmHWM: this process's own peak (getrusage's maxrss keeps the parent's
    # across exec).
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def _measure(task, size, batch, count, folder):
    """One measurement of the speed table, in a process of its own (run as
    ``python -m benchmarks.suites.real_models TASK SIZE BATCH FOLDER``) so
    that its peak resident memory is its own."""
    import keras

    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel
    from benchmarks.photos import photo_crops

    images = photo_crops(count, size)
    keras.utils.set_random_seed(0)
    model = stock_model("ResNet50", size)
    result = {}
    if task == "fp32":
        model.predict(images[:batch], batch_size=batch, verbose=0)  # traced
        start = time.perf_counter()
        model.predict(images, batch_size=batch, verbose=0)
        result["seconds"] = time.perf_counter() - start
        model.save(os.path.join(folder, "fp32.keras"))
    elif task.startswith("calibrate:"):
        folded, _ = ptq.fold_all_batch_norms(model)
        scheme = task.split(":")[1]
        sim = QuantizationSimModel(folded, quant_scheme=scheme)
        start = time.perf_counter()
        # Arrays are calibrated in batches of 32, SPEED_BATCH.
        sim.compute_encodings(images)
        result["seconds"] = time.perf_counter() - start
        sim.model.save(os.path.join(folder, "sim.keras"))
    elif task.startswith("adaround:"):
        folded, _ = ptq.fold_all_batch_norms(model)
        params = ptq.AdaroundParameters(
            images[: 2 * batch],
            num_batches=2,
            batch_size=batch,
            default_num_iterations=int(task.split(":")[1]),
        )
        start = time.perf_counter()
        ptq.Adaround.apply_adaround(
            folded,
            params,
            folder,
            "resnet50",
            default_param_bw=4,
            verbose=False,
        )
        result["seconds"] = time.perf_counter() - start
        result["layers"] = sum(
            1
            for layer in folded.layers
            if type(layer).__name__ in ("Conv2D", "Dense")
        )
    result["peak_mib"] = _peak_resident_mib()
    print("RESULT " + json.dumps(result))


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


def _child(task, size, batch, count, folder):
    return run_child(
        "benchmarks.suites.real_models", task, size, batch, count, folder
    )


def _speed_table(size, count, iterations):
    table = harness.Table(
        f"ResNet50 at {size}x{size}, batch {SPEED_BATCH}, {count} photo "
        f"crops (AdaRound: {2 * SPEED_BATCH})",
        [
            "step",
            "seconds",
            "x FP32 forward",
            "peak MiB",
            "x FP32 peak",
            "target",
        ],
        formats={
            "seconds": "{:.1f}",
            "x FP32 forward": "{:.2f}",
            "peak MiB": "{:.0f}",
            "x FP32 peak": "{:.2f}",
        },
    )
    with tempfile.TemporaryDirectory(prefix="real_models_") as folder:
        fp32 = _child("fp32", size, SPEED_BATCH, count, folder)
        table.add_row(
            "FP32 forward", fp32["seconds"], 1.0, fp32["peak_mib"], 1.0, ""
        )
        for scheme, target in (("tf", 1.5), ("tf_enhanced", 3.0)):
            result = _child(
                f"calibrate:{scheme}", size, SPEED_BATCH, count, folder
            )
            table.add_row(
                f"compute_encodings {scheme}",
                result["seconds"],
                result["seconds"] / fp32["seconds"],
                result["peak_mib"],
                result["peak_mib"] / fp32["peak_mib"],
                f"<= {target}x time, <= 2x memory",
            )
        fp32_size = os.path.getsize(os.path.join(folder, "fp32.keras"))
        sim_size = os.path.getsize(os.path.join(folder, "sim.keras"))
        table.notes.append(
            f"The sim's .keras file: {sim_size / 2**20:.1f} MiB, "
            f"{sim_size / fp32_size:.2f}x the FP32 model's "
            f"{fp32_size / 2**20:.1f} MiB (target <= 1.2x)."
        )
        ada = _child(f"adaround:{iterations}", size, SPEED_BATCH, count, folder)
        table.add_row(
            f"AdaRound W4A8, {iterations} iterations",
            ada["seconds"],
            ada["seconds"] / fp32["seconds"],
            ada["peak_mib"],
            ada["peak_mib"] / fp32["peak_mib"],
            f"{ada['seconds'] / ada['layers']:.1f} s per layer "
            f"({ada['layers']} layers)",
        )
    return table


def run(quick=False):
    """Runs the suite.

    Args:
        quick: three architectures at 64x64, ResNet50's speed at 96x96.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    from benchmarks.photos import photo_crops

    size = QUICK_SIZE if quick else SIZE
    count = QUICK_IMAGES if quick else IMAGES
    names = QUICK_ARCHITECTURES if quick else ARCHITECTURES
    images = photo_crops(count, size)
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
        },
    )
    with tempfile.TemporaryDirectory(prefix="real_models_") as folder:
        for name in names:
            try:
                coverage.rows.append(_model_row(name, size, images, folder))
            except Exception as error:
                message = " ".join(str(error).split())[:160]
                coverage.rows.append(
                    [name, size, None, None, None, None, None, None, None]
                    + [None, None, f"fails: {type(error).__name__}: {message}"]
                )
    coverage.notes += [
        "Random weights with batch norms re-estimated on the photos: the "
        "agreements measure fidelity, not accuracy.",
        "ConvNeXt: TFLite has no integer LayerNormalization; ONNX only.",
    ]
    speed = _speed_table(
        QUICK_SPEED_SIZE if quick else SPEED_SIZE,
        QUICK_SPEED_IMAGES if quick else SPEED_IMAGES,
        QUICK_ADAROUND_ITERATIONS if quick else ADAROUND_ITERATIONS,
    )
    return harness.Report(
        suite="real_models",
        tables=[coverage, speed],
        settings={"size": size, "images": count},
        quick=quick,
    )


if __name__ == "__main__":
    _measure(
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
        sys.argv[5],
    )
