"""Suite ``compression_real``: compression on stock architectures at 224x224.

Time depends on shapes, not on trained values: keras.applications ResNet50,
VGG16 and MobileNetV2 are built with ``weights=None`` (no download) at
224x224 and compressed with the greedy per-layer search, scoring each
candidate by how closely it follows the untrained original's logits on
real photo crops (``benchmarks/photos.py``); the reconstructions sample
the same crops. Each compressed model is rebuilt, converted to FP32 TFLite
(its output checked against Keras) and timed against the original,
interleaved: TFLite at batch 1 and 32 on 2 threads, and ``model.predict``.

Rows (``METHODS``): channel pruning to half the MACs (every model);
spatial SVD (AIMET's 0.75) then channel pruning to half the MACs (ResNet50
and VGG16: MobileNetV2's kxk layers are depthwise); weight SVD alone
(ResNet50's 1x1 layers); and channel pruning by measured time
(``cost_metric="latency"``, batch 1) to half the original's TFLite time,
landing by timing the whole model (ResNet50, MobileNetV2).

``python -m benchmarks run --suite compression_real --only MobileNetV2``
runs one architecture and writes ``compression_real-MobileNetV2.md``
beside the whole suite's results.
"""

import contextlib
import io
import os
import statistics
import tempfile
import time

import numpy as np

from benchmarks import harness
from benchmarks import photos

__all__ = ["run"]

SIZE = 224
TARGET = 0.5
SVD_RATIO = 0.75
WEIGHT_SVD_RATIO = 0.8
CANDIDATES = 4  # candidate ratios k/4: a stock model scores 3 per layer
NUM_EVAL = 4  # photo crops scoring each candidate
NUM_CALIBRATION = 32  # crops the reconstructions sample, 10 positions each
RECONSTRUCTION_SAMPLES = 320
THREADS = 2
TIMING_BATCHES = (1, 32)
PREDICT_IMAGES = 64
REPEATS = {1: 21, 32: 5}
PREDICT_REPEATS = 5
LATENCY_BATCH = 1
TFLITE_TOLERANCE = 1e-3  # largest |TFLite - Keras| logit, relative

ARCHITECTURES = ("ResNet50", "MobileNetV2", "VGG16")
# What each architecture is compressed with (weight SVD factorises 1x1
# layers, spatial SVD kxk ones: MobileNetV2's kxk layers are depthwise).
METHODS = {
    "ResNet50": ("cp", "svd_cp", "weight_svd", "cp_latency"),
    "MobileNetV2": ("cp", "cp_latency"),
    "VGG16": ("cp", "svd_cp"),
}
LABELS = {
    "cp": f"channel pruning to {TARGET} of the MACs",
    "svd_cp": (
        f"spatial SVD ({SVD_RATIO}) + channel pruning to {TARGET} of the MACs"
    ),
    "weight_svd": f"weight SVD to {WEIGHT_SVD_RATIO} of the MACs",
    "cp_latency": (
        f"channel pruning to {TARGET} of the TFLite time (batch "
        f"{LATENCY_BATCH}, measured)"
    ),
}
QUICK = dict(size=32, architectures=("ResNet50",), candidates=2)


def _build(name, size):
    import keras

    keras.utils.set_random_seed(0)
    builder = getattr(keras.applications, name)
    # Logits: a random network's softmax is flat, its logits are not.
    return builder(
        weights=None,
        input_shape=(size, size, 3),
        classes=1000,
        classifier_activation=None,
    )


def _fidelity(reference_model, images):
    """``eval_callback``: minus the candidate's logit error relative to the
    original's logit variance (0 is a perfect copy)."""
    reference = reference_model.predict(images, verbose=0)
    scale = float(np.var(reference)) or 1.0

    def evaluate(model, iterations):
        # Called eagerly: predict would trace every candidate model anew.
        out = np.asarray(model(images, training=False))
        return -float(np.mean((out - reference) ** 2)) / scale

    return evaluate


