"""Suite ``onnx_cpus``: the QDQ ONNX export on CPUs with other integer kernels.

Each reference model is BN-folded, simulated with the ``tflite_int8``
config (W8 per-channel symmetric, A8 asymmetric), calibrated on the shipped
1,000 calibration images and exported twice with
:func:`aimet_keras.export.onnx.export_onnx`: symmetric kernels as uint8 at
zero point 128 (the default) and as int8 at zero point 0. The same values;
onnxruntime runs the first on its uint8 x uint8 kernels and the second on
its uint8 x int8 kernels.

1. Agreement: top-1 of each file at onnxruntime's default session options
   and with its graph optimizations off (the QDQ ops run one by one in
   float, which is the sim's arithmetic), natively on the full test set and
   on x86 CPUs emulated by qemu-user (AVX2 without VNNI, SSE4.2) on the
   first images, against the sim's top-1. Target: the default export agrees
   with the sim on at least 99.5% everywhere.
2. Latency: onnxruntime at default options, 2 threads, batch 1 and 32, the
   two files interleaved (native CPU only), and the FP32 ONNX model.
"""

import tempfile

import numpy as np

from benchmarks import emulation
from benchmarks import harness

__all__ = ["run"]

NETS = ("resnet", "mobilenet_v2", "transformer")
QUICK_NETS = ("resnet",)
EMULATED_IMAGES = 2000
QUICK_IMAGES = 500
REPEATS = 21
QUICK_REPEATS = 5
WEIGHT_DTYPES = ("uint8", "int8")


def _session(path, optimized=True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if not optimized:
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
    return ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )


def _predict(session, images, batch_size=500):
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run(None, {name: images[i : i + batch_size]})[0]
            for i in range(0, len(images), batch_size)
        ]
    )


def _sim_and_exports(name, folder):
    from aimet_keras import ptq
    from aimet_keras import zoo
    from aimet_keras.export.onnx import export_onnx
    from aimet_keras.sim import QuantizationSimModel

    model = harness.load_reference_model(name)
    if model is None:
        return None
    folded, _ = ptq.fold_all_batch_norms(model)
    sim = QuantizationSimModel(folded, config_file="tflite_int8")
    sim.compute_encodings(zoo.load_fashion_mnist_slice("calibration")[0])
    exports = {
        dtype: export_onnx(
            sim, f"{folder}/{name}_{dtype}.onnx", weight_dtype=dtype
        )
        for dtype in WEIGHT_DTYPES
    }
    return sim, exports


def _agreement_rows(name, sim, exports, images, labels, emulated, folder):
    sim_top1 = sim.model.predict(images, batch_size=500, verbose=0).argmax(1)
    rows = []
    for dtype, exported in exports.items():
        runs = {
            "native, default options": _predict(
                _session(exported.qdq_path), images
            ),
            "native, optimizations off": _predict(
                _session(exported.qdq_path, optimized=False), images
            ),
        }
        for cpu in emulation.EMULATED_CPUS if emulation.can_emulate() else ():
            runs[f"{cpu} (qemu), default options"] = (
                emulation.run_onnx_emulated(
                    exported.qdq_path, images[:emulated], cpu, folder
                )
            )
        for where, outputs in runs.items():
            count = len(outputs)
            top1 = outputs.argmax(1)
            agree = float(np.mean(top1 == sim_top1[:count]))
            rows.append(
                [
                    name,
                    dtype,
                    where,
                    count,
                    float(np.mean(top1 == labels[:count])),
                    float(np.mean(sim_top1[:count] == labels[:count])),
                    agree,
                    "pass" if agree >= 0.995 else "fail",
                ]
            )
    return rows


def _latency_rows(name, exports, images, repeats):
    rows = []
    for batch in (1, 32):
        batch_images = images[:batch]
        sessions = {
            "fp32": _session(exports["uint8"].fp32_path),
            **{
                dtype: _session(exported.qdq_path)
                for dtype, exported in exports.items()
            },
        }
        feeds = {
            key: {s.get_inputs()[0].name: batch_images}
            for key, s in sessions.items()
        }
        times = harness.time_interleaved(
            {
                key: (lambda s=s, f=feeds[key]: s.run(None, f))
                for key, s in sessions.items()
            },
            repeats=repeats,
        )
        medians = {key: float(np.median(t)) * 1e3 for key, t in times.items()}
        rows.append(
            [
                name,
                batch,
                medians["fp32"],
                medians["uint8"],
                medians["int8"],
                harness.ratio(medians["uint8"], medians["int8"]),
            ]
        )
    return rows


def run(quick=False):
    """Runs the suite.

    Args:
        quick: the ResNet only, 500 images, fewer timing rounds.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    from aimet_keras import zoo

    images, labels = zoo.load_fashion_mnist("test")
    emulated = QUICK_IMAGES if quick else EMULATED_IMAGES
    if quick:
        images, labels = images[:QUICK_IMAGES], labels[:QUICK_IMAGES]
    nets = QUICK_NETS if quick else NETS
    repeats = QUICK_REPEATS if quick else REPEATS
    agreement = harness.Table(
        "Top-1 agreement with the sim (W8A8, tflite_int8)",
        [
            "model",
            "kernels",
            "run",
            "images",
            "top-1",
            "sim top-1",
            "= sim",
            ">= 99.5%",
        ],
        formats={
            "top-1": "{:.2%}",
            "sim top-1": "{:.2%}",
            "= sim": "{:.2%}",
        },
    )
    latency = harness.Table(
        "onnxruntime latency, 2 threads, default options (ms, median)",
        ["model", "batch", "FP32", "uint8 kernels", "int8 kernels", "u8 / s8"],
        formats={
            "FP32": "{:.2f}",
            "uint8 kernels": "{:.2f}",
            "int8 kernels": "{:.2f}",
            "u8 / s8": "{:.3f}",
        },
    )
    with tempfile.TemporaryDirectory(prefix="onnx_cpus_") as folder:
        for name in nets:
            built = _sim_and_exports(name, folder)
            if built is None:
                continue
            sim, exports = built
            agreement.rows += _agreement_rows(
                name, sim, exports, images, labels, emulated, folder
            )
            latency.rows += _latency_rows(name, exports, images, repeats)
    if not emulation.can_emulate():
        agreement.notes.append(
            "qemu-x86_64 is not installed: no emulated CPUs (apt-get install "
            "qemu-user)."
        )
    agreement.notes.append(
        "Emulated runs use the first images of the test set; native runs "
        "all of them. 'optimizations off' runs each QDQ op in float, the "
        "sim's arithmetic."
    )
    return harness.Report(
        suite="onnx_cpus",
        tables=[agreement, latency],
        settings={
            "nets": list(nets),
            "test_images": int(len(images)),
            "emulated_images": emulated,
            "emulated_cpus": emulation.EMULATED_CPUS,
            "repeats": repeats,
        },
        quick=quick,
    )
