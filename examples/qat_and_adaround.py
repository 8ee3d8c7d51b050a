"""Quantization-aware training, and AdaRound at the end of training.

    python examples/qat_and_adaround.py [--model mobilenet_v2] [--epochs 2]
        [--out artifacts/qat]

Two ways a training script ends with an integer model, on a shipped
Fashion-MNIST model and the shipped data slice (1,000 training images,
2,000 test images):

1. QAT at W4A8: ``quantize_model`` (split for deployment, batch norms
   folded, the TFLite config, range learning from min/max ranges), then
   ``fit`` with ``FreezeActivationEncodings`` for the last epoch and
   ``ExportBestEpoch`` writing the best epoch's TFLite model.
2. Post-training: keep training the float model for an epoch, and let
   ``AdaroundAtTrainEnd`` AdaRound its weights to 4 bits when ``fit`` ends
   and export the TFLite model.

It prints top-1 for FP32, W4A8 before and after QAT, and W4A8 AdaRound, and
writes ``summary.json`` to ``--out``.
"""

import argparse
import json
import pathlib

import keras
import numpy as np

from aimet_keras import ptq
from aimet_keras import qat
from aimet_keras import quantize_model
from aimet_keras import zoo
from aimet_keras.sim import quantsim


def top1(model, images, labels):
    """Top-1 accuracy, batched."""
    predictions = model.predict(images, batch_size=500, verbose=0)
    return float(np.mean(predictions.argmax(-1) == labels))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="mobilenet_v2", choices=zoo.MODEL_NAMES
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="artifacts/qat")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    train, train_labels = zoo.load_fashion_mnist_slice("calibration")
    test, test_labels = zoo.load_fashion_mnist_slice("test")
    model = zoo.load_model(args.model)
    summary = {"model": args.model, "fp32": top1(model, test, test_labels)}

    # 1. QAT at W4A8.
    quantized = quantize_model(
        model,
        train,
        config_file="tflite_int8",
        default_param_bw=4,
        quant_scheme="training_range_learning_with_tf_init",
    )
    summary["w4a8_before_qat"] = top1(quantized, test, test_labels)
    quantized.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    best = qat.ExportBestEpoch(
        quantsim.as_simulation(quantized),
        out,
        f"{args.model}_w4a8_qat",
        monitor="val_accuracy",
        formats=("tflite",),
    )
    quantized.fit(
        train,
        train_labels,
        validation_data=(test[:500], test_labels[:500]),
        epochs=args.epochs,
        batch_size=32,
        verbose=0,
        callbacks=[
            qat.FreezeActivationEncodings(after_epoch=args.epochs - 1),
            best,
        ],
    )
    summary["w4a8_after_qat"] = top1(quantized, test, test_labels)
    summary["qat_tflite"] = str(best.paths["tflite"].path)

    # 2. AdaRound when training ends.
    adaround = ptq.AdaroundAtTrainEnd(
        train,
        tflite_path=out / f"{args.model}_w4a8_adaround.tflite",
        encodings_path=out,
        verbose=0,
        config_file="tflite_int8",
        default_param_bw=4,
        num_iterations=500,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-5),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(train, train_labels, epochs=1, verbose=0, callbacks=[adaround])
    summary["fp32_after_epoch"] = top1(model, test, test_labels)
    summary["w4a8_adaround"] = top1(adaround.sim.model, test, test_labels)
    summary["adaround_tflite"] = str(adaround.exported.path)

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{args.model}, top-1 on {len(test_labels)} test images:")
    for key in (
        "fp32",
        "w4a8_before_qat",
        "w4a8_after_qat",
        "fp32_after_epoch",
        "w4a8_adaround",
    ):
        print(f"  {key:18s} {summary[key]:.2%}")
    print(
        f"TFLite models: {summary['qat_tflite']}, {summary['adaround_tflite']}"
    )


if __name__ == "__main__":
    main()
