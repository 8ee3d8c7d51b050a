"""AutoQuant: AIMET's post-training steps, tried until accuracy holds.

    python examples/autoquant.py [--model mobilenet_v2]
        [--adaround-iterations 300] [--out DIR]

``ptq.auto_quant`` takes a float model, unlabelled calibration images and an
evaluation callback ``eval_callback(keras_model) -> float`` (here top-1 on
500 held-out training images), and tries AIMET's steps in order: batch-norm
folding, then cross-layer equalization, then AdaRound (on the better of the
two), calibrating and scoring a ``QuantizationSimModel`` after each. It
stops at the first step within ``allowed_accuracy_drop`` of FP32, otherwise
keeps the best, and exports the chosen sim.

Two runs on a shipped Fashion-MNIST model, 256 calibration images:

1. W8A8, per-channel weights (the ``tflite_int8`` config): BN folding
   alone holds, and AutoQuant stops there.
2. W4A8 with per-tensor weights (AIMET's default config, min/max ranges):
   folding loses many points, CLE wins most back, and AdaRound
   (``--adaround-iterations`` per layer) is tried last.

It prints the steps each run tried with their scores, the chosen step's
top-1 on the 2,000 shipped test images against FP32, and writes
``summary.json`` and each run's exported sim to ``--out``.
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import numpy as np  # noqa: E402

from aimet_keras import ptq  # noqa: E402
from aimet_keras import zoo  # noqa: E402


def top1(model, images, labels):
    """Top-1 accuracy, batched."""
    predictions = model.predict(images, batch_size=500, verbose=0)
    return float(np.mean(predictions.argmax(-1) == labels))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="mobilenet_v2", choices=zoo.MODEL_NAMES
    )
    parser.add_argument("--adaround-iterations", type=int, default=300)
    parser.add_argument("--allowed-drop", type=float, default=0.01)
    parser.add_argument("--out", default="artifacts/examples/autoquant")
    args = parser.parse_args()
    started = time.perf_counter()
    out = pathlib.Path(args.out)
    train, train_labels = zoo.load_fashion_mnist_slice("calibration")
    calibration = train[:256]
    held_out, held_out_labels = train[500:], train_labels[500:]
    test, test_labels = zoo.load_fashion_mnist_slice("test")
    model = zoo.load_model(args.model, compile=False)

    def eval_callback(keras_model):
        """AutoQuant's score: top-1 on held-out images, higher is better."""
        return top1(keras_model, held_out, held_out_labels)

    runs = []
    for name, options in (
        (
            "w8a8_per_channel",
            dict(default_param_bw=8, config_file="tflite_int8"),
        ),
        (
            "w4a8_per_tensor",
            dict(default_param_bw=4, config_file="default", quant_scheme="tf"),
        ),
    ):
        since = time.perf_counter()
        result = ptq.auto_quant(
            model,
            calibration,
            eval_callback,
            allowed_accuracy_drop=args.allowed_drop,
            results_dir=out / name,
            adaround_iterations=args.adaround_iterations,
            verbose=False,
            **options,
        )
        runs.append(
            dict(
                name=name,
                options=options,
                step=result.step,
                accuracy=result.accuracy,
                fp32_accuracy=result.fp32_accuracy,
                report=result.report,
                test_top1=top1(result.sim.model, test, test_labels),
                encodings=str(result.encodings_path),
                seconds=round(time.perf_counter() - since, 1),
            )
        )

    summary = dict(
        model=args.model,
        calibration_images=len(calibration),
        eval_images=len(held_out_labels),
        test_images=len(test_labels),
        allowed_accuracy_drop=args.allowed_drop,
        adaround_iterations=args.adaround_iterations,
        fp32_test_top1=top1(model, test, test_labels),
        runs=runs,
        seconds=round(time.perf_counter() - started, 1),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(
        f"\n{args.model}, AutoQuant with allowed drop "
        f"{args.allowed_drop:.1%} (eval callback: top-1 on "
        f"{len(held_out_labels)} held-out images)"
    )
    for run in runs:
        print(f"\n{run['name']} (FP32 {run['fp32_accuracy']:.2%}):")
        for entry in run["report"]:
            print(
                f"  {entry['step']:26s} {entry['accuracy']:.2%}  "
                f"drop {100 * entry['drop']:+.2f} points  "
                f"{entry['seconds']:.0f} s"
            )
        print(f"  chosen: {run['step']}")
    print(f"\ntop-1 on {len(test_labels)} test images:")
    print(f"  {'FP32':26s} {summary['fp32_test_top1']:.2%}")
    for run in runs:
        label = f"{run['name']} ({run['step']})"
        print(f"  {label:26s} {run['test_top1']:.2%}")
    print(f"summary.json in {out}/ ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
