"""Suite ``analysis``: QuantAnalyzer on the reference models.

For each reference model at W8A8 and W4A8 (``tflite_int8`` config), and for
the ResNet with an outlier channel injected after ``stage2_a_conv``
(:func:`aimet_keras.zoo.inject_outlier_channel`: the same FP32 function, a
300x wider activation channel), it runs the full analysis scored by top-1
on the first 1,000 images of the shipped test slice: FP32, quantized,
weights-only and activations-only scores, the three most harmful layers,
and the time. The
HTML reports go to ``artifacts/analysis``; headless Chromium (Debian's
``chromium``), where installed, screenshots the outlier model's report,
which ``--update-results`` commits as
``benchmarks/results/analysis_report.png``.
"""

import pathlib
import shutil
import subprocess
import time

import numpy as np

from benchmarks import harness

__all__ = ["run"]

REPORTS_DIR = pathlib.Path("artifacts") / "analysis"
SCREENSHOT = "analysis_report.png"
OUTLIER_SCALE = 300.0
QUICK = dict(test_images=300, calibration=64)
TEST_IMAGES = 1000


def _screenshot(page, path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            f"--screenshot={path}",
            "--window-size=1280,2600",
            pathlib.Path(page).resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return path


def outlier_resnet():
    """The folded ResNet with ``stage2_a_conv``'s first channel scaled by
    ``OUTLIER_SCALE`` and ``stage2_b_conv`` by its inverse: the same FP32
    function with an outlier channel in between."""
    from aimet_keras import ptq
    from aimet_keras import zoo

    model = ptq.fold_for_deployment(zoo.load_model("resnet", compile=False))
    return zoo.inject_outlier_channel(
        model, "stage2_a_conv", "stage2_b_conv", scale=OUTLIER_SCALE
    )


def run(quick=False, update_results=False):
    from aimet_keras import zoo
    from aimet_keras.analysis import QuantAnalyzer

    sizes = QUICK if quick else {}
    images, labels = zoo.load_fashion_mnist_slice("test")
    # Scored about twice per layer: 1,000 images keep MobileNetV2's
    # 60-odd layers within minutes.
    count = sizes.get("test_images", TEST_IMAGES)
    images, labels = images[:count], labels[:count]
    calibration = zoo.load_fashion_mnist_slice("calibration")[0][
        : sizes.get("calibration", 512)
    ]

    def accuracy(model):
        predictions = np.concatenate(
            [
                np.asarray(model(images[i : i + 500], training=False))
                for i in range(0, len(images), 500)
            ]
        )
        return float(np.mean(predictions.argmax(-1) == labels))

    cases = [
        (name, f"W{bits}A8", lambda name=name: zoo.load_model(name), bits)
        for name in zoo.MODEL_NAMES
        for bits in (8, 4)
    ]
    cases.append(("resnet + outlier channel", "W8A8", outlier_resnet, 8))
    table = harness.Table(
        f"QuantAnalyzer, tflite_int8 config, top-1 on {count:,} test images",
        [
            "model",
            "setting",
            "layers",
            "FP32",
            "quantized",
            "weights only",
            "activations only",
            "most harmful (harm, points)",
            "seconds",
        ],
        formats={
            "FP32": "{:.2%}",
            "quantized": "{:.2%}",
            "weights only": "{:.2%}",
            "activations only": "{:.2%}",
            "seconds": "{:.0f}",
        },
    )
    reports = {}
    for name, setting, load, bits in cases:
        started = time.perf_counter()
        analyzer = QuantAnalyzer(load(), calibration, accuracy)
        analyzer.enable_per_layer_mse_loss(calibration[:64])
        folder = REPORTS_DIR / f"{name.split()[0]}_{setting.lower()}"
        if "outlier" in name:
            folder = REPORTS_DIR / "resnet_outlier_w8a8"
        analysis = analyzer.analyze(
            config_file="tflite_int8",
            default_param_bw=bits,
            results_dir=folder,
            verbose=0,
        )
        seconds = time.perf_counter() - started
        top = ", ".join(
            f"{layer.name} ({100 * analysis.harm(layer):.1f})"
            for layer in analysis.ranked[:3]
        )
        table.add_row(
            name,
            setting,
            len(analysis.layers),
            analysis.fp32,
            analysis.quantized,
            analysis.weights_only,
            analysis.activations_only,
            top,
            seconds,
        )
        reports[f"{name} {setting}"] = str(analysis.files["html"])
    target = (
        harness.RESULTS_DIR / SCREENSHOT
        if update_results and not quick
        else REPORTS_DIR / SCREENSHOT
    )
    shot = _screenshot(reports["resnet + outlier channel W8A8"], target)
    table.notes.extend(
        [
            "Harm: the larger of the top-1 lost with only the layer "
            "quantized and the top-1 regained with only the layer in float.",
            "The outlier model computes the FP32 function of resnet "
            f"exactly; one channel of stage2_a_conv is {OUTLIER_SCALE:g}x "
            "wider (and stage2_b_conv's input channel narrower).",
            f"Reports: {REPORTS_DIR}/*/quant_analysis.html"
            + (f"; screenshot: {shot}" if shot else "; no chromium"),
        ]
    )
    return harness.Report(
        suite="analysis",
        tables=[table],
        settings=dict(
            test_images=count, calibration=len(calibration), mse_images=64
        ),
        quick=quick,
        extra={"reports": reports},
    )
