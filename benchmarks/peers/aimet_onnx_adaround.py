"""AIMET's own post-training flow on an ONNX model: nearest vs AdaRound.

Runs inside the aimet-onnx virtual environment (see ``setup_aimet_onnx.sh``),
not the project's: it imports only numpy, onnx, onnxruntime, torch and
aimet_onnx. ``benchmarks.suites.aimet_onnx`` converts the Keras reference
models to ONNX, writes the data file and runs this script once per model and
bit width.

Steps, all with aimet-onnx's own API:

1. FP32 top-1 of the ONNX model in onnxruntime, before and after
   ``aimet_onnx.batch_norm_fold.fold_all_batch_norms_to_weight``.
2. Nearest rounding: ``QuantizationSimModel`` on the folded model
   (``param_type=int<param-bw>``, ``activation_type=int<output-bw>``,
   ``quant_scheme="tf_enhanced"``, the default config, which in aimet-onnx
   2.42 is ``default_config_per_channel.json``: per-channel weights for
   Conv, ConvTranspose, Gemm and MatMul, symmetric weights, asymmetric
   activations), ``compute_encodings`` on the calibration batches, top-1.
3. AdaRound: a fresh sim with the same settings, ``aimet_onnx.apply_adaround``
   on the calibration batches (timed; it freezes the weight encodings and
   writes the rounded weights into the sim), then ``compute_encodings`` on
   the same batches for the activations, top-1.

Usage::

    python aimet_onnx_adaround.py --model m.onnx --data d.npz \\
        --out r.json --iterations 2000 --param-bw 4 --output-bw 8

``d.npz`` holds ``calibration`` (model inputs), ``images`` and ``labels``
(the evaluation set).
"""

import argparse
import copy
import json
import os
import platform
import time

import aimet_onnx
import numpy as np
import onnx
import onnxruntime as ort
import torch
from aimet_onnx import batch_norm_fold
from aimet_onnx.adaround import adaround_loss
from aimet_onnx.quantsim import QuantizationSimModel

THREADS = 2
EVAL_BATCH = 500
SEED = 0


def _session_options():
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return options


def _batches(name, images, batch_size):
    return [
        {name: images[i : i + batch_size]}
        for i in range(0, len(images), batch_size)
    ]


def _top1(session, name, images, labels):
    correct = 0
    for start in range(0, len(images), EVAL_BATCH):
        batch = images[start : start + EVAL_BATCH]
        scores = session.run(None, {name: batch})[0]
        correct += int(
            np.sum(
                np.argmax(scores, axis=-1) == labels[start : start + EVAL_BATCH]
            )
        )
    return correct / len(images)


def _fp32_top1(model, name, images, labels):
    session = ort.InferenceSession(
        model.SerializeToString(),
        sess_options=_session_options(),
        providers=["CPUExecutionProvider"],
    )
    return _top1(session, name, images, labels)


def _sim(model, args):
    return QuantizationSimModel(
        copy.deepcopy(model),
        param_type=f"int{args.param_bw}",
        activation_type=f"int{args.output_bw}",
        quant_scheme="tf_enhanced",
        config_file=args.config_file,
        providers=["CPUExecutionProvider"],
        session_options_kwargs={
            "intra_op_num_threads": THREADS,
            "inter_op_num_threads": 1,
        },
    )


def _param_quantizers(sim):
    """Per parameter quantizer: bit width, per-channel, symmetric, frozen."""
    out = {}
    for name in sim.param_names:
        q = sim.qc_quantize_op_dict[name]
        if not q.enabled:
            continue
        out[name] = {
            "bitwidth": q.bitwidth,
            "per_channel": bool(q.quant_info.usePerChannelMode),
            "symmetric": bool(q.use_symmetric_encodings),
            "frozen": bool(q.is_encoding_frozen()),
        }
    return out


def _activation_quantizers(sim):
    out = {}
    for name in sim.activation_names:
        q = sim.qc_quantize_op_dict[name]
        if q.enabled:
            out[name] = {
                "bitwidth": q.bitwidth,
                "symmetric": bool(q.use_symmetric_encodings),
            }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--param-bw", type=int, default=4)
    parser.add_argument("--output-bw", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--config-file",
        default=None,
        help="aimet-onnx quantsim config (default: its 'default' alias)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(THREADS)
    np.random.seed(SEED)
    torch.manual_seed(SEED)

    data = np.load(args.data)
    calibration = data["calibration"].astype(np.float32)
    images = data["images"].astype(np.float32)
    labels = data["labels"].astype(np.int64)

    model = onnx.load(args.model)
    name = model.graph.input[0].name
    batches = _batches(name, calibration, args.batch_size)
    result = {
        "aimet_onnx": aimet_onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "model": os.path.basename(args.model),
        "settings": {
            "param_type": f"int{args.param_bw}",
            "activation_type": f"int{args.output_bw}",
            "quant_scheme": "tf_enhanced",
            "config_file": args.config_file or "default",
            "iterations": args.iterations,
            "batch_size": args.batch_size,
            "calibration_images": len(calibration),
            "calibration_batches": len(batches),
            "test_images": len(images),
            "threads": THREADS,
            "seed": SEED,
            "adaround_reg_param": adaround_loss._REG_PARAM,
            "adaround_beta_range": list(adaround_loss._BETA_RANGE),
            "adaround_warm_start": adaround_loss._WARM_START,
        },
    }

    result["fp32_onnx"] = _fp32_top1(model, name, images, labels)
    folded = copy.deepcopy(model)
    conv_bns, bn_convs = batch_norm_fold.fold_all_batch_norms_to_weight(folded)
    result["bn_folded"] = len(conv_bns) + len(bn_convs)
    result["bn_left"] = sum(
        n.op_type == "BatchNormalization" for n in folded.graph.node
    )
    result["fp32_folded"] = _fp32_top1(folded, name, images, labels)

    sim = _sim(folded, args)
    started = time.perf_counter()
    sim.compute_encodings(batches)
    result["nearest_encodings_s"] = time.perf_counter() - started
    result["nearest"] = _top1(sim.session, name, images, labels)
    result["param_quantizers"] = _param_quantizers(sim)
    result["activation_quantizers"] = _activation_quantizers(sim)
    del sim

    sim = _sim(folded, args)
    started, cpu_started = time.perf_counter(), time.process_time()
    aimet_onnx.apply_adaround(sim, batches, num_iterations=args.iterations)
    result["adaround_s"] = time.perf_counter() - started
    result["adaround_cpu_s"] = time.process_time() - cpu_started
    result["load_average_1m"] = os.getloadavg()[0]
    frozen = _param_quantizers(sim)
    result["adaround_layers"] = sorted(
        k for k, v in frozen.items() if v["frozen"]
    )
    sim.compute_encodings(batches)
    result["adaround"] = _top1(sim.session, name, images, labels)

    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(
        json.dumps({k: v for k, v in result.items() if "quantizers" not in k})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
