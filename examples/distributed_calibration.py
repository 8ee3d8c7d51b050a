"""Calibration under tf.distribute: the same encodings as on one device.

    python examples/distributed_calibration.py [--model resnet]
        [--replicas 2] [--out DIR]

Build the sim inside a ``tf.distribute.MirroredStrategy``'s ``scope()`` and
``compute_encodings`` splits each calibration batch over the replicas;
every observer gathers all replicas' shards, so the encodings are the ones
one device computes from the same batches. ``sim.model.predict`` splits
its batches the same way.

Without GPUs the script splits the CPU into ``--replicas`` logical devices
(as ``tests/sim/test_distributed.py`` does; TensorFlow fixes its devices
when it starts, so this runs first); with two or more GPUs it mirrors over
them. On a shipped Fashion-MNIST model, batch norms folded, W8A8 with the
``tflite_int8`` config and ``tf_enhanced`` ranges (per-channel weights,
histogram-based activation ranges), 256 calibration images in batches of
32 (each replica sees 16 of each batch):

1. a sim calibrated on one device, exported with ``sim.export``;
2. a sim built in the strategy's scope, calibrated and exported the same
   way;
3. the two encodings files compared tensor by tensor, and both sims
   scored on the 2,000 shipped test images.

It prints the replicas, the largest encoding difference and top-1 of
FP32 and both sims, and writes ``summary.json`` and both exports to
``--out``.
"""

import argparse
import contextlib
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def make_strategy(replicas):
    """A MirroredStrategy over the GPUs, or over logical CPU devices."""
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= 2:
        return tf.distribute.MirroredStrategy(), "GPU"
    # Before anything initialises TensorFlow's devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
    )
    devices = [f"/cpu:{i}" for i in range(replicas)]
    return tf.distribute.MirroredStrategy(devices), "logical CPU"


def encoding_differences(first, second):
    """The largest |difference| of min, max and scale over every tensor of
    two encodings files, and the tensors only one of them has."""
    worst, only = 0.0, []
    for kind in ("param_encodings", "activation_encodings"):
        a, b = first[kind], second[kind]
        only += sorted(set(a) ^ set(b))
        for name in set(a) & set(b):
            for x, y in zip(a[name], b[name]):
                for key in ("min", "max", "scale"):
                    if key in x:
                        worst = max(worst, abs(x[key] - y[key]))
    return worst, only


def top1(model, images, labels):
    """Top-1 accuracy, batched."""
    predictions = model.predict(images, batch_size=500, verbose=0)
    return float(np.mean(predictions.argmax(-1) == labels))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument(
        "--out", default="artifacts/examples/distributed_calibration"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    strategy, kind = make_strategy(args.replicas)

    from aimet_keras import ptq
    from aimet_keras import zoo
    from aimet_keras.sim import QuantizationSimModel

    out = pathlib.Path(args.out)
    calibration = zoo.load_fashion_mnist_slice("calibration")[0]
    calibration = calibration[: args.calibration]
    test, labels = zoo.load_fashion_mnist_slice("test")

    results, encodings = {}, {}
    for name, scope in (
        ("one device", contextlib.nullcontext()),
        (f"{strategy.num_replicas_in_sync} replicas", strategy.scope()),
    ):
        since = time.perf_counter()
        with scope:
            model = zoo.load_model(args.model, compile=False)
            sim = QuantizationSimModel(
                ptq.fold_for_deployment(model),
                quant_scheme="tf_enhanced",
                config_file="tflite_int8",
            )
        sim.compute_encodings(calibration, verbose=0)
        seconds = time.perf_counter() - since
        prefix = "single" if name == "one device" else "distributed"
        paths = sim.export(out / prefix, f"{args.model}_w8a8")
        encodings[name] = json.loads(paths["encodings"].read_text())
        results[name] = dict(
            replicas=sim.model.distribute_strategy.num_replicas_in_sync,
            calibration_seconds=round(seconds, 1),
            top1=top1(sim.model, test, labels),
            encodings=str(paths["encodings"]),
        )
        if name == "one device":
            fp32 = top1(model, test, labels)

    single, distributed = encodings.values()
    worst, only = encoding_differences(single, distributed)
    summary = dict(
        model=args.model,
        devices=kind,
        replicas=strategy.num_replicas_in_sync,
        calibration_images=len(calibration),
        test_images=len(labels),
        fp32=fp32,
        sims=results,
        encoded_tensors=len(single["param_encodings"])
        + len(single["activation_encodings"]),
        max_encoding_difference=worst,
        tensors_in_one_file_only=only,
        seconds=round(time.perf_counter() - started, 1),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(
        f"\n{args.model}, W8A8 tflite_int8, calibrated on {len(calibration)} "
        f"images; MirroredStrategy over {summary['replicas']} {kind} devices"
    )
    print(f"\n| sim | replicas | calibration s | top-1 on {len(labels)} |")
    print("|---|---|---|---|")
    print(f"| FP32 | - | - | {fp32:.2%} |")
    for name, result in results.items():
        print(
            f"| {name} | {result['replicas']} "
            f"| {result['calibration_seconds']:.1f} | {result['top1']:.2%} |"
        )
    print(
        f"\n{summary['encoded_tensors']} encoded tensors; largest min/max/"
        f"scale difference between the two files: {worst:.3g}"
        + (f"; in one file only: {only}" if only else "")
    )
    print(
        f"summary.json and both exports in {out}/ ({summary['seconds']:.0f} s)"
    )


if __name__ == "__main__":
    main()
