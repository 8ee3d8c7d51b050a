"""QuantizationSimModel with every knob: scheme, bits, per-channel, config.

    python examples/quantsim.py [--model resnet] [--out DIR]

The long form of ``quantize_model``, on a shipped Fashion-MNIST model and
the shipped data slice (256 calibration images, 2,000 test images):

1. Batch norms folded (``ptq.fold_for_deployment``), the model is simulated
   under several settings, each a ``QuantizationSimModel`` calibrated with
   ``compute_encodings`` and evaluated: calibration schemes (``tf``,
   ``tf_enhanced``, ``mse``), 8- and 4-bit weights, per-tensor against
   per-channel weight grids (chosen by a small AIMET quantsim config JSON
   this script writes to ``--out``), and the shipped ``tflite_int8``
   config.
2. The ``tflite_int8`` sim's plan is written with ``sim.summary`` and the
   sim is exported with ``sim.export``: the FP32 SavedModel, the simulated
   ``.keras`` model and AIMET's 0.6.1 encodings file.
3. A fresh sim of the same float model reads that file with
   ``load_encodings_to_sim`` and is run on the test images, as is the
   exported ``.keras`` model: both must reproduce the first sim's outputs.

It prints top-1 per setting and how far the reloaded sims are from the
original, and writes ``summary.json`` (and the files above) to ``--out``.
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


def write_config(path, per_channel):
    """A small AIMET quantsim config: symmetric weights, asymmetric
    activations, float biases, Conv/Dense/Add fused with their ReLU."""
    config = {
        "defaults": {
            "ops": {"is_output_quantized": "True", "is_symmetric": "False"},
            "params": {"is_quantized": "True", "is_symmetric": "True"},
            "strict_symmetric": "False",
            "unsigned_symmetric": "False",
            "per_channel_quantization": str(per_channel),
        },
        "params": {"bias": {"is_quantized": "False"}},
        "op_type": {
            "Gemm": {"per_channel_quantization": "False"},
            "Flatten": {"is_output_quantized": "False"},
            "MaxPool": {"is_output_quantized": "False"},
        },
        "supergroups": [
            {"op_list": ["Conv", "Relu"]},
            {"op_list": ["Gemm", "Relu"]},
            {"op_list": ["Add", "Relu"]},
        ],
        "model_input": {"is_input_quantized": "True"},
        "model_output": {},
    }
    path.write_text(json.dumps(config, indent=1))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", choices=zoo.MODEL_NAMES)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--out", default="artifacts/examples/quantsim")
    args = parser.parse_args()
    started = time.perf_counter()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    calibration = zoo.load_fashion_mnist_slice("calibration")[0]
    calibration = calibration[: args.calibration]
    test, labels = zoo.load_fashion_mnist_slice("test")

    model = zoo.load_model(args.model, compile=False)
    folded = ptq.fold_for_deployment(model)
    per_tensor = write_config(out / "config_per_tensor.json", False)
    per_channel = write_config(out / "config_per_channel.json", True)

    # (label, scheme, config, weight bits, activation bits)
    settings = [
        ("W8A8 tf per-tensor", "tf", per_tensor, 8, 8),
        ("W8A8 tf_enhanced per-tensor", "tf_enhanced", per_tensor, 8, 8),
        ("W8A8 tf_enhanced per-channel", "tf_enhanced", per_channel, 8, 8),
        ("W8A8 tflite_int8 config", "tf_enhanced", "tflite_int8", 8, 8),
        ("W4A8 tf per-tensor", "tf", per_tensor, 4, 8),
        ("W4A8 tf per-channel", "tf", per_channel, 4, 8),
        ("W4A8 mse per-channel", "mse", per_channel, 4, 8),
    ]
    rows = [dict(setting="FP32", top1=top1(model, test, labels))]
    sims = {}
    for label, scheme, config, param_bw, output_bw in settings:
        sim = QuantizationSimModel(
            folded,
            quant_scheme=scheme,
            default_param_bw=param_bw,
            default_output_bw=output_bw,
            config_file=str(config),
            strict=True,
        )
        sim.compute_encodings(calibration, verbose=0)
        sims[label] = sim
        rows.append(
            dict(
                setting=label,
                quant_scheme=scheme,
                config=pathlib.Path(config).name,
                weight_bits=param_bw,
                activation_bits=output_bw,
                top1=top1(sim.model, test, labels),
            )
        )

    # The plan, the export, and a fresh sim from the encodings file.
    sim = sims["W8A8 tflite_int8 config"]
    plan = []
    sim.summary(print_fn=plan.append)
    (out / "sim_summary.txt").write_text("\n".join(plan) + "\n")
    prefix = f"{args.model}_w8a8"
    paths = sim.export(out, prefix)
    encodings = json.loads(paths["encodings"].read_text())
    fresh = QuantizationSimModel(
        folded, quant_scheme="tf_enhanced", config_file="tflite_int8"
    )
    fresh.load_encodings_to_sim(paths["encodings"])
    reloaded = keras.saving.load_model(paths["keras"])
    reference = sim.model.predict(test, batch_size=500, verbose=0)
    reproduced = {}
    for name, candidate in (
        ("load_encodings_to_sim", fresh.model),
        ("exported .keras", reloaded),
    ):
        outputs = candidate.predict(test, batch_size=500, verbose=0)
        reproduced[name] = dict(
            max_abs_diff=float(np.max(np.abs(outputs - reference))),
            top1_agreement=float(
                np.mean(outputs.argmax(-1) == reference.argmax(-1))
            ),
            top1=float(np.mean(outputs.argmax(-1) == labels)),
        )

    summary = dict(
        model=args.model,
        calibration_images=len(calibration),
        test_images=len(labels),
        rows=rows,
        exported=dict(
            encoding_version=encodings["version"],
            param_encodings=len(encodings["param_encodings"]),
            activation_encodings=len(encodings["activation_encodings"]),
        ),
        reproduced=reproduced,
        artifacts={key: str(path) for key, path in paths.items()},
        seconds=round(time.perf_counter() - started, 1),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(
        f"\n{args.model}, top-1 on {len(labels)} test images "
        f"(calibrated on {len(calibration)}):"
    )
    for row in rows:
        print(f"  {row['setting']:30s} {row['top1']:.2%}")
    print("\nsim plan (first layers; all in sim_summary.txt):")
    for line in plan[:4]:
        print(f"  {line}")
    exported = summary["exported"]
    print(
        f"\nexported {prefix}: encodings {exported['encoding_version']}, "
        f"{exported['param_encodings']} param and "
        f"{exported['activation_encodings']} activation tensors"
    )
    print("reloaded against the original sim:")
    for name, result in reproduced.items():
        print(
            f"  {name:22s} max |diff| {result['max_abs_diff']:.2e}, "
            f"top-1 agreement {result['top1_agreement']:.2%}"
        )
    print(f"artifacts in {out}/ ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
