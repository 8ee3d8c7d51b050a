"""Quickstart: quantize a shipped model to W8A8 and export it for devices.

    python examples/quickstart.py [--model resnet] [--out artifacts/quickstart]

Loads a trained Fashion-MNIST model and the shipped data slice, folds its
batch norms, builds a ``QuantizationSimModel`` with the TFLite-style config
(8-bit per-channel symmetric weights, 8-bit asymmetric activations after
fused Conv+ReLU), calibrates it with the ``tf_enhanced`` scheme on 1,000
training images and evaluates FP32 and simulated W8A8 on 2,000 test images.
Then it exports to ``--out``: the FP32 SavedModel, the simulated ``.keras``
model and the AIMET 0.6.1 encodings; an integer TFLite model and a QDQ ONNX
model on the sim's grids (plus the FP32 ONNX model and its encodings for
Qualcomm's converter), and runs both on the same test images. It prints
every accuracy and size, and writes a summary.
"""

import argparse
import contextlib
import json
import os
import pathlib
import re
import sys
import tempfile

# TensorFlow's C++ side logs INFO and WARNING lines on every conversion
# (grappler, MLIR, XLA); it reads their level once, when it loads, so a
# program sets it before importing TensorFlow: errors only here, unless
# TF_CPP_MIN_LOG_LEVEL is set already.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# What TensorFlow's and TFLite's C++ side print as they start on a machine
# without a GPU, before any log level applies: nothing to act on.
_STARTUP_NOTICES = re.compile(
    r"absl::InitializeLog\(\) is called"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|Created TensorFlow Lite XNNPACK delegate for CPU"
)


