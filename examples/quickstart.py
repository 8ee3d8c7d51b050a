"""Quickstart: calibrate and simulate W8A8 on a shipped reference model.

    python examples/quickstart.py [--model resnet] [--out artifacts/quickstart]

Loads a trained Fashion-MNIST model and the shipped data slice, builds a
``QuantizationSimModel`` with AIMET's HTP-style config (8-bit per-channel
symmetric weights, 8-bit asymmetric activations, fused Conv+BN+ReLU
outputs kept in float), calibrates it with the ``tf_enhanced`` scheme on
1,000 training images, then evaluates FP32 and simulated W8A8 on 2,000 test
images. It prints both accuracies and the model sizes, and exports to
``--out``: the FP32 SavedModel, the simulated ``.keras`` model, the AIMET
0.6.1 encodings and a summary.
"""

import argparse
import json
import pathlib

import numpy as np

from aimet_keras import zoo
from aimet_keras.sim import QuantizationSimModel
from aimet_keras.sim import weight_key


def weight_bytes(sim):
    """``(fp32 bytes, quantized bytes)`` of the sim's weights.

    A quantized weight takes its bitwidth per value (int32 biases 4
    bytes), a float one 4 bytes.
    """
    fp32 = quantized = 0
    for wrapper in sim.quant_wrappers():
        for weight in wrapper.layer.weights:
            count = int(np.prod(weight.shape))
            key = weight_key(wrapper.layer, weight)
            quantizer = wrapper.param_quantizers.get(key)
            bits = quantizer.bitwidth if quantizer and quantizer.enabled else 32
            fp32 += 4 * count
            quantized += count * bits // 8
    return fp32, quantized


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

    num_params = model.count_params()
    fp32_bytes, quantized_bytes = weight_bytes(sim)
    fp32_kib, int8_kib = fp32_bytes / 1024, quantized_bytes / 1024

    out = pathlib.Path(args.out)
    paths = sim.export(out, f"{args.model}_w8a8")
    summary = {
        "model": args.model,
        "test_images": int(len(test_images)),
        "fp32_accuracy": round(float(fp32_accuracy), 4),
        "w8a8_accuracy": round(float(sim_accuracy), 4),
        "fp32_size_kib": round(fp32_kib, 1),
        "w8_size_kib": round(int8_kib, 1),
    }
    summary["artifacts"] = {key: str(path) for key, path in paths.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(f"model: {args.model} ({num_params:,} parameters)")
    print(f"test images: {len(test_images)} (shipped Fashion-MNIST slice)")
    print("| model | accuracy | weights size |")
    print("|---|---|---|")
    print(f"| FP32 | {fp32_accuracy:.2%} | {fp32_kib:.1f} KiB |")
    print(f"| W8A8 simulated | {sim_accuracy:.2%} | {int8_kib:.1f} KiB |")
    print(f"artifacts in {out.resolve()}:")
    print(f"  {paths['saved_model'].name}/  FP32 SavedModel (TFLite, QNN)")
    print(f"  {paths['keras'].name}  the simulated Keras model")
    print(f"  {paths['encodings'].name}  AIMET encodings (0.6.1)")


if __name__ == "__main__":
    main()
