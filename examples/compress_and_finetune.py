"""Compress a shipped model to half its MACs, then fine-tune it with fit.

    python examples/compress_and_finetune.py [--target 0.5] [--epochs 2]
        [--out artifacts/compress] [--quick]

AIMET's recipe for ResNets: spatial SVD first (a kxk convolution as a kx1
then a 1xk one), then channel pruning (input channels dropped, the layers
feeding them winnowed, the kernel reconstructed by least squares), each with
greedy per-layer ratios chosen from an evaluation callback. The callback
scores top-1 accuracy on 500 training images; 500 others give the sampled
activations that channel pruning reconstructs its layers from, and that
refit the spatial SVD's second factors. Then one or
two epochs of ``model.fit`` on the training set win back most of what was
lost.

It prints accuracy on the test set, MACs and parameters for the original,
the compressed and the fine-tuned model, and writes to ``--out``: the
compressed and fine-tuned ``.keras`` models, a sensitivity chart per stage
(SVG), and ``summary.json``. ``--quick`` fine-tunes on the shipped
1,000-image slice and tests on the shipped 2,000 test images, for a smoke
run in a minute; otherwise the full Fashion-MNIST (``apt-get install
dataset-fashion-mnist``) is used.
"""

import argparse
import json
import pathlib

import keras
import numpy as np

from aimet_keras import compress
from aimet_keras import zoo


def accuracy(model, images, labels):
    """Top-1 accuracy, batched."""
    predictions = model.predict(images, batch_size=500, verbose=0)
    return float(np.mean(predictions.argmax(1) == labels))


def load_data(quick):
    """``(train images, train labels, test images, test labels)``."""
    if quick:
        train = zoo.load_fashion_mnist_slice("calibration")
        test = zoo.load_fashion_mnist_slice("test")
    else:
        train = zoo.load_fashion_mnist("train")
        test = zoo.load_fashion_mnist("test")
    return (*train, *test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument(
        "--svd-target",
        type=float,
        default=0.75,
        help="MACs kept after the spatial SVD stage (of the original's)",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--candidates",
        type=int,
        default=10,
        help="candidate ratios k/N per layer (N; fewer is faster)",
    )
    parser.add_argument("--out", default="artifacts/compress")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)

    model = zoo.load_model(args.model, compile=False)
    train_x, train_y, test_x, test_y = load_data(args.quick)
    # Held-out training images: 500 to score candidates, 500 for channel
    # pruning's samples; the test set stays for the final numbers.
    held_x, held_y = zoo.load_fashion_mnist_slice("calibration")
    evaluate = compress.accuracy_evaluator(
        (held_x[:500], held_y[:500]), batch_size=250
    )
    original_macs = compress.model_cost(model).macs

    svd_model, svd_stats = compress.compress_model(
        model,
        evaluate,
        None,
        args.svd_target,
        scheme="spatial_svd",
        num_comp_ratio_candidates=args.candidates,
        data=held_x[500:],
        eval_scores_path=str(out / "spatial_svd_scores.json"),
    )
    svd_stats.plot(out / "sensitivity_spatial_svd.svg")
    relative = args.target * original_macs / compress.model_cost(svd_model).macs
    pruned, pruning_stats = compress.compress_model(
        svd_model,
        evaluate,
        None,
        relative,
        scheme="channel_pruning",
        num_comp_ratio_candidates=args.candidates,
        data=held_x[500:],
        eval_scores_path=str(out / "channel_pruning_scores.json"),
    )
    pruning_stats.plot(out / "sensitivity_channel_pruning.svg")
    pruned.save(out / f"{args.model}_compressed.keras")

    tuned = keras.models.clone_model(pruned)
    tuned.set_weights(pruned.get_weights())
    tuned.compile(
        optimizer=keras.optimizers.Adam(2e-4),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    tuned.fit(train_x, train_y, batch_size=64, epochs=args.epochs, verbose=2)
    tuned.save(out / f"{args.model}_finetuned.keras")

    rows = []
    for label, m in (
        ("original", model),
        ("spatial SVD", svd_model),
        ("+ channel pruning", pruned),
        (f"+ fine-tuned {args.epochs} epochs", tuned),
    ):
        cost = compress.model_cost(m)
        rows.append(
            (
                label,
                cost.macs,
                cost.macs / original_macs,
                m.count_params(),
                accuracy(m, test_x, test_y),
            )
        )
    print(f"\n{len(test_y):,} test images\n")
    print("| model | MACs | MACs kept | parameters | accuracy |")
    print("|---|---|---|---|---|")
    for label, macs, kept, params, acc in rows:
        print(f"| {label} | {macs:,} | {kept:.3f} | {params:,} | {acc:.2%} |")
    print("\nChannel pruning per layer:\n")
    print(pruning_stats.to_markdown())
    summary = {
        "model": args.model,
        "test_images": len(test_y),
        "rows": [
            dict(
                zip(("model", "macs", "macs_kept", "parameters", "accuracy"), r)
            )
            for r in rows
        ],
        "svd_ratios": svd_stats.ratios,
        "pruning_kept_channels": pruning_stats.kept_channels,
        "artifacts": sorted(str(p) for p in out.iterdir()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    names = ", ".join(p.name for p in sorted(out.iterdir()))
    print(f"\nArtifacts in {out}/: {names}")


if __name__ == "__main__":
    main()
