"""Data-free quantization: BN folding, cross-layer equalization, bias fix.

    python examples/cle_and_bias_correction.py [--model mobilenet_v2]
        [--out DIR]

AIMET's DFQ recipe (Nagel et al. 2019) on a shipped Fashion-MNIST model,
with per-tensor weight grids and min/max (``tf``) ranges, AIMET's default
config, where a channel with a wide weight range costs every other channel
of its layer resolution:

1. ``ptq.fold_all_batch_norms``: batch norms folded into the convolutions.
2. ``ptq.equalize_model``: ReLU6 becomes ReLU, batch norms are folded, the
   weight ranges of consecutive Conv / DepthwiseConv / Conv sets are scaled
   to equal per-channel ranges (cross-layer scaling) and high biases are
   folded forward. The script measures the spread of per-channel weight
   ranges (largest over smallest, median over the layers) before and after.
3. ``ptq.correct_bias``: empirical bias correction on the calibration
   images: the mean shift that weight quantization causes in each layer's
   output is removed from its bias (``data=None`` would compute it
   analytically from the batch-norm statistics instead).

Each model is simulated with ``QuantizationSimModel`` at W8A8 (where
per-tensor 8-bit weights already hold) and at W4A8 (where CLE and bias
correction win back most of what per-tensor 4-bit weights lose), calibrated
on 256 training images and scored on the 2,000 shipped test images. It
prints the table and writes ``summary.json`` to ``--out``.
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import keras  # noqa: E402
import numpy as np  # noqa: E402

from aimet_keras import ptq  # noqa: E402
from aimet_keras import zoo  # noqa: E402
from aimet_keras.sim import QuantizationSimModel  # noqa: E402


def top1(model, images, labels):
    """Top-1 accuracy, batched."""
    predictions = model.predict(images, batch_size=500, verbose=0)
    return float(np.mean(predictions.argmax(-1) == labels))


def range_spread(model):
    """Median over Conv and DepthwiseConv layers of the largest per-channel
    weight range over the smallest: what a per-tensor grid suffers from."""
    spreads = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = np.asarray(layer.kernel)  # (h, w, in, multiplier)
            ranges = np.abs(kernel).max(axis=(0, 1)).reshape(-1)
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = np.asarray(layer.kernel)  # (h, w, in, out)
            ranges = np.abs(kernel).max(axis=(0, 1, 2))
        else:
            continue
        spreads.append(ranges.max() / max(ranges.min(), 1e-12))
    return float(np.median(spreads))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="mobilenet_v2", choices=zoo.MODEL_NAMES
    )
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument(
        "--out", default="artifacts/examples/cle_and_bias_correction"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    out = pathlib.Path(args.out)
    calibration = zoo.load_fashion_mnist_slice("calibration")[0]
    calibration = calibration[: args.calibration]
    test, labels = zoo.load_fashion_mnist_slice("test")

    model = zoo.load_model(args.model, compile=False)
    fp32 = top1(model, test, labels)
    folded, pairs = ptq.fold_all_batch_norms(model)
    equalized = ptq.equalize_model(model)
    cls_sets = ptq.find_cls_sets(equalized)
    # The sims: per-tensor weights (AIMET's default config), min/max ranges.
    options = dict(quant_scheme="tf", config_file="default")

    def quantized_top1(float_model, bits):
        sim = QuantizationSimModel(
            float_model, default_param_bw=bits, **options
        )
        sim.compute_encodings(calibration, verbose=0)
        return top1(sim.model, test, labels)

    rows = []
    for bits in (8, 4):
        corrected, changes = ptq.correct_bias(
            equalized, calibration, default_param_bw=bits, verbose=0, **options
        )
        for steps, float_model in (
            ("BN fold", folded),
            ("BN fold + CLE", equalized),
            ("BN fold + CLE + bias correction", corrected),
        ):
            accuracy = quantized_top1(float_model, bits)
            rows.append(
                dict(
                    precision=f"W{bits}A8",
                    steps=steps,
                    top1=accuracy,
                    drop_points=100 * (fp32 - accuracy),
                )
            )
        rows[-1]["corrected_layers"] = len(changes)

    summary = dict(
        model=args.model,
        calibration_images=len(calibration),
        test_images=len(labels),
        quant_scheme=options["quant_scheme"],
        config=options["config_file"],
        fp32=fp32,
        folded_batch_norms=len(pairs),
        cls_sets=len(cls_sets),
        weight_range_spread=dict(
            folded=range_spread(folded), equalized=range_spread(equalized)
        ),
        rows=rows,
        seconds=round(time.perf_counter() - started, 1),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    spread = summary["weight_range_spread"]
    print(
        f"\n{args.model}: {len(pairs)} batch norms folded, {len(cls_sets)} "
        f"layer sets equalized; per-channel weight range spread (median "
        f"max/min) {spread['folded']:.1f} -> {spread['equalized']:.1f}"
    )
    print(
        f"per-tensor weights, min/max ranges; top-1 on {len(labels)} test "
        f"images (FP32 {fp32:.2%}):\n"
    )
    print("| precision | steps | top-1 | drop (points) |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['precision']} | {row['steps']} | {row['top1']:.2%} "
            f"| {row['drop_points']:+.2f} |"
        )
    print(f"\nsummary.json in {out}/ ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
