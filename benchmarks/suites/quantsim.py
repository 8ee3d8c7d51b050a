"""Suite ``quantsim``: W8A8 simulated accuracy of the reference models.

Each trained model is wrapped by ``QuantizationSimModel`` with a shipped
quantsim config, calibrated (``tf_enhanced``) on the 1,000 shipped
calibration images, and evaluated on the full 10,000-image test set beside
its FP32 accuracy.
"""

from benchmarks import harness

__all__ = ["run"]

CONFIGS = ("default", "tflite_int8", "htp")
QUICK_CONFIGS = ("default",)
QUICK_NUM_IMAGES = 1000


def run(quick=False):
    """Runs the suite.

    Args:
        quick: the default config only, on the first 1,000 test images.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
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
    for name in zoo.MODEL_NAMES:
        model = harness.load_reference_model(name)
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
        "The transformer's MultiHeadAttention is quantized at its inputs, "
        "weights and output only; its inner matmuls and softmax are not yet.",
    ]
    if quick:
        table.notes.append(f"--quick: first {QUICK_NUM_IMAGES:,} test images.")
    return harness.Report(
        "quantsim", [table], {"configs": list(configs)}, quick=quick
    )