@contextlib.contextmanager
def startup_notices_hidden():
    """Holds back the process's stderr; replays it without start-up notices.

    The notices come from C++ (file descriptor 2), so ``sys.stderr`` alone
    cannot filter them. Everything else written meanwhile is replayed when
    the block ends, and on an error all of it is.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines()
            kept = [
                line
                for line in lines
                if failed or not _STARTUP_NOTICES.search(line)
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def weight_bytes(sim):
    """``(fp32 bytes, quantized bytes)`` of the sim's weights.

    A quantized weight takes its bitwidth per value (int32 biases 4
    bytes), a float one 4 bytes.
    """
    from aimet_keras.sim import weight_key

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


def tflite_accuracy(path, images, labels):
    """Top-1 of a TFLite model (2 threads) on float images."""
    from aimet_keras.export.tflite import load_interpreter

    interpreter = load_interpreter(model_path=str(path), num_threads=2)
    (inp,), (out,) = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    predictions = interpreter.get_tensor(out["index"])
    return float(np.mean(predictions.argmax(1) == labels)), predictions


def onnx_accuracy(path, images, labels):
    """Top-1 of an ONNX model in onnxruntime (2 threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    predictions = session.run(None, {name: images})[0]
    return float(np.mean(predictions.argmax(1) == labels)), predictions


def main():
    # TensorFlow loads with these imports: main runs with its start-up
    # notices held back.
    from aimet_keras import zoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", choices=zoo.MODEL_NAMES)
    parser.add_argument("--out", default="artifacts/quickstart")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's start-up notices too",
    )
    args = parser.parse_args()
    from aimet_keras import export_onnx
    from aimet_keras import export_tflite
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    model = zoo.load_model(args.model)
    calibration_images, _ = zoo.load_fashion_mnist_slice("calibration")
    test_images, test_labels = zoo.load_fashion_mnist_slice("test")
    _, fp32_accuracy = model.evaluate(
        test_images, test_labels, batch_size=500, verbose=0
    )
    # Deployed kernels have their batch norms folded in: fold before
    # simulating so that the sim's kernel grids are the deployed ones.
    folded, _ = ptq.fold_all_batch_norms(model)
    sim = QuantizationSimModel(folded, config_file="tflite_int8")
    sim.compute_encodings(calibration_images)
    sim.model.compile(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    sim_predictions = sim.model.predict(test_images, batch_size=500, verbose=0)
    sim_accuracy = float(np.mean(sim_predictions.argmax(1) == test_labels))

    num_params = model.count_params()
    fp32_bytes, quantized_bytes = weight_bytes(sim)
    fp32_kib, int8_kib = fp32_bytes / 1024, quantized_bytes / 1024

    out = pathlib.Path(args.out)
    paths = sim.export(out, f"{args.model}_w8a8")
    tflite = export_tflite(sim, out / f"{args.model}_int8.tflite")
    onnx = export_onnx(sim, out / f"{args.model}_qdq.onnx")
    tflite_top1, tflite_predictions = tflite_accuracy(
        tflite.path, test_images, test_labels
    )
    onnx_top1, onnx_predictions = onnx_accuracy(
        onnx.qdq_path, test_images, test_labels
    )
    sim_top1 = sim_predictions.argmax(1)
    tflite_agreement = float(np.mean(tflite_predictions.argmax(1) == sim_top1))
    onnx_agreement = float(np.mean(onnx_predictions.argmax(1) == sim_top1))
    tflite_kib = tflite.size_bytes / 1024
    summary = {
        "model": args.model,
        "test_images": int(len(test_images)),
        "fp32_accuracy": round(float(fp32_accuracy), 4),
        "w8a8_accuracy": round(float(sim_accuracy), 4),
        "fp32_size_kib": round(fp32_kib, 1),
        "w8_size_kib": round(int8_kib, 1),
        "tflite_int8_accuracy": round(tflite_top1, 4),
        "tflite_agreement_with_sim": round(tflite_agreement, 4),
        "tflite_size_kib": round(tflite_kib, 1),
        "onnx_qdq_accuracy": round(onnx_top1, 4),
        "onnx_agreement_with_sim": round(onnx_agreement, 4),
        "tflite_changes": list(tflite.changes),
    }
    paths.update(
        tflite=tflite.path,
        onnx_qdq=onnx.qdq_path,
        onnx_fp32=onnx.fp32_path,
        onnx_encodings=onnx.encodings_path,
    )
    summary["artifacts"] = {key: str(path) for key, path in paths.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    print(f"model: {args.model} ({num_params:,} parameters)")
    print(f"test images: {len(test_images)} (shipped Fashion-MNIST slice)")
    print("| model | accuracy | top-1 = sim's | size |")
    print("|---|---|---|---|")
    print(
        f"| FP32 (Keras) | {fp32_accuracy:.2%} | | {fp32_kib:.1f} KiB weights |"
    )
    print(
        f"| W8A8 simulated | {sim_accuracy:.2%} | "
        f"| {int8_kib:.1f} KiB weights |"
    )
    print(
        f"| int8 TFLite | {tflite_top1:.2%} | {tflite_agreement:.2%} "
        f"| {tflite_kib:.1f} KiB file |"
    )
    print(
        f"| ONNX QDQ (onnxruntime) | {onnx_top1:.2%} | {onnx_agreement:.2%} | |"
    )
    print(f"artifacts in {out.resolve()}:")
    print(f"  {paths['saved_model'].name}/  FP32 SavedModel (TFLite, QNN)")
    print(f"  {paths['keras'].name}  the simulated Keras model")
    print(f"  {paths['encodings'].name}  AIMET encodings (0.6.1)")
    print(f"  {tflite.path.name}  integer TFLite model (the sim's grids)")
    print(f"  {onnx.qdq_path.name}  QDQ ONNX model (the sim's grids)")
    print(
        f"  {onnx.fp32_path.name} + {onnx.encodings_path.name}  FP32 ONNX "
        "and its AIMET encodings (qnn-onnx-converter)"
    )


if __name__ == "__main__":
    with (
        contextlib.nullcontext()
        if "--verbose" in sys.argv[1:]
        else startup_notices_hidden()
    ):
        main()
