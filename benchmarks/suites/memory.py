"""Suite ``memory``: peak memory of quantizing against FP32 inference.

Each step runs in a fresh Python process, whose peak resident memory
(``VmHWM``, TensorFlow and the model included) is the number reported,
and the ratio to the FP32 inference process of the same model and data.

Models: ``keras.applications.ResNet50`` at 224x224 (``weights=None``) and
all-MiniLM-L6-v2 (the keras-hub BertBackbone of the local preset) on
sequences of 128 tokens. The data are generated batch by batch by a
``tf.data`` pipeline (random images; random token ids, all unmasked), so no
step holds the whole set unless the step itself materialises it.

Steps:

- FP32 inference: ``model.predict`` over the data.
- Calibration at two data sizes: ``QuantizationSimModel`` plus
  ``compute_encodings``; calibration streams, so more data should cost no
  more memory.
- Sim inference: calibration, then ``sim.model.predict`` over the data.
- AdaRound (ResNet50 only; it takes single-input models), one iteration a
  layer (its memory does not depend on the count): its caches of each
  layer's inputs and targets in memory (``cache_limit_bytes=None``) and
  limited to 16 MiB an array, the rest in memory-mapped files, on 32
  samples (AdaRound's time grows with the square of the depth).

A third model shows what the caches' limit bounds: at 32 samples
ResNet50's caches are about 100 MB an array, small beside what AdaRound's
per-layer sub-models and traces take, so its two AdaRound rows are the same.
Three 3x3 convolutions of 64 channels at 224x224 on 256 samples make
3.3 GB arrays (each layer's inputs and targets): FP32 inference and
AdaRound in memory against AdaRound with the 16 MiB limit.

``--only resnet50|minilm|wide``: one model (written as ``memory-<name>``).
``--quick``: ResNet50 at 96x96, fewer samples; the wide net at 64 samples.
"""

import json
import sys
import tempfile
import time

from benchmarks import harness
from benchmarks.suites import real_models

__all__ = ["run"]

SPILL_LIMIT = 16 << 20
ADAROUND_SAMPLES = 32
BATCH = 32
STEPS = (
    ("fp32", "FP32 inference"),
    ("calibrate", "calibration"),
    ("calibrate_more", "calibration, 4x the data"),
    ("sim", "calibration, then sim inference"),
    ("adaround_memory", "AdaRound, caches in memory"),
    ("adaround_spill", "AdaRound, caches limited to 16 MiB"),
)


def _resnet50(size):
    import keras

    return keras.applications.ResNet50(
        weights=None, input_shape=(size, size, 3)
    )


