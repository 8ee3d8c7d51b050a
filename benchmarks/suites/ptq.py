"""Suite ``ptq``: post-training techniques on the reference models.

Tables (full 10,000-image Fashion-MNIST test set):

1. MobileNetV2-style net, W8A8 per-tensor with min/max ("tf") ranges: BN
   folding alone, then CLE, then CLE plus bias correction (empirical and
   analytical).
2. W4A8 per-channel weights (HTP-style config): nearest rounding against
   AdaRound, with the AdaRound time, on the ResNet- and MobileNetV2-style
   nets.
3. W4A4, per-channel weights: nearest rounding, per-tensor range search,
   layer-wise AdaRound plus range search, and block reconstruction with the
   4-bit activations in the loop.

Calibration and AdaRound data: the first 1,024 images of the training set.
"""

import tempfile
import time

from benchmarks import harness

__all__ = ["run"]

NUM_CALIBRATION = 1024
ADAROUND_ITERATIONS = 2000
QUICK = dict(images=1000, calibration=256, iterations=100)


def _accuracy(model, calibration, images, labels, frozen=None, **options):
    from aimet_keras.sim import QuantizationSimModel

    sim = QuantizationSimModel(model, **options)
    if frozen is not None:
        sim.set_and_freeze_param_encodings(frozen)
    sim.compute_encodings(calibration)
    return harness.top1_accuracy(sim.model, images, labels)


def _dfq_table(images, labels, calibration):
    from aimet_keras import ptq

    table = harness.Table(
        "MobileNetV2-style, W8A8 per-tensor, min/max ranges: DFQ steps, top-1",
        ["steps", "FP32", "W8A8", "drop (points)"],
        formats={
            "FP32": "{:.2%}",
            "W8A8": "{:.2%}",
            "drop (points)": "{:+.2f}",
        },
    )
    model = harness.load_reference_model("mobilenet_v2")
    fp32 = harness.top1_accuracy(model, images, labels)
    options = dict(quant_scheme="tf", config_file="default")
    folded, _ = ptq.fold_all_batch_norms(model)
    equalized = ptq.equalize_model(model)
    corrected, _ = ptq.correct_bias(equalized, calibration, quant_scheme="tf")
    # Analytical correction reads the BN statistics, so it runs on the
    # model with its batch norms (and folds them).
    analytical, _ = ptq.correct_bias(model, None, quant_scheme="tf")
    rows = [
        ("BN fold", folded),
        ("BN fold + CLE", equalized),
        ("BN fold + CLE + bias correction (empirical)", corrected),
        ("BN fold + bias correction (analytical, data-free)", analytical),
    ]
    for label, candidate in rows:
        accuracy = _accuracy(candidate, calibration, images, labels, **options)
        table.add_row(label, fp32, accuracy, 100 * (fp32 - accuracy))
    table.notes.append(
        "ReLU6 becomes ReLU under CLE (as in AIMET); the FP32 column is the "
        "original model."
    )
    return table


def _adaround(folded, name, calibration, iterations):
    """Layer-wise AdaRound at 4 bits (htp): the model, the encodings file
    and the seconds it took."""
    from aimet_keras import ptq

    folder = tempfile.mkdtemp()
    started = time.perf_counter()
    rounded = ptq.Adaround.apply_adaround(
        folded,
        ptq.AdaroundParameters(
            calibration,
            num_batches=len(calibration) // 32,
            default_num_iterations=iterations,
        ),
        folder,
        name,
        default_param_bw=4,
        config_file="htp",
        verbose=False,
    )
    seconds = time.perf_counter() - started
    return rounded, f"{folder}/{name}.encodings", seconds


def _adaround_table(images, labels, calibration, iterations, cache):
    from aimet_keras import ptq

    table = harness.Table(
        f"W4A8 per-channel (htp config): nearest vs AdaRound "
        f"({len(calibration):,} images, {iterations:,} iterations), top-1",
        [
            "model",
            "FP32",
            "nearest",
            "AdaRound",
            "gain (points)",
            "AdaRound s",
        ],
        formats={
            "FP32": "{:.2%}",
            "nearest": "{:.2%}",
            "AdaRound": "{:.2%}",
            "gain (points)": "{:+.2f}",
            "AdaRound s": "{:.0f}",
        },
    )
    options = dict(default_param_bw=4, config_file="htp")
    for name in ("resnet", "mobilenet_v2"):
        model = harness.load_reference_model(name)
        fp32 = harness.top1_accuracy(model, images, labels)
        folded, _ = ptq.fold_all_batch_norms(model)
        nearest = _accuracy(folded, calibration, images, labels, **options)
        rounded, encodings, seconds = _adaround(
            folded, name, calibration, iterations
        )
        cache[name] = (fp32, folded, rounded, encodings, seconds)
        adarounded = _accuracy(
            rounded,
            calibration,
            images,
            labels,
            frozen=encodings,
            **options,
        )
        table.add_row(
            name,
            fp32,
            nearest,
            adarounded,
            100 * (adarounded - nearest),
            seconds,
        )
    table.notes.append("BN folded before quantization in every column.")
    return table


