"""Quickstart: calibrate and simulate W8A8 on a shipped reference model.

    python examples/quickstart.py [--model resnet] [--out artifacts/quickstart]

Loads a trained Fashion-MNIST model and the shipped data slice, builds a
``QuantizationSimModel`` with AIMET's HTP-style config (8-bit per-channel
symmetric weights, 8-bit asymmetric activations, fused Conv+BN+ReLU
outputs kept in float), calibrates it with the ``tf_enhanced`` scheme on
1,000 training images, then evaluates FP32 and simulated W8A8 on 2,000 test
images. It prints both accuracies and the model sizes, and writes the
encodings (AIMET 0.6.1) and a summary to ``--out``.
"""

import argparse
import json
import pathlib

import numpy as np

from aimet_keras import export
from aimet_keras import zoo
from aimet_keras.sim import QuantizationSimModel


def collect_encodings(sim):
    """``(param, activation)`` encodings of a calibrated simulation.

    Params are named ``<layer>/<weight>:0``, outputs ``<layer>:<index>``
    and quantized inputs ``<layer>/input:<index>``.
    """
    params, activations = {}, {}
    for wrapper in sim.quant_wrappers():
        named = [
            (params, f"{wrapper.name}/{weight}:0", quantizer)
            for weight, quantizer in wrapper.param_quantizers.items()
        ]
        named += [
            (activations, f"{wrapper.name}/input:{index}", quantizer)
            for index, quantizer in enumerate(wrapper.input_quantizers)
        ]
        named += [
            (activations, f"{wrapper.name}:{index}", quantizer)
            for index, quantizer in enumerate(wrapper.output_quantizers)
        ]
        for table, name, quantizer in named:
            encoding = quantizer.encoding  # recomputed on every read
            if encoding is not None:
                table[name] = encoding
    return params, activations


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", choices=zoo.MODEL_NAMES)
    parser.add_argument("--out", default="artifacts/quickstart")
    args = parser.parse_args()

    model = zoo.load_model(args.model)
    calibration_images, _ = zoo.load_fashion_mnist_slice("calibration")
    test_images, test_labels = zoo.load_fashion_mnist_slice("test")
    _, fp32_accuracy = model.evaluate(
        test_images, test_labels, batch_size=500, verbose=0
    )
    sim = QuantizationSimModel(model, config_file="htp")
    sim.compute_encodings(calibration_images)
    sim.model.compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    _, sim_accuracy = sim.model.evaluate(
        test_images, test_labels, batch_size=500, verbose=0
    )

    params, activations = collect_encodings(sim)
    num_params = model.count_params()
    quantized_params = sum(
        int(np.prod(w.shape))
        for wrapper in sim.quant_wrappers()
        for w in wrapper.layer.weights
        if f"{wrapper.name}/{w.name}:0" in params
    )
    fp32_kib = num_params * 4 / 1024
    int8_kib = (quantized_params + (num_params - quantized_params) * 4) / 1024

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export.write_encodings(
        out / f"{args.model}_w8a8.encodings",
        export.encodings_to_dict(params, activations),
    )
    summary = {
        "model": args.model,
        "test_images": int(len(test_images)),
        "fp32_accuracy": round(float(fp32_accuracy), 4),
        "w8a8_accuracy": round(float(sim_accuracy), 4),
        "fp32_size_kib": round(fp32_kib, 1),
        "w8_size_kib": round(int8_kib, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(f"model: {args.model} ({num_params:,} parameters)")
    print(f"test images: {len(test_images)} (shipped Fashion-MNIST slice)")
    print("| model | accuracy | weights size |")
    print("|---|---|---|")
    print(f"| FP32 | {fp32_accuracy:.2%} | {fp32_kib:.1f} KiB |")
    print(f"| W8A8 simulated | {sim_accuracy:.2%} | {int8_kib:.1f} KiB |")
    print(f"artifacts: {out.resolve()}")


if __name__ == "__main__":
    main()