def _macs(model):
    from aimet_keras import compress

    return compress.model_cost(model).macs


def _compress(model, scheme, ratio, evaluate, data, candidates, **options):
    from aimet_keras import compress

    return compress.compress_model(
        model,
        evaluate,
        None,
        ratio,
        scheme=scheme,
        num_comp_ratio_candidates=candidates,
        data=data,
        num_reconstruction_samples=RECONSTRUCTION_SAMPLES,
        verbose=0,
        **options,
    )


def _method(name, original, evaluate, data, candidates, folder):
    """``(model, {what: value})`` for one row."""
    from aimet_keras import compress

    info = {}
    start = time.perf_counter()
    if name == "cp":
        model, stats = _compress(
            original, "channel_pruning", TARGET, evaluate, data, candidates
        )
    elif name == "weight_svd":
        model, stats = _compress(
            original, "weight_svd", WEIGHT_SVD_RATIO, evaluate, data, candidates
        )
    elif name == "svd_cp":
        svd, svd_stats = _compress(
            original, "spatial_svd", SVD_RATIO, evaluate, data, candidates
        )
        info["svd_ratio"] = svd_stats.achieved_comp_ratio
        model, stats = _compress(
            svd,
            "channel_pruning",
            TARGET * _macs(original) / _macs(svd),
            evaluate,
            data,
            candidates,
        )
    else:  # cp_latency
        table = compress.LatencyTable(
            batch_size=LATENCY_BATCH,
            num_threads=THREADS,
            path=os.path.join(folder, f"latency_{original.name}.json"),
        )
        model, stats = _compress(
            original,
            "channel_pruning",
            TARGET,
            evaluate,
            data,
            candidates,
            cost_metric="latency",
            latency_table=table,
        )
        info["latency_rounds"] = [list(r) for r in stats.latency_rounds]
        info["shapes_timed"] = table.measured
    info["seconds"] = time.perf_counter() - start
    info["score"] = evaluate(model, None)
    info["baseline_score"] = stats.baseline_score
    info["achieved"] = stats.achieved_comp_ratio
    return model, info


def _interpreter(model, batch):
    """FP32 TFLite of ``model`` at ``batch``, checked against Keras."""
    import tensorflow as tf

    from aimet_keras.export import tflite as tflite_lib

    with contextlib.redirect_stdout(io.StringIO()):
        content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = tflite_lib.load_interpreter(
        model_content=content, num_threads=THREADS
    )
    detail = interpreter.get_input_details()[0]
    shape = [batch, *detail["shape"][1:]]
    interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    sample = photos.photo_crops(batch, shape[1], seed=7) / 127.5 - 1
    interpreter.set_tensor(detail["index"], sample.astype(np.float32))
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = np.asarray(model(sample.astype(np.float32), training=False))
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= TFLITE_TOLERANCE * max(1.0, np.abs(expected).max()):
        raise RuntimeError(
            f"TFLite of {model.name!r} differs from Keras by {difference}; "
            "not timing it."
        )
    return interpreter, len(content)


def _median_ms(samples):
    return {n: 1000 * statistics.median(t) for n, t in samples.items()}


def _time(models, size, quick):
    """Median ms per runtime of each ``{name: model}``, interleaved."""
    times, sizes = {}, {}
    for batch in TIMING_BATCHES:
        runners = {}
        for name, model in models.items():
            interpreter, sizes[name] = _interpreter(model, batch)
            runners[name] = interpreter.invoke
        repeats = 5 if quick else REPEATS[batch]
        times[f"TFLite batch {batch}"] = _median_ms(
            harness.time_interleaved(runners, repeats=repeats, warmup=2)
        )
        del runners
    images = (
        photos.photo_crops(PREDICT_IMAGES, size, seed=3) / 127.5 - 1
    ).astype(np.float32)
    predict = {
        name: (lambda m=model: m.predict(images, batch_size=32, verbose=0))
        for name, model in models.items()
    }
    times["model.predict"] = _median_ms(
        harness.time_interleaved(
            predict, repeats=5 if quick else PREDICT_REPEATS, warmup=1
        )
    )
    return times, sizes


