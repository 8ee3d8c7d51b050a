"""Suite ``compression_data_free``: spatial SVD to half the MACs of the
reference ResNet with no data, with inputs distilled from its batch-norm
statistics (:func:`aimet_keras.compress.distilled_data`), and with real
training images, for the second factors' least-squares refit.

The greedy search scores candidates on 2,000 held-out training images in
every row (AIMET's ``eval_callback``); only the refit's data differs. Top-1
on the full test set.
"""

import time

from benchmarks import harness

__all__ = ["run"]

TARGET = 0.5
CANDIDATES = 10
IGNORED = ("stem_conv",)
NUM_EVAL = 2000
NUM_REAL = 1000
NUM_DISTILLED = 512
DISTILL_STEPS = 500
RECONSTRUCTION_SAMPLES = 5000
LOSS_TARGET = 3.0  # points, without real data
QUICK = dict(test=1000, candidates=4, distilled=64, steps=50)


def run(quick=False):
    """Runs the suite (``quick``: fewer candidates, images and steps).

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    from aimet_keras import compress
    from aimet_keras import zoo

    model = zoo.load_model("resnet", compile=False)
    train, train_labels = zoo.load_fashion_mnist("train")
    test, test_labels = zoo.load_fashion_mnist("test")
    if quick:
        test, test_labels = test[: QUICK["test"]], test_labels[: QUICK["test"]]
    candidates = QUICK["candidates"] if quick else CANDIDATES
    num_distilled = QUICK["distilled"] if quick else NUM_DISTILLED
    steps = QUICK["steps"] if quick else DISTILL_STEPS
    evaluate = compress.accuracy_evaluator(
        (train[-NUM_EVAL:], train_labels[-NUM_EVAL:]), 500
    )
    fp32 = 100 * harness.top1_accuracy(model, test, test_labels)
    start = time.perf_counter()
    distilled = compress.distilled_data(
        model, num_images=num_distilled, steps=steps, verbose=0
    )
    distill_seconds = time.perf_counter() - start
    rows = (
        ("none (AIMET's weight-only SVD)", None, 0.0),
        (
            f"{num_distilled} inputs distilled from the batch norms",
            distilled,
            distill_seconds,
        ),
        (f"{NUM_REAL} real training images", train[:NUM_REAL], 0.0),
    )
    table = harness.Table(
        f"Spatial SVD to {TARGET} of the MACs: the refit's data",
        [
            "refit data",
            "MACs ratio",
            "top-1",
            "delta vs FP32 (points)",
            "ranks",
            "s",
            f"target (no real data) >= -{LOSS_TARGET}",
        ],
    )
    extra = {}
    for label, data, seconds in rows:
        start = time.perf_counter()
        smaller, stats = compress.compress_model(
            model,
            evaluate,
            None,
            TARGET,
            scheme="spatial_svd",
            num_comp_ratio_candidates=candidates,
            modules_to_ignore=list(IGNORED),
            data=data,
            num_reconstruction_samples=RECONSTRUCTION_SAMPLES,
            verbose=0,
        )
        seconds += time.perf_counter() - start
        top1 = 100 * harness.top1_accuracy(smaller, test, test_labels)
        delta = top1 - fp32
        verdict = "—"
        if data is distilled:
            verdict = "pass" if delta >= -LOSS_TARGET else "fail"
        table.add_row(
            label,
            f"{stats.achieved_comp_ratio:.3f}",
            f"{top1:.2f}",
            f"{delta:+.2f}",
            ", ".join(f"{k}:{v}" for k, v in stats.ranks.items()),
            f"{seconds:.0f}",
            verdict,
        )
        extra[label] = dict(
            top1=top1, ranks=stats.ranks, seconds=seconds, ratios=stats.ratios
        )
    table.notes += [
        f"FP32 top-1 {fp32:.2f}% on {len(test):,} test images. Greedy "
        f"search (num_comp_ratio_candidates={candidates}, stem_conv "
        f"ignored) scored on the last {NUM_EVAL:,} training images; the "
        f"refit samples {RECONSTRUCTION_SAMPLES:,} output positions per "
        "layer from its data.",
        f"Distilled: compress.distilled_data(model, num_images="
        f"{num_distilled}, steps={steps}): Adam from noise until every "
        "batch norm's batch mean and deviation match its moving statistics "
        "(ZeroQ); its time is in the s column. The real images are the "
        f"first {NUM_REAL:,} of the training set.",
    ]
    return harness.Report(
        suite="compression_data_free",
        tables=[table],
        settings=dict(
            target=TARGET,
            candidates=candidates,
            num_eval=NUM_EVAL,
            num_real=NUM_REAL,
            num_distilled=num_distilled,
            distill_steps=steps,
            reconstruction_samples=RECONSTRUCTION_SAMPLES,
            test_images=len(test),
        ),
        quick=quick,
        extra=extra,
    )