def _w4a4_table(images, labels, calibration, iterations, cache):
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    table = harness.Table(
        f"W4A4 (per-channel 4-bit weights, htp config, tf_enhanced): "
        f"low-bit activation techniques ({len(calibration):,} images, "
        f"{iterations:,} iterations), top-1",
        ["model", "technique", "top-1", "drop (points)", "seconds"],
        formats={
            "top-1": "{:.2%}",
            "drop (points)": "{:+.2f}",
            "seconds": "{:.0f}",
        },
    )
    options = dict(default_param_bw=4, default_output_bw=4, config_file="htp")

    def sim_of(model, frozen=None, search=True):
        sim = QuantizationSimModel(model, **options)
        if frozen is not None:
            sim.set_and_freeze_param_encodings(frozen)
        sim.compute_encodings(calibration)
        started = time.perf_counter()
        if search:
            ptq.optimize_activation_ranges(sim, calibration)
        return sim, time.perf_counter() - started

    for name in ("resnet", "mobilenet_v2"):
        fp32, folded, rounded, encodings, adaround_seconds = cache[name]
        rows = [("FP32", fp32, None)]
        sim, _ = sim_of(folded, search=False)
        rows.append(("nearest", _top1(sim, images, labels), None))
        sim, seconds = sim_of(folded)
        rows.append(
            ("nearest + range search", _top1(sim, images, labels), seconds)
        )
        sim, seconds = sim_of(rounded, frozen=encodings)
        rows.append(
            (
                "AdaRound (layer-wise) + range search",
                _top1(sim, images, labels),
                adaround_seconds + seconds,
            )
        )
        sim, seconds = sim_of(folded)
        started = time.perf_counter()
        ptq.reconstruct_blocks(
            sim,
            ptq.AdaroundParameters(
                calibration,
                num_batches=len(calibration) // 32,
                default_num_iterations=iterations,
            ),
            verbose=False,
        )
        seconds += time.perf_counter() - started
        rows.append(
            (
                "range search + block reconstruction (QDrop)",
                _top1(sim, images, labels),
                seconds,
            )
        )
        for technique, accuracy, seconds in rows:
            table.add_row(
                name, technique, accuracy, 100 * (fp32 - accuracy), seconds
            )
    table.notes.append(
        "BN folded in every row; seconds: range search and the rounding "
        "optimisation, not calibration."
    )
    return table


def _top1(sim, images, labels):
    return harness.top1_accuracy(sim.model, images, labels)


def workload(quick=False):
    """``(test images, labels, calibration images, AdaRound iterations)``.

    Shared with the ``aimet_onnx`` suite, so that AIMET runs on the same
    data and iterations as ours.
    """
    from aimet_keras import zoo

    images, labels = zoo.load_fashion_mnist("test")
    train, _ = zoo.load_fashion_mnist("train")
    calibration = train[:NUM_CALIBRATION]
    if not quick:
        return images, labels, calibration, ADAROUND_ITERATIONS
    return (
        images[: QUICK["images"]],
        labels[: QUICK["images"]],
        calibration[: QUICK["calibration"]],
        QUICK["iterations"],
    )


def run(quick=False):
    """Runs the suite.

    Args:
        quick: 1,000 test images, 256 calibration images, 100 AdaRound
            iterations.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    images, labels, calibration, iterations = workload(quick)
    cache = {}
    tables = [
        _dfq_table(images, labels, calibration),
        _adaround_table(images, labels, calibration, iterations, cache),
        _w4a4_table(images, labels, calibration, iterations, cache),
    ]
    settings = dict(
        test_images=len(images),
        calibration_images=len(calibration),
        adaround_iterations=iterations,
    )
    return harness.Report("ptq", tables, settings, quick=quick)
