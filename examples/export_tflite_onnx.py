"""Export a sim to integer TFLite (int8 and 16x8) and QDQ ONNX, and run them.

    python examples/export_tflite_onnx.py [--model resnet] [--out DIR]

Needs the ``onnx`` extra (``pip install -e ".[onnx]"``: tf2onnx, onnx,
onnxruntime). On a shipped Fashion-MNIST model, batch norms folded
(``ptq.fold_for_deployment``), calibrated on 256 training images:

* ``export_tflite(sim, path)``: an int8 TFLite model on the W8A8 sim's
  grids (``tflite_int8`` config), with float input and output;
* ``export_tflite(sim16, path, mode="16x8")``: 16-bit activations, 8-bit
  weights, from a sim built with the ``tflite_16x8`` config and
  ``default_output_bw=16``;
* ``export_onnx(sim, path)``: the QDQ ONNX model, plus the FP32 ONNX model
  and its AIMET encodings for Qualcomm's converter.

Each exported model is run on the 2,000 shipped test images (the TFLite
interpreter, onnxruntime on CPU) and compared with the sim it came from:
top-1, how often its top-1 class is the sim's, and the largest difference
of the output probabilities. The FP32 ONNX model is compared with the FP32
Keras model. It prints the table, the ``changes`` each exporter reported
(where the target departs from the sim), and writes ``summary.json`` and
the models to ``--out``.
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import numpy as np  # noqa: E402

from aimet_keras import export_onnx  # noqa: E402
from aimet_keras import export_tflite  # noqa: E402
from aimet_keras import ptq  # noqa: E402
from aimet_keras import zoo  # noqa: E402
from aimet_keras.export.tflite import load_interpreter  # noqa: E402
from aimet_keras.sim import QuantizationSimModel  # noqa: E402

BATCH = 500


def run_tflite(path, images):
    """The TFLite model's outputs on ``images``, in batches."""
    interpreter = load_interpreter(model_path=str(path), num_threads=2)
    (source,) = interpreter.get_input_details()
    (target,) = interpreter.get_output_details()
    outputs = []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH]
        interpreter.resize_tensor_input(source["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"]))
    return np.concatenate(outputs)


def run_onnx(path, images):
    """The ONNX model's outputs on ``images`` (onnxruntime, CPU)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run(None, {name: images[i : i + BATCH]})[0]
            for i in range(0, len(images), BATCH)
        ]
    )


def compare(outputs, reference, labels):
    """Top-1, top-1 agreement with ``reference`` and the largest gap."""
    return dict(
        top1=float(np.mean(outputs.argmax(-1) == labels)),
        agrees_with_reference=float(
            np.mean(outputs.argmax(-1) == reference.argmax(-1))
        ),
        max_abs_diff=float(np.max(np.abs(outputs - reference))),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", choices=zoo.MODEL_NAMES)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument(
        "--out", default="artifacts/examples/export_tflite_onnx"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    out = pathlib.Path(args.out)
    calibration = zoo.load_fashion_mnist_slice("calibration")[0]
    calibration = calibration[: args.calibration]
    test, labels = zoo.load_fashion_mnist_slice("test")
    model = zoo.load_model(args.model, compile=False)
    folded = ptq.fold_for_deployment(model)
    fp32 = folded.predict(test, batch_size=BATCH, verbose=0)

    sim = QuantizationSimModel(folded, config_file="tflite_int8")
    sim.compute_encodings(calibration, verbose=0)
    simulated = sim.model.predict(test, batch_size=BATCH, verbose=0)
    sim16 = QuantizationSimModel(
        folded, config_file="tflite_16x8", default_output_bw=16
    )
    sim16.compute_encodings(calibration, verbose=0)
    simulated16 = sim16.model.predict(test, batch_size=BATCH, verbose=0)

    int8 = export_tflite(sim, out / f"{args.model}_int8.tflite")
    int16 = export_tflite(sim16, out / f"{args.model}_16x8.tflite", mode="16x8")
    onnx = export_onnx(sim, out / f"{args.model}_qdq.onnx")

    rows = [
        dict(name="FP32 Keras", reference="-", **compare(fp32, fp32, labels)),
        dict(
            name="W8A8 sim",
            reference="FP32 Keras",
            **compare(simulated, fp32, labels),
        ),
        dict(
            name="int8 TFLite",
            reference="W8A8 sim",
            path=str(int8.path),
            size_bytes=int8.size_bytes,
            changes=list(int8.changes),
            **compare(run_tflite(int8.path, test), simulated, labels),
        ),
        dict(
            name="W16A8 sim",
            reference="FP32 Keras",
            **compare(simulated16, fp32, labels),
        ),
        dict(
            name="16x8 TFLite",
            reference="W16A8 sim",
            path=str(int16.path),
            size_bytes=int16.size_bytes,
            changes=list(int16.changes),
            **compare(run_tflite(int16.path, test), simulated16, labels),
        ),
        dict(
            name="ONNX QDQ",
            reference="W8A8 sim",
            path=str(onnx.qdq_path),
            size_bytes=onnx.qdq_path.stat().st_size,
            changes=list(onnx.changes),
            **compare(run_onnx(onnx.qdq_path, test), simulated, labels),
        ),
        dict(
            name="ONNX FP32",
            reference="FP32 Keras",
            path=str(onnx.fp32_path),
            size_bytes=onnx.fp32_path.stat().st_size,
            encodings=str(onnx.encodings_path),
            **compare(run_onnx(onnx.fp32_path, test), fp32, labels),
        ),
    ]
    summary = dict(
        model=args.model,
        calibration_images=len(calibration),
        test_images=len(labels),
        rows=rows,
        seconds=round(time.perf_counter() - started, 1),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(f"\n{args.model}, {len(labels)} test images:\n")
    print("| model | top-1 | top-1 = reference's | max abs diff | reference |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['name']} | {row['top1']:.2%} "
            f"| {row['agrees_with_reference']:.2%} "
            f"| {row['max_abs_diff']:.4f} | {row['reference']} |"
        )
    for row in rows:
        for change in row.get("changes", ()):
            print(f"{row['name']} change: {change}")
    print("\nfiles:")
    for row in rows:
        if "path" in row:
            print(
                f"  {row['name']:12s} {row['path']}  "
                f"{row['size_bytes'] / 1024:,.1f} KiB"
            )
    print(f"summary.json in {out}/ ({summary['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
