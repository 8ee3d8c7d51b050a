"""Block reconstruction at W4A4: the weights' rounding fit with 4-bit
activations on, against plain W4A4.

    python examples/block_reconstruction_w4a4.py [--model resnet]
        [--iterations 200] [--out DIR]

At 4-bit activations, nearest rounding of 4-bit weights loses several
points, and AdaRound layer by layer (with float activations) never sees
the activation error its weights must absorb. ``ptq.reconstruct_blocks``
(BRECQ / QDrop style) cuts the sim's graph into blocks (a residual block,
a few convolutions), and fits each block's AdaRound variables and
activation ranges inside the W4A4 sim to the FP32 model's block output;
half of the block input's elements are the FP32 values (QDrop).

On a shipped Fashion-MNIST model, batch norms folded, the ``htp`` config
(per-channel 4-bit weights), 256 calibration images:

1. plain W4A4: ``compute_encodings`` (``tf_enhanced``), nearest rounding;
2. W4A4 with ``ptq.optimize_activation_ranges`` (a range per activation
   tensor: min/max, SQNR, percentile or MSE, whichever errs least);
3. the same, then ``ptq.reconstruct_blocks`` (``--iterations`` per
   block; the benchmark in ``benchmarks/results/ptq.md`` runs 2,000).

It prints top-1 on the 2,000 shipped test images for FP32 and each W4A4
sim, each block's reconstruction error before and after, and writes
``summary.json`` and the reconstructed sim's export (SavedModel,
``.keras``, encodings with the frozen rounded weights) to ``--out``.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", choices=zoo.MODEL_NAMES)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument(
        "--out", default="artifacts/examples/block_reconstruction_w4a4"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    out = pathlib.Path(args.out)
    calibration = zoo.load_fashion_mnist_slice("calibration")[0]
    calibration = calibration[: args.calibration]
    test, labels = zoo.load_fashion_mnist_slice("test")
    model = zoo.load_model(args.model, compile=False)
    folded = ptq.fold_for_deployment(model)

    def w4a4_sim():
        sim = QuantizationSimModel(
            folded, default_param_bw=4, default_output_bw=4, config_file="htp"
        )
        sim.compute_encodings(calibration, verbose=0)
        return sim

    rows = [dict(technique="FP32", top1=top1(model, test, labels))]
    since = time.perf_counter()
    sim = w4a4_sim()
    rows.append(
        dict(
            technique="W4A4 nearest",
            top1=top1(sim.model, test, labels),
            seconds=time.perf_counter() - since,
        )
    )
    since = time.perf_counter()
    sim = w4a4_sim()
    ptq.optimize_activation_ranges(sim, calibration, verbose=0)
    rows.append(
        dict(
            technique="W4A4 nearest + range search",
            top1=top1(sim.model, test, labels),
            seconds=time.perf_counter() - since,
        )
    )
    # Reconstruct on top of the searched ranges (the same sim, in place);
    # no compute_encodings afterwards: it would replace the fitted ranges.
    params = ptq.AdaroundParameters(
        calibration,
        num_batches=len(calibration) // 32,
        default_num_iterations=args.iterations,
    )
    results = ptq.reconstruct_blocks(sim, params, verbose=False)
    rows.append(
        dict(
            technique="W4A4 range search + block reconstruction",
            top1=top1(sim.model, test, labels),
            seconds=time.perf_counter() - since,
        )
    )
    paths = sim.export(out, f"{args.model}_w4a4_reconstructed")

    fp32 = rows[0]["top1"]
    for row in rows:
        row["drop_points"] = 100 * (fp32 - row["top1"])
    blocks = [
        dict(
            layers=result.layers,
            error_before=float(result.error_before),
            error_after=float(result.error_after),
            seconds=float(result.seconds),
        )
        for result in results
    ]
    summary = dict(
        model=args.model,
        config="htp",
        calibration_images=len(calibration),
        test_images=len(labels),
        iterations_per_block=args.iterations,
        rows=rows,
        blocks=blocks,
        artifacts={key: str(path) for key, path in paths.items()},
        seconds=round(time.perf_counter() - started, 1),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(
        f"\n{args.model}, W4A4 (htp config), top-1 on {len(labels)} test "
        f"images:\n"
    )
    print("| technique | top-1 | drop (points) | seconds |")
    print("|---|---|---|---|")
    for row in rows:
        seconds = f"{row['seconds']:.0f}" if "seconds" in row else "-"
        print(
            f"| {row['technique']} | {row['top1']:.2%} "
            f"| {row['drop_points']:+.2f} | {seconds} |"
        )
    print(
        f"\n{len(blocks)} blocks, reconstruction error before -> after "
        f"({args.iterations} iterations each):"
    )
    for index, block in enumerate(blocks):
        print(
            f"  {index}: {block['error_before']:9.4f} -> "
            f"{block['error_after']:9.4f}  ({', '.join(block['layers'])})"
        )
    print(f"summary.json and the export in {out}/ ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