def _architecture(name, settings, folder):
    size, candidates = settings["size"], settings["candidates"]
    original = _build(name, size)
    crops = photos.photo_crops(NUM_EVAL + NUM_CALIBRATION, size) / 127.5 - 1
    crops = crops.astype(np.float32)
    evaluate = _fidelity(original, crops[:NUM_EVAL])
    data = crops[NUM_EVAL:]
    models, infos = {"original": original}, {}
    for method in METHODS[name]:
        models[method], infos[method] = _method(
            method, original, evaluate, data, candidates, folder
        )
        infos[method]["macs_ratio"] = _macs(models[method]) / _macs(original)
        infos[method]["parameters_ratio"] = (
            models[method].count_params() / original.count_params()
        )
    times, sizes = _time(models, size, settings["quick"])
    return dict(
        macs=_macs(original),
        parameters=original.count_params(),
        infos=infos,
        times=times,
        sizes=sizes,
    )


def run(quick=False, names=None):
    """Runs the suite (``quick``: ResNet50 at 32x32, one candidate ratio).

    Args:
        quick: a smoke run.
        names: the architectures to run (default: all of ``ARCHITECTURES``).

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    settings = dict(
        size=QUICK["size"] if quick else SIZE,
        candidates=QUICK["candidates"] if quick else CANDIDATES,
        quick=quick,
    )
    architectures = names or (
        QUICK["architectures"] if quick else ARCHITECTURES
    )
    unknown = sorted(set(architectures) - set(ARCHITECTURES))
    if unknown:
        raise ValueError(
            f"compression_real has no architecture {unknown}; choose from "
            f"{ARCHITECTURES}."
        )
    results = {}
    with tempfile.TemporaryDirectory(prefix="compression_real_") as folder:
        for name in architectures:
            results[name] = _architecture(name, settings, folder)
    return _report(results, settings, quick)


def _verdict(value, limit):
    return "pass" if value <= limit else "fail"


def _report(results, settings, quick):
    size = settings["size"]
    runtimes = [f"TFLite batch {b}" for b in TIMING_BATCHES] + ["model.predict"]
    table = harness.Table(
        f"Compressed stock models at {size}x{size} against the original",
        [
            "model",
            "compression",
            "MACs (G)",
            "MACs ratio",
            "parameters ratio",
            *[f"{r} ratio" for r in runtimes],
            "fidelity (rel. logit MSE)",
            "search s",
        ],
    )
    latency = harness.Table(
        "Channel pruning by measured time: landing on the target",
        [
            "model",
            "round",
            "target given to the layer table",
            "table's estimate",
            "whole model measured (search)",
        ],
    )
    checks = harness.Table(
        "Targets",
        ["check", "value", "target", "pass/fail"],
    )
    for name, result in results.items():
        times = result["times"]
        table.add_row(
            name,
            "original",
            f"{result['macs'] / 1e9:.2f}",
            "1.000",
            "1.000",
            *[f"{times[r]['original']:.1f} ms" for r in runtimes],
            "0",
            "—",
        )
        for method, info in result["infos"].items():
            ratios = [times[r][method] / times[r]["original"] for r in runtimes]
            table.add_row(
                name,
                LABELS[method],
                f"{info['macs_ratio'] * result['macs'] / 1e9:.2f}",
                f"{info['macs_ratio']:.3f}",
                f"{info['parameters_ratio']:.3f}",
                *[f"{r:.3f}" for r in ratios],
                f"{-info['score']:.4f}",
                f"{info['seconds']:.0f}",
            )
            for index, round_ in enumerate(info.get("latency_rounds", ())):
                latency.add_row(name, index + 1, *[f"{v:.3f}" for v in round_])
            if method == "cp_latency":
                batch1 = ratios[0]
                miss = abs(batch1 - TARGET) / TARGET
                checks.add_row(
                    f"{name}: time-targeted pruning, TFLite batch 1 ratio "
                    "(timed in the table above)",
                    f"{batch1:.3f} ({100 * miss:.1f}% off)",
                    f"{TARGET} within 3%",
                    "pass" if miss <= 0.03 else "fail",
                )
        if name == "ResNet50":
            for method in ("cp", "svd_cp"):
                if method not in result["infos"]:
                    continue
                tflite = (
                    times["TFLite batch 32"][method]
                    / (times["TFLite batch 32"]["original"])
                )
                predict = (
                    times["model.predict"][method]
                    / (times["model.predict"]["original"])
                )
                checks.add_row(
                    f"ResNet50, {LABELS[method]}: TFLite batch 32 time ratio",
                    f"{tflite:.3f}",
                    "<= 0.6",
                    _verdict(tflite, 0.6),
                )
                checks.add_row(
                    f"ResNet50, {LABELS[method]}: model.predict time ratio",
                    f"{predict:.3f}",
                    "<= 0.65",
                    _verdict(predict, 0.65),
                )
    table.notes += [
        "keras.applications models with weights=None (timing does not "
        "depend on trained values), 1000 classes, logits out. Per-layer "
        "ratios from compress_model's greedy search with "
        f"num_comp_ratio_candidates={settings['candidates']}, each candidate "
        f"scored by its logits' mean squared error to the original's on "
        f"{NUM_EVAL} photo crops, over the original's logit variance "
        "(the fidelity column: the same on the final model); "
        f"reconstructions sample {RECONSTRUCTION_SAMPLES} positions from "
        f"{NUM_CALIBRATION} other crops. On a trained model the scores "
        "come from its accuracy, and the choice of layers differs.",
        "Time ratios: compressed over original, each runtime's models "
        "timed interleaved (harness.time_interleaved), median of "
        f"{REPEATS[1]} rounds at batch 1, {REPEATS[32]} at batch 32 and "
        f"{PREDICT_REPEATS} of model.predict on {PREDICT_IMAGES} images in "
        f"batches of 32; TFLite: plain FP32 conversion, {THREADS} threads "
        "(XNNPACK), output checked against Keras. MACs and parameters from "
        "aimet_keras.compress.model_cost and count_params().",
    ]
    latency.notes.append(
        "compress_model(cost_metric='latency', latency_tolerance=0.03) with "
        f"a LatencyTable at batch {LATENCY_BATCH}, {THREADS} threads: each "
        "round chooses per-layer channel counts from the layers' times "
        "measured alone, then converts and times the whole model against "
        "the original; a miss over 3% sets the table's target again "
        "(scaled, then by the secant). The search's own measurement is "
        "the last column; the table above times the returned model again."
    )
    extra = {
        name: dict(
            macs=r["macs"],
            parameters=r["parameters"],
            infos=r["infos"],
            times_ms=r["times"],
            tflite_bytes=r["sizes"],
        )
        for name, r in results.items()
    }
    return harness.Report(
        suite="compression_real",
        tables=[table, latency, checks],
        settings=dict(
            size=size,
            target=TARGET,
            svd_ratio=SVD_RATIO,
            weight_svd_ratio=WEIGHT_SVD_RATIO,
            candidates=settings["candidates"],
            num_eval=NUM_EVAL,
            num_calibration=NUM_CALIBRATION,
            reconstruction_samples=RECONSTRUCTION_SAMPLES,
            threads=THREADS,
            repeats=REPEATS,
            predict_repeats=PREDICT_REPEATS,
            latency_batch=LATENCY_BATCH,
        ),
        quick=quick,
        extra=extra,
    )
