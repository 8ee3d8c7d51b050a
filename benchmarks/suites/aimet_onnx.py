"""Suite ``aimet_onnx``: AIMET itself (aimet-onnx) on the reference models.

The side-by-side peer of the ``ptq`` suite's AdaRound table: the ResNet- and
MobileNetV2-style nets are exported to ONNX here (tf2onnx, the project's
ONNX-export extra), and ``benchmarks/peers/aimet_onnx_adaround.py`` runs
AIMET's own flow on them in a separate virtual environment (made by
``benchmarks/peers/setup_aimet_onnx.sh``; its Python is
``$AIMET_ONNX_PYTHON``, by default ``/work/venvs/aimet-onnx/bin/python``):
BN folding, a ``QuantizationSimModel`` with 4-bit per-channel weights and 8-
or 4-bit activations, ``tf_enhanced`` ranges, nearest rounding and AdaRound.

One table (full 10,000-image Fashion-MNIST test set): FP32 top-1 of the ONNX
model in onnxruntime, aimet-onnx nearest and AdaRound top-1, AdaRound
seconds. Calibration and AdaRound data: the first 1,024 training images in
32 batches of 32. Each run's raw result (every quantizer's settings
included) is kept in the JSON file's ``extra`` under ``"<model>/<bits>"``.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from benchmarks import harness

__all__ = ["convert_to_onnx", "run"]

MODELS = ("resnet", "mobilenet_v2")
BITS = (("W4A8", 4, 8), ("W4A4", 4, 4))
BATCH_SIZE = 32
OPSET = 17
DEFAULT_PYTHON = "/work/venvs/aimet-onnx/bin/python"
PEER_SCRIPT = (
    pathlib.Path(__file__).resolve().parent.parent
    / "peers"
    / "aimet_onnx_adaround.py"
)
SETUP_SCRIPT = "benchmarks/peers/setup_aimet_onnx.sh"
# Keras and onnxruntime FP32 top-1 must agree this closely (points).
FP32_TOLERANCE = 0.05


def _aimet_python():
    python = os.environ.get("AIMET_ONNX_PYTHON", DEFAULT_PYTHON)
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise RuntimeError(
            f"No aimet-onnx Python at {python!r}. Create the environment with "
            f"`{SETUP_SCRIPT} [VENV]` (default /work/venvs/aimet-onnx) and "
            "set AIMET_ONNX_PYTHON=VENV/bin/python for another VENV."
        )
    return python


def _restore_batch_norms(proto):
    """Turns Conv -> Mul(c) -> Add(c) chains back into BatchNormalization.

    tf2onnx folds each Keras BatchNormalization that follows a regular
    convolution into its weights, but leaves those after depthwise
    convolutions as a per-channel Mul and Add of constants. Written back as
    ``BatchNormalization(scale=c1, B=c2, mean=0, var=1, epsilon=0)`` (the
    same function) they are folded by aimet-onnx's own BN folding, instead
    of staying in the graph as two element-wise ops with quantized constant
    inputs.

    Returns:
        The number of chains rewritten; ``proto`` is changed in place.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    constants = {t.name: t for t in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def only_consumer(tensor, op_type):
        nodes = consumers.get(tensor, [])
        if len(nodes) != 1 or tensor in outputs:
            return None
        return nodes[0] if nodes[0].op_type == op_type else None

    def channel_constant(node, tensor):
        names = [n for n in node.input if n != tensor]
        if len(node.input) != 2 or len(names) != 1:
            return None
        if names[0] not in constants:
            return None
        value = numpy_helper.to_array(constants[names[0]])
        if value.ndim != 4 or value.shape[0] != 1 or value.shape[2:] != (1, 1):
            return None
        return value.reshape(-1).astype(np.float32)

    rewritten = 0
    for conv in list(graph.node):
        if conv.op_type != "Conv":
            continue
        mul = only_consumer(conv.output[0], "Mul")
        if mul is None:
            continue
        add = only_consumer(mul.output[0], "Add")
        scale = channel_constant(mul, conv.output[0])
        if add is None or scale is None:
            continue
        shift = channel_constant(add, mul.output[0])
        if shift is None or shift.shape != scale.shape:
            continue
        prefix = f"{mul.name}_as_bn"
        tensors = {
            "scale": scale,
            "B": shift,
            "mean": np.zeros_like(scale),
            "var": np.ones_like(scale),
        }
        for key, value in tensors.items():
            graph.initializer.append(
                numpy_helper.from_array(value, f"{prefix}/{key}")
            )
        bn = onnx.helper.make_node(
            "BatchNormalization",
            [conv.output[0]] + [f"{prefix}/{key}" for key in tensors],
            [add.output[0]],
            name=prefix,
            epsilon=0.0,
        )
        index = list(graph.node).index(mul)
        graph.node.remove(mul)
        graph.node.remove(add)
        graph.node.insert(index, bn)
        rewritten += 1
    used = {name for node in graph.node for name in node.input}
    for tensor in list(graph.initializer):
        if tensor.name not in used:
            graph.initializer.remove(tensor)
    onnx.checker.check_model(proto)
    return rewritten


def convert_to_onnx(model, path, check_images=None):
    """Exports a Keras model to ONNX with tf2onnx (NCHW inside, NHWC input).

    ``tf2onnx.convert.from_keras`` does not take Keras 3 models, so the model
    is wrapped in a ``tf.function`` with a batch-agnostic input signature.

    Args:
        model: a ``keras.Model`` on 28x28x1 images.
        path: where to write the ``.onnx`` file.
        check_images: optional inputs on which onnxruntime and Keras outputs
            are compared.

    Returns:
        A dict: BatchNormalization chains restored, ONNX op counts, and the
        largest absolute output difference on ``check_images`` (or None).
    """
    import collections

    import numpy as np
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec([None, 28, 28, 1], tf.float32, name="input")]

    @tf.function(input_signature=signature)
    def forward(x):
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(
        forward, input_signature=signature, opset=OPSET
    )
    restored = _restore_batch_norms(proto)
    onnx.save(proto, str(path))
    info = {
        "opset": OPSET,
        "batch_norms_restored": restored,
        "ops": dict(collections.Counter(n.op_type for n in proto.graph.node)),
        "max_abs_diff": None,
    }
    if check_images is not None:
        session = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
        ours = session.run(None, {"input": check_images})[0]
        theirs = model.predict(check_images, verbose=0)
        info["max_abs_diff"] = float(np.max(np.abs(ours - theirs)))
    return info