def _wide(size):
    """Three 3x3 convolutions of 64 channels: large activations, few
    layers."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = inputs
    for index in range(3):
        x = keras.layers.Conv2D(
            64, 3, padding="same", activation="relu", name=f"conv{index}"
        )(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="wide")


def _images(count, size):
    import tensorflow as tf

    def image(index):
        return tf.random.stateless_uniform(
            (size, size, 3), seed=tf.stack([index, 0])
        )

    return tf.data.Dataset.range(count).map(image).batch(BATCH)


def _minilm():
    from tests.models import test_keras_hub as hub

    backbone, _, _, _ = hub.load_minilm()
    return backbone


def _tokens(count, length=128, vocabulary=30522):
    import tensorflow as tf

    def sentence(index):
        ids = tf.random.stateless_uniform(
            (length,),
            seed=tf.stack([index, 1]),
            maxval=vocabulary,
            dtype=tf.int32,
        )
        return {
            "token_ids": ids,
            "segment_ids": tf.zeros((length,), tf.int32),
            "padding_mask": tf.ones((length,), tf.int32),
        }

    return tf.data.Dataset.range(count).map(sentence).batch(BATCH)


def _measure(model_name, step, samples, size):
    """Runs one step in this process; returns its result as a dict."""
    import numpy as np

    from aimet_keras.ptq import Adaround
    from aimet_keras.ptq import AdaroundParameters
    from aimet_keras.sim import QuantizationSimModel

    if model_name in ("resnet50", "wide"):
        model = (_resnet50 if model_name == "resnet50" else _wide)(size)
        data = _images(samples, size)
    else:
        model = _minilm()
        data = _tokens(samples)
    anonymous = _AnonymousPeak()
    started = time.perf_counter()
    if step == "fp32":
        outputs = model.predict(data, verbose=0)
    elif step in ("calibrate", "calibrate_more", "sim"):
        sim = QuantizationSimModel(model)
        sim.compute_encodings(data)
        if step == "sim":
            outputs = sim.model.predict(data, verbose=0)
    else:
        limit = None if step == "adaround_memory" else SPILL_LIMIT
        params = AdaroundParameters(
            data,
            num_batches=samples // BATCH,
            default_num_iterations=1,
            cache_limit_bytes=limit,
        )
        with tempfile.TemporaryDirectory() as folder:
            Adaround.apply_adaround(model, params, folder, "m", verbose=False)
    seconds = time.perf_counter() - started
    if step in ("fp32", "sim"):
        first = outputs if isinstance(outputs, np.ndarray) else None
        if first is not None and not np.isfinite(first).all():
            raise RuntimeError(f"{model_name} {step}: non-finite outputs")
    return {
        "peak_mib": real_models.peak_resident_mib(),
        "peak_anonymous_mib": anonymous.stop(),
        "seconds": seconds,
    }


class _AnonymousPeak:
    """The peak of this process's anonymous resident memory, sampled.

    VmHWM counts the pages of memory-mapped files too, which the kernel
    can drop and read back; AdaRound's spilled caches are such pages. The
    anonymous part (RssAnon) is the memory that must stay.
    """

    def __init__(self, interval=0.02):
        import threading

        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._sample, args=(interval,), daemon=True
        )
        self._thread.start()

    def _sample(self, interval):
        while not self._done.wait(interval):
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        kib = int(line.split()[1])
                        self.peak = max(self.peak, kib)

    def stop(self):
        """Stops sampling; returns the peak in MiB."""
        self._done.set()
        self._thread.join()
        return self.peak / 1024


WIDE_STEPS = ("fp32", "adaround_memory", "adaround_spill")


def run(quick=False, names=("resnet50", "minilm", "wide")):
    """Runs the suite.

    Args:
        quick: ResNet50 at 96x96, 32 samples (128 calibrating "more").

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    from benchmarks.suites import minilm

    size = 96 if quick else 224
    samples = 32 if quick else 128
    report = harness.Report(
        "memory",
        quick=quick,
        settings={
            "resnet50_input": f"{size}x{size}",
            "samples": samples,
            "adaround_samples": ADAROUND_SAMPLES,
            "batch": BATCH,
            "minilm_tokens": 128,
            "spill_limit_mib": SPILL_LIMIT >> 20,
        },
    )
    wide_samples = 64 if quick else 256
    report.settings["wide_samples"] = wide_samples
    models = []
    if "resnet50" in names:
        models.append(("resnet50", f"ResNet50 {size}x{size}"))
    if "minilm" in names and (
        minilm.load_or_report_missing(report, "MiniLM") is not None
    ):
        models.append(("minilm", "MiniLM (all-MiniLM-L6-v2), 128 tokens"))
    if "wide" in names:
        models.append(("wide", "3 convs x 64 channels, 224x224"))
    table = harness.Table(
        "Peak resident memory of each step, against FP32 inference",
        [
            "model",
            "step",
            "samples",
            "peak GiB",
            "x FP32 inference",
            "anonymous peak GiB",
            "s",
        ],
        formats={
            "peak GiB": "{:.2f}",
            "x FP32 inference": "{:.2f}",
            "anonymous peak GiB": "{:.2f}",
            "s": "{:.0f}",
        },
    )
    for model_name, title in models:
        baseline = None
        for step, description in STEPS:
            if model_name == "minilm" and step.startswith("adaround"):
                continue
            if model_name == "wide" and step not in WIDE_STEPS:
                continue
            count = {
                "calibrate_more": samples * 4,
                "adaround_memory": ADAROUND_SAMPLES,
                "adaround_spill": ADAROUND_SAMPLES,
            }.get(step, samples)
            if model_name == "wide":
                count = wide_samples
            result = real_models.run_child(
                "benchmarks.suites.memory",
                model_name,
                step,
                count,
                224 if model_name == "wide" else size,
            )
            peak = result["peak_mib"] / 1024
            baseline = baseline or peak
            table.add_row(
                title,
                description,
                count,
                peak,
                peak / baseline,
                result["peak_anonymous_mib"] / 1024,
                result["seconds"],
            )
            report.extra[f"{model_name}/{step}"] = result
            print(table.rows[-1], flush=True)
    table.notes.append(
        "Peak resident memory of a fresh process that imports TensorFlow, "
        "builds the model and runs the step (VmHWM); the anonymous peak "
        "(RssAnon, sampled every 20 ms) leaves out the pages of memory-"
        "mapped files, which the kernel can drop, as spilled caches are. "
        "Calibration streams: "
        "4x the data costs no more than 0.15 GiB more. AdaRound runs one "
        "iteration a layer (its memory does not depend on the count); on "
        "ResNet50 at 32 samples its caches (about 100 MB an array) are not "
        "what sets its peak, so limiting them changes nothing there, while "
        "the wide net's 3.3 GB arrays show what the limit bounds. MiniLM "
        "has no AdaRound rows: AdaRound takes single-input models."
    )
    report.tables.append(table)
    return report


if __name__ == "__main__":
    name, step_name, count, input_size = sys.argv[1:5]
    print(
        "RESULT "
        + json.dumps(_measure(name, step_name, int(count), int(input_size))),
        flush=True,
    )
