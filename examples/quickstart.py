"""Quickstart: calibrate and simulate W8A8 on a shipped reference model.

    python examples/quickstart.py [--model resnet] [--out artifacts/quickstart]

Loads a trained Fashion-MNIST model and the shipped data slice, calibrates
8-bit per-channel symmetric weights and 8-bit asymmetric activations
(AIMET's ``tf_enhanced`` scheme) on 1,000 training images, then evaluates the
FP32 and the simulated-quantized model on 2,000 test images. It prints both
accuracies and the model sizes, and writes the encodings (AIMET 0.6.1 entry
fields) and a summary to ``--out``.

This example builds its simulation from the grid primitives
(``aimet_keras.quant``) directly; ``QuantizationSimModel`` wraps the same
steps for any model.
"""

import argparse
import json
import pathlib

import keras
import numpy as np

from aimet_keras import export
from aimet_keras import quant
from aimet_keras import zoo
from aimet_keras.quant import observers
from aimet_keras.sim import weight_channel_axis

BITWIDTH = 8
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


class OutputFakeQuant(keras.layers.Layer):
    """Runs a layer, then observes or fake-quantizes its output."""

    def __init__(self, layer, quantize_output=True, **kwargs):
        super().__init__(name=f"{layer.name}_q", **kwargs)
        self.layer = layer
        self.quantize_output = quantize_output
        self.observer = observers.SqnrObserver(name=f"{layer.name}_observer")
        self.encoding = None

    def build(self, input_shape):
        self.layer.build(input_shape)

    def compute_output_spec(self, inputs, mask=None):
        return self.layer.compute_output_spec(inputs)

    def call(self, inputs, mask=None):
        outputs = self.layer(inputs)
        if not self.quantize_output:
            return outputs
        if self.encoding is None:
            self.observer.update(outputs)
            return outputs
        return quant.quantize_dequantize(outputs, self.encoding)


def quantize_weights(layers):
    """Fake-quantizes every kernel in place; returns their encodings."""
    encodings = {}
    for layer in layers:
        for kernel in layer.weights:
            if kernel.name not in KERNEL_NAMES:
                continue
            axis = weight_channel_axis(layer, kernel.name)
            observer = observers.MinMaxObserver(axis=axis)
            observer.update(kernel)
            encoding = observer.compute_encoding(BITWIDTH, is_symmetric=True)
            kernel.assign(
                quant.quantize_dequantize(kernel, encoding, axis=axis)
            )
            encodings[f"{layer.name}/{kernel.name}:0"] = (
                encoding,
                int(np.prod(kernel.shape)),
            )
    return encodings


def fused_outputs(model):
    """Names of layers whose output feeds only a BatchNormalization or ReLU.

    As in AIMET's default config (Conv+BN pairs, Conv+ReLU and Add+ReLU
    supergroups), those outputs stay in float: the target fuses the ops.
    """
    producers = {id(layer.output): layer.name for layer in model.layers}
    consumers = {}
    for layer in model.layers[1:]:
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        for tensor in inputs:
            consumers.setdefault(producers.get(id(tensor)), []).append(layer)
    fusing = (keras.layers.BatchNormalization, keras.layers.ReLU)
    return {
        name
        for name, users in consumers.items()
        if len(users) == 1 and isinstance(users[0], fusing)
    }


def simulate(model, calibration_images):
    """Returns a W8A8 simulation of ``model`` and its encodings."""
    fused = fused_outputs(model)
    wrapped = keras.models.clone_model(
        model,
        clone_function=lambda layer: OutputFakeQuant(
            layer.__class__.from_config(layer.get_config()),
            quantize_output=layer.name not in fused,
        ),
    )
    for original, wrapper in zip(model.layers[1:], wrapped.layers[1:]):
        wrapper.layer.set_weights(original.get_weights())
    param_encodings = quantize_weights([w.layer for w in wrapped.layers[1:]])
    wrapped.predict(calibration_images, batch_size=250, verbose=0)
    activation_encodings = {}
    for wrapper in wrapped.layers[1:]:
        if not wrapper.quantize_output:
            continue
        wrapper.encoding = wrapper.observer.compute_encoding(BITWIDTH)
        activation_encodings[f"{wrapper.layer.name}:0"] = wrapper.encoding
    # Rebuild the traced functions now that encodings are set.
    wrapped.compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return wrapped, param_encodings, activation_encodings


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
    sim, param_encodings, activation_encodings = simulate(
        model, calibration_images
    )
    _, sim_accuracy = sim.evaluate(
        test_images, test_labels, batch_size=500, verbose=0
    )

    num_params = model.count_params()
    quantized_params = sum(size for _, size in param_encodings.values())
    fp32_kib = num_params * 4 / 1024
    int8_kib = (quantized_params + (num_params - quantized_params) * 4) / 1024

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export.write_encodings(
        out / f"{args.model}_w8a8.encodings",
        export.encodings_to_dict(
            {name: enc for name, (enc, _) in param_encodings.items()},
            activation_encodings,
        ),
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
