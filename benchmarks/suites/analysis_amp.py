"""Suite ``analysis_amp``: mixed precision and float formats.

1. Automatic mixed precision. For the ResNet- and MobileNetV2-style nets
   (``tflite_int8`` config, batch norms folded, per-channel weights, 512
   calibration images): all-W8A8, all-W4A8 (nearest rounding), and
   :func:`~aimet_keras.ptq.choose_mixed_precision` with candidates
   ``(8, 8)``, ``(8, 6)`` and ``(8, 4)`` by weight memory, at an allowed
   drop of 0.2 and 1 point. Phase 1 scores on the first 1,000 images of
   the shipped test slice, phase 2 on all 2,000; every row's top-1 is
   then measured on the full 10,000-image test set. The Pareto plots go
   to ``artifacts/amp`` (``--update-results``:
   ``benchmarks/results/amp_<model>.png``).
2. Float formats at the same bits. Every reference net, and the ResNet with
   an outlier channel (:func:`aimet_keras.zoo.inject_outlier_channel`, x300
   on ``stage2_a_conv``'s first channel, folded into ``stage2_b_conv``:
   the same FP32 function), simulated with AIMET's default config in int8
   and in fp8 E4M3 and E5M2 (scales from the calibrated maximum), fp16
   and bf16, weights and activations alike.
"""

import pathlib
import shutil
import time

import numpy as np

from benchmarks import harness
from benchmarks.suites.analysis import OUTLIER_SCALE
from benchmarks.suites.analysis import outlier_resnet

__all__ = ["run"]

RESULTS_DIR = pathlib.Path("artifacts") / "amp"
QUICK = dict(test_images=1000, phase1=300, phase2=600)


AMP_CANDIDATES = [(8, 8), (8, 6), (8, 4)]
# AdaRound's steps per layer after AMP (the zoo's W4A8 recipe takes 2,000).
ADAROUND_ITERATIONS = 1000
# Allowed drops on the phase-2 images (2,000, so about 0.6 points of
# sampling error): 0.2 points leaves room for the full test set.
AMP_DROPS = (0.002, 0.01)
FLOAT_TYPES = ("int", "fp8_e4m3", "fp8_e5m2", "fp16", "bf16")


def run(quick=False, update_results=False):
    amp_table, settings = _amp(quick, update_results)
    float_table = _float_formats(quick)
    return harness.Report(
        suite="analysis_amp",
        tables=[amp_table, float_table],
        settings=settings,
        quick=quick,
    )


def _float_formats(quick):
    """int8 against the float formats at W and A, per reference net."""
    from aimet_keras import ptq
    from aimet_keras import zoo
    from aimet_keras.sim import QuantizationSimModel

    test, labels = zoo.load_fashion_mnist("test")
    if quick:
        test, labels = test[:1000], labels[:1000]
    calibration = zoo.load_fashion_mnist_slice("calibration")[0][:512]

    def top1(model):
        predictions = model.predict(test, batch_size=500, verbose=0)
        return float(np.mean(predictions.argmax(-1) == labels))

    cases = [
        (
            name,
            lambda name=name: ptq.fold_for_deployment(
                zoo.load_model(name, compile=False)
            ),
        )
        for name in zoo.MODEL_NAMES
    ] + [(f"resnet, outlier channel x{OUTLIER_SCALE:g}", outlier_resnet)]
    table = harness.Table(
        f"The same bits, integer or float: W8A8 int8 vs fp8 (and the 16-bit "
        f"casts), AIMET's default config, top-1 on {len(labels):,} test "
        "images",
        [
            "model",
            "FP32",
            *(_type_label(t) for t in FLOAT_TYPES),
            "fp8 E4M3 - int8 (pt)",
        ],
        formats={
            "FP32": "{:.2%}",
            **{_type_label(t): "{:.2%}" for t in FLOAT_TYPES},
            "fp8 E4M3 - int8 (pt)": "{:+.2f}",
        },
    )
    for name, build in cases:
        model = build()
        row = {"FP32": top1(model)}
        for data_type in FLOAT_TYPES:
            sim = QuantizationSimModel(model, default_data_type=data_type)
            sim.compute_encodings(calibration, verbose=0)
            row[_type_label(data_type)] = top1(sim.model)
        table.add_row(
            name,
            row["FP32"],
            *(row[_type_label(t)] for t in FLOAT_TYPES),
            100 * (row[_type_label("fp8_e4m3")] - row[_type_label("int")]),
        )
    table.notes.extend(
        [
            "Weights and activations take the column's type; AIMET's default "
            "config (per-tensor weights, biases in float32). The int8 "
            "column is the sim's usual W8A8 on the same config.",
            "fp8 scales: the calibrated largest magnitude (tf_enhanced "
            "range) over the format's largest value (448 for E4M3, 57344 "
            "for E5M2). The 16-bit formats are casts.",
            "The outlier row multiplies one channel of a ResNet activation "
            "by 300 and divides the next convolution's weights by 300: the "
            "float model computes the same function (its FP32 column), but "
            "a per-tensor int8 grid must stretch over the outlier.",
        ]
    )
    return table