def _onnx_top1(path, images, labels, batch_size=500):
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )
    correct = 0
    for start in range(0, len(images), batch_size):
        scores = session.run(
            None, {"input": images[start : start + batch_size]}
        )[0]
        correct += int(
            np.sum(np.argmax(scores, -1) == labels[start : start + batch_size])
        )
    return correct / len(images)


def _run_peer(python, model_path, data_path, out_path, iterations, bits):
    _, param_bw, output_bw = bits
    command = [
        python,
        str(PEER_SCRIPT),
        "--model",
        str(model_path),
        "--data",
        str(data_path),
        "--out",
        str(out_path),
        "--iterations",
        str(iterations),
        "--param-bw",
        str(param_bw),
        "--output-bw",
        str(output_bw),
        "--batch-size",
        str(BATCH_SIZE),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    print(f"[aimet_onnx] {model_path.stem} {bits[0]}: running", flush=True)
    completed = subprocess.run(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = completed.stdout.decode(errors="replace")
    if completed.returncode != 0:
        sys.stderr.write(output[-8000:])
        raise RuntimeError(
            f"aimet-onnx run failed ({model_path.stem}, {bits[0]}), exit "
            f"status {completed.returncode}; its output's end is above."
        )
    with open(out_path, encoding="utf-8") as f:
        return json.load(f)


def _notes(raw, version, num_calibration):
    """The table's notes, with counts read from the runs' raw results."""
    batches = num_calibration // BATCH_SIZE
    counts = []
    for name in MODELS:
        runs = [r for k, r in raw.items() if k.startswith(f"{name}/")]
        weights = [q for r in runs for q in r["param_quantizers"].values()]
        uniform = all(
            q["per_channel"] and q["symmetric"] and q["bitwidth"] == 4
            for q in weights
        )
        counts.append(
            f"{name}: {len(runs[0]['param_quantizers'])} weight quantizers "
            f"({'all' if uniform else 'NOT all'} 4-bit per-channel "
            f"symmetric), {len(runs[0]['activation_quantizers'])} activation "
            f"quantizers, {runs[0]['bn_folded']} BN(s) folded by aimet-onnx, "
            f"{len(runs[0]['adaround_layers'])} layers AdaRounded"
        )
    return [
        f"aimet-onnx {version}: batch_norm_fold."
        "fold_all_batch_norms_to_weight, then QuantizationSimModel("
        "param_type='int4', activation_type='int8' or 'int4', "
        "quant_scheme='tf_enhanced', config_file=None, i.e. its 'default' "
        "alias, default_config_per_channel.json: per-channel symmetric "
        "weights for Conv/ConvTranspose/Gemm/MatMul, asymmetric activations, "
        "biases not quantized, model input and output (the softmax) "
        "quantized, Conv+Relu, Conv+Clip, Add+Relu and MatMul+Add fused).",
        f"AdaRound: aimet_onnx.apply_adaround(sim, {batches} batches of "
        f"{BATCH_SIZE}, num_iterations) on a fresh sim, with its fixed "
        "hyperparameters (reg_param 0.01, beta 20 -> 2, warm start 0.2, "
        "Adam at torch's default learning rate); it freezes the weight "
        "encodings, then compute_encodings on the same batches sets the "
        "activations'. Activation quantizers of a fresh sim pass data "
        "through, so AdaRound sees unquantized activations. onnxruntime and "
        "torch on 2 threads; AdaRound s is the apply_adaround call.",
        "; ".join(counts) + ".",
        "tf2onnx itself folds the BNs after regular convolutions into their "
        "weights; those after depthwise ones come out as Mul/Add and are "
        "written back as BatchNormalization for aimet-onnx to fold.",
    ]


def run(quick=False):
    """Runs the suite.

    Args:
        quick: 1,000 test images, 256 calibration images, 100 AdaRound
            iterations.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    import numpy as np

    from benchmarks.suites import ptq

    python = _aimet_python()
    images, labels, calibration, iterations = ptq.workload(quick)

    table = harness.Table(
        f"aimet-onnx, per-channel weights, tf_enhanced: nearest vs AdaRound "
        f"({len(calibration):,} images, {iterations:,} iterations), top-1",
        [
            "model",
            "bits",
            "FP32 (ONNX)",
            "aimet-onnx nearest",
            "aimet-onnx AdaRound",
            "AdaRound s",
        ],
        formats={
            "FP32 (ONNX)": "{:.2%}",
            "aimet-onnx nearest": "{:.2%}",
            "aimet-onnx AdaRound": "{:.2%}",
            "AdaRound s": "{:.0f}",
        },
    )
    raw, conversions, fp32_notes = {}, {}, []
    version = None
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        data_path = folder / "data.npz"
        np.savez(
            data_path,
            calibration=calibration.astype(np.float32),
            images=images.astype(np.float32),
            labels=labels.astype(np.int64),
        )
        for name in MODELS:
            model = harness.load_reference_model(name)
            if model is None:
                raise RuntimeError(f"Reference model {name!r} is not trained.")
            model_path = folder / f"{name}.onnx"
            info = convert_to_onnx(model, model_path, images[:256])
            keras_top1 = harness.top1_accuracy(model, images, labels)
            onnx_top1 = _onnx_top1(model_path, images, labels)
            info.update(keras_top1=keras_top1, onnx_top1=onnx_top1)
            conversions[name] = info
            gap = 100 * abs(keras_top1 - onnx_top1)
            if gap > FP32_TOLERANCE:
                raise RuntimeError(
                    f"{name}: onnxruntime top-1 {onnx_top1:.4%} differs from "
                    f"Keras {keras_top1:.4%} by {gap:.3f} points."
                )
            fp32_notes.append(
                f"{name}: Keras FP32 {keras_top1:.2%}, onnxruntime "
                f"{onnx_top1:.2%}; largest output difference on 256 images "
                f"{info['max_abs_diff']:.1e}; {info['batch_norms_restored']} "
                "depthwise BN(s) written back as BatchNormalization."
            )
            for bits in BITS:
                out_path = folder / f"{name}-{bits[0]}.json"
                result = _run_peer(
                    python, model_path, data_path, out_path, iterations, bits
                )
                raw[f"{name}/{bits[0]}"] = result
                version = result["aimet_onnx"]
                print(
                    f"[aimet_onnx] {name} {bits[0]}: nearest "
                    f"{result['nearest']:.4f}, AdaRound "
                    f"{result['adaround']:.4f} in {result['adaround_s']:.0f} s",
                    flush=True,
                )
                table.add_row(
                    name,
                    bits[0],
                    result["fp32_onnx"],
                    result["nearest"],
                    result["adaround"],
                    result["adaround_s"],
                )

    table.notes.extend(_notes(raw, version, len(calibration)) + fp32_notes)
    return harness.Report(
        suite="aimet_onnx",
        tables=[table],
        settings=dict(
            test_images=len(images),
            calibration_images=len(calibration),
            batch_size=BATCH_SIZE,
            adaround_iterations=iterations,
            opset=OPSET,
            aimet_onnx=version,
        ),
        quick=quick,
        extra={"conversion": conversions, "runs": raw},
    )
