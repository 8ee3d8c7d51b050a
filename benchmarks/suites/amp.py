"""Suite ``amp``: automatic mixed precision on the reference CNNs.

For the ResNet- and MobileNetV2-style nets (``tflite_int8`` config, batch
norms folded, per-channel weights, 512 calibration images):
all-W8A8, all-W4A8 (nearest rounding), and
:func:`~aimet_keras.ptq.choose_mixed_precision` with candidates
``(8, 8)`` and ``(8, 4)`` by weight memory, at an allowed drop of 0.3 and 1
point. Phase 1 scores on the first 1,000 images of the shipped test slice,
phase 2 on all 2,000; every row's top-1 is then measured on the full
10,000-image test set. The Pareto plots go to ``artifacts/amp``
(``--update-results``: ``benchmarks/results/amp_<model>.png``).
"""

import pathlib
import shutil
import time

import numpy as np

from benchmarks import harness

__all__ = ["run"]

RESULTS_DIR = pathlib.Path("artifacts") / "amp"
QUICK = dict(test_images=1000, phase1=300, phase2=600)


def run(quick=False, update_results=False):
    from aimet_keras import ptq
    from aimet_keras import zoo
    from aimet_keras.sim import QuantizationSimModel

    sizes = QUICK if quick else {}
    test, test_labels = zoo.load_fashion_mnist("test")
    limit = sizes.get("test_images")
    test, test_labels = test[:limit], test_labels[:limit]
    tune, tune_labels = zoo.load_fashion_mnist_slice("test")
    calibration = zoo.load_fashion_mnist_slice("calibration")[0][:512]

    def top1(images, labels):
        def score(model):
            predictions = np.concatenate(
                [
                    np.asarray(model(images[i : i + 500], training=False))
                    for i in range(0, len(images), 500)
                ]
            )
            return float(np.mean(predictions.argmax(-1) == labels))

        return score

    phase1 = top1(
        tune[: sizes.get("phase1", 1000)],
        tune_labels[: sizes.get("phase1", 1000)],
    )
    phase2 = top1(
        tune[: sizes.get("phase2", 2000)],
        tune_labels[: sizes.get("phase2", 2000)],
    )
    measure = top1(test, test_labels)
    table = harness.Table(
        f"Automatic mixed precision, candidates A8W8 and A8W4 by weight "
        f"memory, top-1 on {len(test_labels):,} test images",
        [
            "model",
            "setting",
            "weight bits vs all-W8",
            "top-1",
            "vs FP32 (pt)",
            "groups at W4",
            "AMP s",
        ],
        formats={
            "weight bits vs all-W8": "{:.3f}",
            "top-1": "{:.2%}",
            "vs FP32 (pt)": "{:+.2f}",
            "AMP s": "{:.0f}",
        },
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("resnet", "mobilenet_v2"):
        folded = ptq.fold_for_deployment(zoo.load_model(name, compile=False))
        fp32 = measure(folded)

        def calibrated(bits, folded=folded):
            sim = QuantizationSimModel(
                folded, config_file="tflite_int8", default_param_bw=bits
            )
            sim.compute_encodings(calibration, verbose=0)
            return sim

        table.add_row(name, "FP32", None, fp32, 0.0, None, None)
        for bits in (8, 4):
            accuracy = measure(calibrated(bits).model)
            table.add_row(
                name,
                f"all W{bits}A8",
                bits / 8,
                accuracy,
                100 * (accuracy - fp32),
                None,
                None,
            )
        for drop in (0.003, 0.01):
            sim = calibrated(8)
            folder = RESULTS_DIR / name
            started = time.perf_counter()
            result = ptq.choose_mixed_precision(
                sim,
                [(8, 8), (8, 4)],
                phase1,
                phase2,
                allowed_accuracy_drop=drop,
                cost_metric="memory",
                results_dir=folder,
                # Phase 1 is the same at both drops: the second run reuses it.
                clean_start=False,
                verbose=0,
            )
            seconds = time.perf_counter() - started
            accuracy = measure(sim.model)
            low = sum(1 for bits in result.chosen.values() if bits[1] == 4)
            table.add_row(
                name,
                f"AMP, allowed drop {100 * drop:.1f} pt",
                result.relative_cost,
                accuracy,
                100 * (accuracy - fp32),
                f"{low} of {len(result.chosen)}",
                seconds,
            )
            plot = result.files.get("pareto_plot")
            if plot and update_results and not quick and drop == 0.01:
                shutil.copy(plot, harness.RESULTS_DIR / f"amp_{name}.png")
    table.notes.extend(
        [
            "Weight bits vs all-W8: the chosen configuration's weight memory "
            "(weights x bits) over all-W8's.",
            "Phase 1 and 2 score on the shipped test slice; the top-1 "
            "column is the full test set, which AMP did not see.",
            "The AMP time counts phase 1 only in the first run per model "
            "(the second reuses its cache).",
        ]
    )
    return harness.Report(
        suite="amp",
        tables=[table],
        settings=dict(
            calibration=len(calibration),
            phase1_images=sizes.get("phase1", 1000),
            phase2_images=sizes.get("phase2", 2000),
            test_images=len(test_labels),
        ),
        quick=quick,
    )