def _adarounded(folded, result, data, folder):
    """A sim of ``folded`` at AMP's chosen weight bits, AdaRounded."""
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    overrides = [
        (layer, bits[1])
        for group, bits in result.chosen.items()
        for layer in result.groups[group]
    ]
    params = ptq.AdaroundParameters(
        data,
        num_batches=len(data) // 32,
        default_num_iterations=ADAROUND_ITERATIONS,
    )
    rounded = ptq.Adaround.apply_adaround(
        folded,
        params,
        folder,
        "amp_adaround",
        default_param_bw=8,
        config_file="tflite_int8",
        param_bw_override_list=overrides,
        verbose=False,
    )
    sim = QuantizationSimModel(rounded, config_file="tflite_int8")
    for layer, bits in overrides:
        ptq.set_precision(sim, layer, param=bits)
    sim.set_and_freeze_param_encodings(folder / "amp_adaround.encodings")
    return sim


def _type_label(data_type):
    return {
        "int": "int8",
        "fp8_e4m3": "fp8 E4M3",
        "fp8_e5m2": "fp8 E5M2",
        "fp16": "fp16",
        "bf16": "bf16",
    }[data_type]


def _amp(quick, update_results):
    from aimet_keras import ptq
    from aimet_keras import zoo
    from aimet_keras.sim import QuantizationSimModel

    sizes = QUICK if quick else {}
    test, test_labels = zoo.load_fashion_mnist("test")
    limit = sizes.get("test_images")
    test, test_labels = test[:limit], test_labels[:limit]
    tune, tune_labels = zoo.load_fashion_mnist_slice("test")
    calibration = zoo.load_fashion_mnist_slice("calibration")[0][:512]
    adaround_data = zoo.load_fashion_mnist_slice("calibration")[0]

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
        f"Automatic mixed precision, candidates A8W8, A8W6 and A8W4 by "
        f"weight memory, top-1 on {len(test_labels):,} test images",
        [
            "model",
            "setting",
            "weight bits vs all-W8",
            "top-1",
            "vs FP32 (pt)",
            "groups at W8 / W6 / W4",
            "AMP s",
            "AdaRound s",
        ],
        formats={
            "weight bits vs all-W8": "{:.3f}",
            "top-1": "{:.2%}",
            "vs FP32 (pt)": "{:+.2f}",
            "AMP s": "{:.0f}",
            "AdaRound s": "{:.0f}",
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

        table.add_row(name, "FP32", None, fp32, 0.0, None, None, None)
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
                None,
            )
        folder = RESULTS_DIR / name
        # A cache from an earlier run would hide phase 1's time.
        shutil.rmtree(folder, ignore_errors=True)
        for drop in AMP_DROPS:
            sim = calibrated(8)
            started = time.perf_counter()
            result = ptq.choose_mixed_precision(
                sim,
                AMP_CANDIDATES,
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
            counts = [
                sum(1 for bits in result.chosen.values() if bits[1] == w)
                for w in (8, 6, 4)
            ]
            table.add_row(
                name,
                f"AMP, allowed drop {100 * drop:.1f} pt",
                result.relative_cost,
                accuracy,
                100 * (accuracy - fp32),
                " / ".join(map(str, counts)),
                seconds,
                None,
            )
            if drop == AMP_DROPS[-1]:
                started = time.perf_counter()
                adarounded = _adarounded(folded, result, adaround_data, folder)
                adaround_seconds = time.perf_counter() - started
                adarounded.compute_encodings(calibration, verbose=0)
                accuracy = measure(adarounded.model)
                table.add_row(
                    name,
                    f"AMP, allowed drop {100 * drop:.1f} pt, then AdaRound",
                    result.relative_cost,
                    accuracy,
                    100 * (accuracy - fp32),
                    " / ".join(map(str, counts)),
                    seconds,
                    adaround_seconds,
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
            "The AMP time counts phase 1 (from scratch) only in the first "
            "run per model; the second reuses its cache.",
            "Then AdaRound: AMP picks the bits with nearest rounding; "
            "AdaRound (AIMET's param_bw_override_list, "
            f"{ADAROUND_ITERATIONS} steps per layer, the 1,000 shipped "
            "calibration images) then rounds each layer at its chosen "
            "bits, the activations calibrated again.",
        ]
    )
    return table, dict(
        calibration=len(calibration),
        phase1_images=sizes.get("phase1", 1000),
        phase2_images=sizes.get("phase2", 2000),
        test_images=len(test_labels),
    )
