"""Suite ``real_models_speed``: calibration and AdaRound at real size.

ResNet50 at 224x224, batch 32 (random weights; the time and memory do not
depend on them): ``compute_encodings`` with ``tf`` and ``tf_enhanced``
against the FP32 forward time over the same images, the peak memory of each
(each step in a process of its own) against FP32 inference, the sim's
``.keras`` file against the FP32 model's, and AdaRound W4A8's time per
layer.

``--quick``: ResNet50 at 96x96, 64 images, 5 AdaRound iterations.
"""

import json
import os
import sys
import tempfile
import time

from benchmarks import harness
from benchmarks.suites.real_models import peak_resident_mib
from benchmarks.suites.real_models import run_child
from benchmarks.suites.real_models import stock_model

__all__ = ["run"]

SIZE, QUICK_SIZE = 224, 96
BATCH = 32
# Calibration sets are hundreds of images (AIMET suggests 500-1000): the
# sim's one trace is then a small part of compute_encodings' time.
IMAGES, QUICK_IMAGES = 256, 64
ADAROUND_ITERATIONS, QUICK_ADAROUND_ITERATIONS = 20, 5


def _measure(task, size, batch, count, folder):
    """One measurement of the speed table, in a process of its own (run as
    ``python -m benchmarks.suites.real_models_speed TASK SIZE BATCH COUNT
    FOLDER``) so that its peak resident memory is its own."""
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
        # Arrays are calibrated in batches of 32, BATCH.
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
    result["peak_mib"] = peak_resident_mib()
    print("RESULT " + json.dumps(result))


def _child(task, size, batch, count, folder):
    return run_child(
        "benchmarks.suites.real_models_speed", task, size, batch, count, folder
    )


def _speed_table(size, count, iterations):
    table = harness.Table(
        f"ResNet50 at {size}x{size}, batch {BATCH}, {count} photo "
        f"crops (AdaRound: {2 * BATCH})",
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
        fp32 = _child("fp32", size, BATCH, count, folder)
        table.add_row(
            "FP32 forward", fp32["seconds"], 1.0, fp32["peak_mib"], 1.0, ""
        )
        for scheme, target in (("tf", 1.5), ("tf_enhanced", 3.0)):
            result = _child(f"calibrate:{scheme}", size, BATCH, count, folder)
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
        ada = _child(f"adaround:{iterations}", size, BATCH, count, folder)
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
        quick: ResNet50 at 96x96 over 64 images, 5 AdaRound iterations.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    size = QUICK_SIZE if quick else SIZE
    count = QUICK_IMAGES if quick else IMAGES
    iterations = QUICK_ADAROUND_ITERATIONS if quick else ADAROUND_ITERATIONS
    return harness.Report(
        suite="real_models_speed",
        tables=[_speed_table(size, count, iterations)],
        settings={
            "size": size,
            "batch": BATCH,
            "images": count,
            "adaround_iterations": iterations,
        },
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
