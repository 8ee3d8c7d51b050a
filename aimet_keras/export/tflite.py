"""Integer TFLite models that compute what the simulation predicted.

:func:`export_tflite` traces the sim with TF's fake-quantization ops
carrying the sim's grids (:mod:`aimet_keras.export.deployment`) and lets
the TFLite converter turn them into tensor quantization parameters: the
converter does not re-calibrate, so every activation, weight and bias of
the ``.tflite`` file is on the sim's grid.

What TFLite cannot express is refused before anything is converted, with
the change to make; what the converter changes on its own is reported:

=====================================  =====================================
sim                                    TFLite
=====================================  =====================================
8-bit activations (int8 mode)          int8, the sim's scale and zero point
16-bit symmetric activations (16x8)    int16, zero point 0
fewer-bit activations (A4)             stored in int8 with the same step, a
                                       clip keeps the sim's range (exact)
symmetric 8-bit weights                int8, zero point 0, narrow range;
                                       level -128 is clipped to -127
                                       (reported)
fewer-bit weights (W4)                 stored in int8 with the same step
                                       (exact; the file keeps 8 bits)
asymmetric weights, > 8-bit weights,   refused: TFLite's integer kernels
fp16 tensors, > 8-bit activations in   take none of these
int8 mode
32-bit bias                            int32 with scale input x weight
                                       (the converter's own rounding)
PReLU (int8 mode)                      int8 PRELU, alpha on the sim's
                                       grid (rewritten after conversion:
                                       the converter leaves it float);
                                       16x8 is refused (TFLite has no
                                       int16 PRELU)
LayerNormalization (sim built with a    MEAN, SUB, BATCH_MATMUL (sum of
tflite config: its intermediates are   squares), RSQRT, MUL, then one
quantized, see                         per-channel affine op (1x1
:mod:`aimet_keras.sim.layer_norm`)     DEPTHWISE_CONV_2D), on the sim's
                                       grids; 16x8: TFLite's int16 RSQRT
                                       is a lookup table, within about
                                       0.5% (reported); other
                                       LayerNormalizations are refused
Add of three or more inputs (BERT's    a chain of two-input int8 ADDs; a
embeddings)                            sim built with a tflite config
                                       quantizes the partial sums (see
                                       :func:`aimet_keras.sim.internals.
                                       partial_sums`); with other configs
                                       the export is not fully integer
Embedding, slice outputs               TFLite's GATHER and STRIDED_SLICE
                                       keep their input's grid; the tflite
                                       configs leave these outputs
                                       unquantized, as TFLite computes them
axes the Keras model leaves unknown    dynamic in the file (any length
(a sequence length)                    after ``resize_tensor_input``);
                                       ``input_shapes`` fixes them
softmax, logistic, tanh outputs        TFLite fixes their output grids
                                       (the tflite configs pin the sim's to
                                       them); other grids are requantized
                                       (reported)
=====================================  =====================================
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import typing

import numpy as np
import tensorflow as tf

from aimet_keras import _quiet
from aimet_keras.export import deployment as deployment_lib
from aimet_keras.export import staging as staging_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import export as sim_export
from aimet_keras.sim import layer_norm as layer_norm_lib
from aimet_keras.sim import quantsim as quantsim_lib

if typing.TYPE_CHECKING:
    import keras

    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = [
    "TFLiteExport",
    "export_tflite",
    "load_interpreter",
    "run_tflite",
    "tflite_ops",
]

_LOG = logging.getLogger("aimet_keras")

MODES = ("int8", "16x8")
_IO_DTYPES = {
    "int8": {"float32": tf.float32, "int8": tf.int8},
    "16x8": {"float32": tf.float32, "int16": tf.int16},
}
_BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """What :func:`export_tflite` wrote.

    Attributes:
        path: the ``.tflite`` file.
        mode: ``"int8"`` or ``"16x8"``.
        io_dtype: the model's input and output type.
        changes: where the TFLite model departs from the sim, one sentence
            each (empty when it computes the sim's grids throughout).
        size_bytes: the file's size.
        layer_tensors: ``{layer name: TFLite tensor name}``: the tensor that
            holds each layer's output (a layer fused into the next op, such
            as a Conv into its ReLU, has none). For
            :mod:`aimet_keras.export.layer_outputs`.
    """

    path: pathlib.Path
    mode: str
    io_dtype: str
    changes: tuple
    size_bytes: int
    layer_tensors: dict = dataclasses.field(default_factory=dict)


def _unfolded_batch_norms(sim):
    """``[(layer, bn)]`` where a BatchNormalization follows a weighted layer.

    The converter folds such a BN into the kernel after the kernel's
    fake-quant op, so the sim's kernel grid cannot hold (and the converter
    leaves the pair in float): the pairs BN folding would fold backward.
    """
    from aimet_keras.ptq import batch_norm_fold

    return [
        (layer, bn)
        for layer, bn, direction in batch_norm_fold.find_bn_pairs(sim._prepared)
        if direction == "backward"
    ]


def _check_sim(sim, mode):
    """Refuses what TFLite cannot express; returns the changes it makes.

    Raises:
        ValueError: naming the tensor and the config change that fixes it.
    """
    sim_export._check_calibrated(sim)
    separable = [
        w.name
        for w in sim.quant_wrappers()
        if type(w.layer).__name__ == "SeparableConv2D"
    ]
    if separable:
        raise ValueError(
            f"SeparableConv2D layer(s) {separable[:4]}: TFLite runs each as "
            "DepthwiseConv2D + Conv2D with an int8 tensor between them that "
            "the sim does not quantize. Split them before folding and "
            "building the sim (exact): model = "
            "aimet_keras.graph.split_separable_convolutions(model)."
        )
    unfused = [
        f"{w.name} ({type(w.layer).__name__}, {activation})"
        for w in sim.quant_wrappers()
        for activation in [prepare_lib.unfused_activation(w.layer)]
        if activation is not None
    ]
    if unfused:
        raise ValueError(
            f"Layer(s) {unfused[:4]} end in an activation TFLite does not "
            "fuse: it runs as an op of its own, on an int8 tensor the sim "
            "does not quantize. Split them before folding and building the "
            "sim (exact): model = aimet_keras.graph.split_activations(model)."
        )
    unfolded = _unfolded_batch_norms(sim)
    if unfolded:
        listed = ", ".join(f"{a} -> {b}" for a, b in unfolded[:4])
        raise ValueError(
            f"The sim quantizes kernels that BatchNormalization scales "
            f"afterwards ({listed}{' ...' if len(unfolded) > 4 else ''}); "
            "TFLite folds the BN into the kernel, so the sim's kernel grids "
            "would not be the deployed ones. Fold first and build the sim on "
            "the folded model: folded, _ = "
            "aimet_keras.ptq.fold_all_batch_norms(model)."
        )
    changes = _layer_norm_changes(sim, mode)
    roles = deployment_lib.quantizer_roles(sim)
    activation_bits = 8 if mode == "int8" else 16
    errors = []
    for wrapper in sim.quant_wrappers():
        weights = dict(
            (id(q), variable) for variable, q in wrapper.quantized_weights()
        )
        for quantizer in wrapper.quantizers:
            if not quantizer.enabled:
                continue
            role = roles[id(quantizer)]
            what = role.describe()
            if quantizer.data_type == "float":
                errors.append(
                    f"{what} is {quantizer.type_name}; TFLite's integer "
                    "models have no float tensors: give it an integer data "
                    "type in the config (or set_precision it to an integer "
                    "bitwidth)."
                )
                continue
            encoding = quantizer.encoding
            if role.is_bias:
                if encoding.bitwidth < 32:
                    changes.append(
                        f"{what}: TFLite keeps biases as int32 with scale "
                        "input x weight, not the sim's "
                        f"{encoding.bitwidth}-bit grid."
                    )
                continue
            if role.kind == "param":
                if not encoding.is_symmetric or encoding.unsigned_symmetric:
                    errors.append(
                        f"{what} has an asymmetric grid; TFLite's integer "
                        "kernels need symmetric weights (zero point 0): set "
                        'params "is_symmetric": "True" in the quantsim '
                        "config (the shipped 'tflite_int8' config does)."
                    )
                elif encoding.bitwidth > 8:
                    errors.append(
                        f"{what} is {encoding.bitwidth}-bit; TFLite's integer "
                        "kernels take 8-bit weights: set default_param_bw=8 "
                        "(or the param bitwidth in the config)."
                    )
                else:
                    changes.extend(
                        _weight_changes(
                            what, quantizer, weights[id(quantizer)], encoding
                        )
                    )
                continue
            if encoding.bitwidth > activation_bits:
                errors.append(
                    f"{what} is {encoding.bitwidth}-bit; TFLite's {mode} "
                    f"mode has {activation_bits}-bit activations: "
                    + (
                        "export with mode='16x8' for 16-bit activations."
                        if mode == "int8" and encoding.bitwidth <= 16
                        else "lower default_output_bw."
                    )
                )
            elif (
                mode == "16x8"
                and encoding.bitwidth == 16
                and not (
                    encoding.is_symmetric and not encoding.unsigned_symmetric
                )
            ):
                errors.append(
                    f"{what} is 16-bit asymmetric; TFLite's 16x8 mode needs "
                    "int16 activations with zero point 0: set ops "
                    '"is_symmetric": "True" in the quantsim config.'
                )
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValueError(
            f"The sim cannot be exported to TFLite {mode} as configured: "
            f"{errors[0]}{more}\nAll: " + "\n  ".join(errors)
        )
    return changes


def _layer_norm_changes(sim, mode):
    """Refuses LayerNormalizations TFLite cannot run on the sim's grids.

    TFLite has no LayerNormalization op: only one the sim runs as TFLite's
    integer ops (:mod:`aimet_keras.sim.layer_norm`) exports.

    Returns:
        The changes the export makes to the decomposed ones (16x8 mode).

    Raises:
        ValueError: naming the layers and the fix.
    """
    norms = [
        w for w in sim.quant_wrappers() if layer_norm_lib.is_layer_norm(w.layer)
    ]
    whole = [w for w in norms if not w.internal_quantizers]
    if whole:
        names = [w.name for w in whole]
        asked = sim.config.op_types.get("LayerNormalization")
        listed = f"{names[:4]}{' ...' if len(names) > 4 else ''}"
        if asked is not None and asked.decomposed_quantization:
            raise ValueError(
                f"LayerNormalization layer(s) {listed} (axis "
                f"{whole[0].layer.axis}, rms_scaling "
                f"{whole[0].layer.rms_scaling}): TFLite runs only a "
                "LayerNormalization over the last axis, without rms_scaling, "
                "as integer ops, so the export would not be fully integer. "
                "Normalize over the last axis, or export with export_onnx, "
                "whose QDQ format keeps the op in float."
            )
        raise ValueError(
            "The TFLite model is not fully integer as the sim is configured: "
            "LayerNormalization "
            f"layer(s) {listed} have no integer TFLite op, and the sim "
            "quantizes only their input and output, not the intermediate "
            "tensors of the integer ops TFLite computes them with. Build the "
            "sim with config_file='tflite_int8' (or 'tflite_16x8'), whose "
            'LayerNormalization entry sets "decomposed_quantization": '
            '"True", or export with export_onnx, whose QDQ format allows '
            "float ops."
        )
    if mode == "16x8" and norms:
        return [
            f"{norms[0].name}"
            + (f" and {len(norms) - 1} more" if len(norms) > 1 else "")
            + ": TFLite's int16 RSQRT is a lookup table, within about 0.5% "
            "of 1/sqrt near the top of its output range (the sim's is "
            "exact)."
        ]
    return []


def _weight_changes(what, quantizer, variable, encoding):
    """A symmetric weight's level -128 has no place in TFLite's int8."""
    values = np.asarray(quantizer(variable), np.float64)
    delta = np.asarray(encoding.delta, np.float64)
    if encoding.is_per_channel:
        shape = [1] * values.ndim
        axes = [a % values.ndim for a in np.atleast_1d(quantizer.axis)]
        shape_axes = [values.shape[a] for a in axes]
        for a, size in zip(axes, shape_axes):
            shape[a] = size
        delta = delta.reshape(shape)
    levels = np.round(values / delta)
    clipped = int(np.sum(levels < -127))
    if not clipped:
        return []
    return [
        f"{what}: {clipped} value(s) at level -128 become -127 (TFLite's "
        "int8 weights are narrow-range); use strict_symmetric in the config "
        "to keep the sim on the same grid."
    ]


def load_interpreter(**options: object) -> tf.lite.Interpreter:
    """``tf.lite.Interpreter(**options)``, without its deprecation warning.

    TensorFlow 2.21 still ships the interpreter and warns on every
    construction that it moves to ``ai_edge_litert``; the warning says
    nothing a user of these exports can act on.

    Example:

    >>> relu = tf.function(tf.nn.relu, input_signature=[tf.TensorSpec([4])])
    >>> converter = tf.lite.TFLiteConverter.from_concrete_functions(
    ...     [relu.get_concrete_function()])
    >>> runner = load_interpreter(model_content=converter.convert())
    >>> runner.get_input_details()[0]["shape"].tolist()
    [4]
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*tf.lite.Interpreter is deprecated"
        )
        return tf.lite.Interpreter(**options)


def run_tflite(
    path: str | os.PathLike,
    inputs: np.ndarray,
    batch_size: int = 256,
    num_threads: int = 2,
) -> np.ndarray:
    """Runs a single-input, single-output TFLite model over ``inputs``.

    Feeds ``batch_size`` samples at a time (a whole evaluation set of large
    images would not fit in memory at once). Float inputs are quantized
    with the model's input scale and zero point where its input is
    integer, and integer outputs are dequantized, so a model with int8 I/O
    (the TFLite converter's own) gives floats like the exported ones.

    Args:
        path: the ``.tflite`` file.
        inputs: a float array, samples first.
        batch_size: samples per invocation. Defaults to 256.
        num_threads: interpreter threads. Defaults to 2.

    Returns:
        The float32 outputs, samples first.

    Example:

    >>> import tempfile
    >>> relu = tf.function(tf.nn.relu,
    ...                    input_signature=[tf.TensorSpec([None, 3])])
    >>> converter = tf.lite.TFLiteConverter.from_concrete_functions(
    ...     [relu.get_concrete_function()])
    >>> path = tempfile.mkdtemp() + "/relu.tflite"
    >>> _ = open(path, "wb").write(converter.convert())
    >>> run_tflite(path, np.array([[-1.0, 0.5, 2.0]], "float32")).tolist()
    [[0.0, 0.5, 2.0]]
    """
    interpreter = load_interpreter(
        model_path=str(path), num_threads=num_threads
    )
    (inp,), (out,) = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )
    inputs = np.asarray(inputs)
    outputs, shape = [], None
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        if inp["dtype"] != batch.dtype and np.issubdtype(
            inp["dtype"], np.integer
        ):
            scale, zero = inp["quantization"]
            limits = np.iinfo(inp["dtype"])
            batch = np.round(batch / scale + zero)
            batch = np.clip(batch, limits.min, limits.max)
        batch = batch.astype(inp["dtype"])
        if batch.shape != shape:
            shape = batch.shape
            interpreter.resize_tensor_input(inp["index"], shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        value = interpreter.get_tensor(out["index"])
        if np.issubdtype(value.dtype, np.integer):
            scale, zero = out["quantization"]
            value = (value.astype(np.float32) - zero) * scale
        outputs.append(value.astype(np.float32))
    return np.concatenate(outputs)


def tflite_ops(
    interpreter: tf.lite.Interpreter,
) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """``[(op name, input dtypes, output dtypes)]`` of a TFLite model.

    Example:

    >>> relu = tf.function(tf.nn.relu, input_signature=[tf.TensorSpec([4])])
    >>> converter = tf.lite.TFLiteConverter.from_concrete_functions(
    ...     [relu.get_concrete_function()])
    >>> tflite_ops(load_interpreter(model_content=converter.convert()))
    [('RELU', ('float32',), ('float32',))]
    """
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

    def dtypes(indices):
        return tuple(
            np.dtype(tensors[i]["dtype"]).name for i in indices if i >= 0
        )

    return [
        (op["op_name"], dtypes(op["inputs"]), dtypes(op["outputs"]))
        for op in interpreter._get_ops_details()
    ]


def _converter_error(error):
    """The converter's own error lines, without its MLIR dump."""
    lines = [
        line.strip()
        for line in str(error).splitlines()
        if "error:" in line or line.strip().startswith("tf.")
    ]
    return "\n  ".join(lines[:8]) or str(error).splitlines()[0]


def _convert(graph, sim, mode, io_dtype):
    # The frozen function alone, no trackable object: the converter's graph
    # path, whose notice about that quiet_conversion mutes with the rest.
    with _quiet.quiet_conversion():
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [graph.frozen_function]
        )
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "16x8":
            # (int8 needs no op set: the fake-quant ops make it integer, and
            # _check_integer verifies that.)
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        dtype = _IO_DTYPES[mode][io_dtype]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
        try:
            return converter.convert()
        except Exception as error:  # the converter raises its own types
            raise ValueError(
                f"The TFLite converter could not make an integer {mode} "
                f"model of {sim.model.name!r}: {_converter_error(error)}\n"
                "Every tensor between integer ops needs an encoding in the "
                "sim: check sim.summary() for layers whose output quantizer "
                "is off."
            ) from None


def _fix_int16_unit_grid(output, schema):
    """An int16 LOGISTIC or TANH output on the grid TFLite's kernels need.

    The kernels refuse any int16 output grid but a step of 1/32768 with
    zero point 0, yet the converter writes LOGISTIC's as 1/65536 with zero
    point -32768 (and a requantize to the sim's grid after it): the file
    failed to load. The sim's grid is the kernels' (the tflite_16x8
    config's constraints), so the requantize after becomes a copy.
    """
    if output.type == schema.TensorType.INT16 and output.quantization:
        output.quantization.scale = np.array([1 / 32768], np.float32)
        output.quantization.zeroPoint = np.array([0], np.int64)


def _fix_16x8_flatbuffer(flatbuffer):
    """int32 biases of int16 convolutions become int64; int16 LOGISTIC and
    TANH outputs take the kernels' grid (:func:`_fix_int16_unit_grid`).

    The converter writes int32 biases when it reads the grids from
    fake-quant ops, but TFLite's 16x8 kernels read int64 ones (its own
    calibrated path writes those): without this the model computes garbage.
    One pass over the flatbuffer for both.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    builtin = schema.BuiltinOperator
    bias_input = {
        builtin.CONV_2D: 2,
        builtin.DEPTHWISE_CONV_2D: 2,
        builtin.FULLY_CONNECTED: 2,
        builtin.TRANSPOSE_CONV: 3,
    }
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            kind = max(code.builtinCode, code.deprecatedBuiltinCode)
            if kind in (builtin.LOGISTIC, builtin.TANH):
                _fix_int16_unit_grid(subgraph.tensors[op.outputs[0]], schema)
                continue
            position = bias_input.get(kind)
            if position is None or len(op.inputs) <= position:
                continue
            data, bias = subgraph.tensors[op.inputs[0]], op.inputs[position]
            if bias < 0 or data.type != schema.TensorType.INT16:
                continue
            tensor = subgraph.tensors[bias]
            if tensor.type != schema.TensorType.INT32:
                continue
            values = np.frombuffer(
                bytes(model.buffers[tensor.buffer].data), np.int32
            )
            widened = schema.BufferT()
            widened.data = np.frombuffer(
                values.astype("<i8").tobytes(), np.uint8
            ).copy()
            # A new buffer: the int32 one may be shared with other tensors.
            model.buffers.append(widened)
            tensor.buffer = len(model.buffers) - 1
            tensor.type = schema.TensorType.INT64
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _alpha_grid(sim, graph, tensor_name, values):
    """``(step, change)`` of the int8 grid a PReLU's alpha is stored on.

    The sim's alpha grid when it has one that TFLite's per-tensor int8
    alpha can hold (change None); otherwise a symmetric grid of the
    values' own range, and the sentence that reports it.
    """
    import keras

    layer = graph.owner(tensor_name, all_calls=True)
    wrappers = {w.name: w for w in sim.quant_wrappers()}
    wrapper = wrappers.get(layer)
    quantizer = None
    if wrapper is not None and isinstance(wrapper.layer, keras.layers.PReLU):
        quantizer = wrapper.param_quantizers.get("alpha")
    if (
        quantizer is not None
        and quantizer.enabled
        and quantizer.data_type == "int"
        and not quantizer.encoding.is_per_channel
    ):
        # _check_sim refused asymmetric and wider-than-8-bit alpha grids:
        # this one is symmetric, zero point 0, and the file's values (the
        # deployment graph's narrow-range fake-quant output) lie on it.
        step = float(np.asarray(quantizer.encoding.delta))
        levels = values / step
        if np.allclose(levels, np.round(levels), atol=1e-3) and np.all(
            np.abs(levels) < 127.5
        ):
            return step, None
    step = float(np.max(np.abs(values))) / 127 or 1.0
    return step, (
        f"{layer or tensor_name} weight 'alpha': TFLite's int8 PRELU holds "
        "alpha on one symmetric int8 grid and the sim's alpha is on none "
        f"(quantizer off or per channel): stored with step {step:.6g}."
    )


def _integer_prelus(flatbuffer, sim, graph):
    """PRELU ops the converter left in float become int8 ones.

    TFLite's PRELU pattern matches Keras's ``relu(x) + neg_alpha *
    relu(-x)`` and takes ``neg(neg_alpha)`` as alpha: with ``neg_alpha =
    -fake_quant(alpha)`` the quantizer sees no constant there, and the
    negations fold into a float one only after quantization (no graph
    formulation avoids the outer negation): the converter writes
    ``DEQUANTIZE -> PRELU (float alpha) -> QUANTIZE``. Its int8 tensors
    before and after are the sim's input and output grids, and the float
    alpha holds the sim's quantized values, so one int8 PRELU between those
    two tensors, with alpha stored on the sim's grid, computes what the sim
    does. Only int8: TFLite's PRELU has no int16 kernel.

    Returns:
        ``(flatbuffer, changes)``.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    builtin, types = schema.BuiltinOperator, schema.TensorType

    def kind(op):
        code = model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    subgraph = model.subgraphs[0]
    tensors, ops = subgraph.tensors, subgraph.operators
    if not any(kind(op) == builtin.PRELU for op in ops):
        return flatbuffer, []
    producers = {int(t): op for op in ops for t in op.outputs}
    consumers = {}
    for op in ops:
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(op)
    graph_outputs = {int(t) for t in subgraph.outputs}
    dropped, maybe_unused, changes = [], [], []
    for op in ops:
        if kind(op) != builtin.PRELU or len(op.inputs) != 2:
            continue
        x, alpha, out = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        dequantize = producers.get(x)
        users = consumers.get(out, [])
        alpha_data = model.buffers[tensors[alpha].buffer].data
        if (
            dequantize is None
            or kind(dequantize) != builtin.DEQUANTIZE
            or tensors[int(dequantize.inputs[0])].type != types.INT8
            or len(users) != 1
            or kind(users[0]) != builtin.QUANTIZE
            or out in graph_outputs
            or tensors[int(users[0].outputs[0])].type != types.INT8
            or tensors[alpha].type != types.FLOAT32
            or alpha_data is None
        ):
            continue  # not the converter's float island: left to the check
        values = np.frombuffer(bytes(alpha_data), "<f4")
        step, change = _alpha_grid(
            sim, graph, tensors[out].name.decode(), values
        )
        if change:
            changes.append(change)
        levels = np.clip(np.round(values / step), -127, 127).astype("<i1")
        stored = schema.BufferT()
        stored.data = np.frombuffer(levels.tobytes(), np.uint8).copy()
        model.buffers.append(stored)
        # A new tensor: the float one may be shared (a layer called twice);
        # it goes with the other unused tensors below.
        quantized = schema.TensorT()
        quantized.shape, quantized.name = (
            tensors[alpha].shape,
            tensors[alpha].name,
        )
        quantized.type, quantized.buffer = types.INT8, len(model.buffers) - 1
        quantized.quantization = schema.QuantizationParametersT()
        quantized.quantization.scale = [step]
        quantized.quantization.zeroPoint = [0]
        tensors.append(quantized)
        alpha = len(tensors) - 1
        op.inputs = [int(dequantize.inputs[0]), alpha]
        op.outputs = [int(users[0].outputs[0])]
        dropped.append(users[0])
        maybe_unused.append((dequantize, x))
    if not dropped:
        return flatbuffer, changes
    dropped = {id(op) for op in dropped}
    ops = [op for op in ops if id(op) not in dropped]
    # A DEQUANTIZE whose float tensor still feeds another op stays.
    still_read = {int(t) for op in ops for t in op.inputs} | graph_outputs
    subgraph.operators = [
        op
        for op in ops
        if not any(op is d and x not in still_read for d, x in maybe_unused)
    ]
    _drop_unused_tensors(model, 0)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), changes


def _drop_unused_tensors(model, index):
    """Removes the tensors of subgraph ``index`` no op or signature uses.

    Their buffers are emptied, not removed: buffer indices stay valid for
    the other subgraphs and the metadata.
    """
    subgraph = model.subgraphs[index]
    signatures = [
        s for s in (model.signatureDefs or []) if s.subgraphIndex == index
    ]
    used = set(int(t) for t in [*subgraph.inputs, *subgraph.outputs])
    for op in subgraph.operators:
        for field in (op.inputs, op.outputs, op.intermediates):
            used.update(int(t) for t in (field if field is not None else []))
    for signature in signatures:
        used.update(
            m.tensorIndex for m in [*signature.inputs, *signature.outputs]
        )
    used.discard(-1)  # an omitted optional input
    if len(used) == len(subgraph.tensors):
        return
    kept = sorted(used)
    new_index = {old: new for new, old in enumerate(kept)}
    # Buffers of the removed tensors are emptied unless something else
    # reads them (a kept tensor, another subgraph, the metadata).
    read = {subgraph.tensors[k].buffer for k in kept} | {
        m.buffer for m in (model.metadata or [])
    }
    read |= {
        t.buffer
        for i, other in enumerate(model.subgraphs)
        if i != index
        for t in other.tensors
    }
    for old, tensor in enumerate(subgraph.tensors):
        if old not in new_index and tensor.buffer not in read:
            model.buffers[tensor.buffer].data = None

    def remap(indices):
        return [new_index[int(t)] if int(t) >= 0 else -1 for t in indices]

    subgraph.tensors = [subgraph.tensors[old] for old in kept]
    subgraph.inputs, subgraph.outputs = (
        remap(subgraph.inputs),
        remap(subgraph.outputs),
    )
    for op in subgraph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    for signature in signatures:
        for tensor_map in [*signature.inputs, *signature.outputs]:
            tensor_map.tensorIndex = new_index[tensor_map.tensorIndex]


def _check_integer(flatbuffer, mode, graph):
    """Every op but the boundary (de)quantize runs on integers."""
    interpreter = load_interpreter(model_content=flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    floats, layers = set(), []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _BOUNDARY_OPS:
            continue
        used = [tensors[i] for i in [*op["inputs"], *op["outputs"]] if i >= 0]
        if any(np.dtype(t["dtype"]).kind == "f" for t in used):
            floats.add(op["op_name"])
            owner = graph.owner(tensors[op["outputs"][0]]["name"])
            if owner and owner not in layers:
                layers.append(owner)
    if floats:
        raise ValueError(
            f"The converted model is not fully integer ({mode}): ops "
            f"{sorted(floats)} of layers {layers[:6]}"
            f"{' ...' if len(layers) > 6 else ''} run in float: TFLite needs "
            "a grid on tensors the sim keeps float there (inside "
            "LayerNormalization, for one). Quantize those layers' inputs and "
            "outputs in the sim, or export them with export_onnx, whose QDQ "
            "format allows float ops."
        )
    return interpreter


def _layer_tensors(interpreter, graph):
    """``{layer: TFLite tensor name}`` for the layers TFLite computes.

    The quantized copies of inputs and weights (the inputs' and params'
    fake-quant ops) are not layer outputs.
    """
    not_outputs = tuple(
        name
        for name, (role, _) in graph.fake_quant_ops.items()
        if role.kind in ("input", "param")
    )
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    concat_inputs = _concat_input_requantizations(interpreter)
    found = {}
    for op in interpreter._get_ops_details():
        for index in op["outputs"]:
            if index in concat_inputs:
                continue
            name = tensors[index]["name"]
            if name.split(";")[0].startswith(not_outputs):
                continue
            layer = graph.owner(name)
            if layer is not None:
                found[layer] = name  # the layer's last op wins
    return found


def _layer_names(interpreter, graph, layer_tensors):
    """``{tensor index: new name}``: tensors named after their layers.

    The converter names a tensor after every TF op fused into it
    (``model_1/conv_1/conv_1/BiasAdd;model_1/conv_1/...``). A layer's
    output tensor is renamed to the layer's name, its other tensors
    (kernels, biases, inner results) to ``<layer>/<i>``: shorter files that
    read like the Keras model. Tensors of no layer keep their names.
    """
    outputs = {name: layer for layer, name in layer_tensors.items()}
    names, counts = {}, {}
    for tensor in interpreter.get_tensor_details():
        name = tensor["name"]
        if name in outputs:
            names[tensor["index"]] = outputs[name]
            continue
        layer = graph.owner(name)
        if layer is not None:
            count = counts.get(layer, 0)
            counts[layer] = count + 1
            names[tensor["index"]] = f"{layer}/{count}"
    return names


def _rename_tensors(flatbuffer, names):
    """The flatbuffer with ``{tensor index: name}`` applied (subgraph 0)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    tensors = model.subgraphs[0].tensors
    for index, name in names.items():
        tensors[index].name = name.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _concat_input_requantizations(interpreter):
    """Outputs of QUANTIZE ops that only CONCATENATION reads.

    TFLite's concat takes its inputs on its output grid: such a requantize
    is the sim's one rounding of the concatenated tensor, not a change,
    and its output is not its producer's output.
    """
    ops = interpreter._get_ops_details()
    readers = {}
    for op in ops:
        for index in op["inputs"]:
            readers.setdefault(index, set()).add(op["op_name"])
    return {
        op["outputs"][0]
        for op in ops
        if op["op_name"] == "QUANTIZE"
        and readers.get(op["outputs"][0]) == {"CONCATENATION"}
    }


def _requantizations(interpreter, graph):
    """Where TFLite put a QUANTIZE between two integer tensors."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    concat_inputs = _concat_input_requantizations(interpreter)
    changes = []
    for op in interpreter._get_ops_details():
        if op["op_name"] != "QUANTIZE" or op["outputs"][0] in concat_inputs:
            continue
        source, target = tensors[op["inputs"][0]], tensors[op["outputs"][0]]
        if not np.issubdtype(source["dtype"], np.integer):
            continue
        (s_scale, s_zero), (t_scale, t_zero) = (
            source["quantization"],
            target["quantization"],
        )
        if (s_scale, s_zero) == (t_scale, t_zero):
            continue  # a copy
        producer = graph.owner(source["name"]) or source["name"]
        changes.append(
            f"{producer}: TFLite fixes this op's output grid (scale "
            f"{s_scale:.6g}, zero point {s_zero}); the sim's (scale "
            f"{t_scale:.6g}, zero point {t_zero}) follows as a requantize "
            "op."
        )
    return changes


def export_tflite(
    sim: QuantizationSimModel | keras.Model,
    path: str | os.PathLike,
    io_dtype: str = "float32",
    mode: str = "int8",
    allow_changes: bool = True,
    input_shapes: dict | None = None,
) -> TFLiteExport:
    """Writes an integer TFLite model computing on the sim's grids.

    Args:
        sim: a calibrated :class:`~aimet_keras.sim.QuantizationSimModel`, or
            the model :func:`~aimet_keras.quantize_model` returned.
            Fold batch norms first (``ptq.fold_all_batch_norms``) so that
            the sim's kernel grids are the deployed kernels' grids.
        path: the ``.tflite`` file to write; its folder is created.
        io_dtype: ``"float32"`` (quantize and dequantize inside the model)
            or the integer type of ``mode`` (``"int8"``; ``"int16"`` for
            16x8): the model then takes and returns integers on the sim's
            input and output grids. Defaults to ``"float32"``.
        mode: ``"int8"`` (int8 activations and weights) or ``"16x8"``
            (int16 activations, int8 weights; the sim's activations must
            be 16-bit symmetric). Defaults to ``"int8"``.
        allow_changes: when False, any change of the sim's computation the
            conversion makes (see :attr:`TFLiteExport.changes`) is an error
            and nothing is written. Defaults to True (changes are logged).
        input_shapes: ``{input name: shape without the batch axis}`` for
            a fixed-shape model, such as a transformer's sequence length
            (``{"token_ids": (32,), ...}``: the length it was calibrated
            with); the batch axis stays dynamic. Without it, axes the Keras
            model leaves unknown stay dynamic in the ``.tflite`` file (the
            interpreter takes any length after ``resize_tensor_input``;
            delegates and accelerators often need static shapes). Defaults
            to None.

    Returns:
        A :class:`TFLiteExport`.

    Raises:
        ValueError: for an uncalibrated sim, a configuration TFLite cannot
            express (naming the tensor and the fix), or a failed
            conversion. Nothing is written then.

    Example:

    >>> from aimet_keras import export_tflite, ptq, zoo
    >>> from aimet_keras.sim import QuantizationSimModel
    >>> folded, _ = ptq.fold_all_batch_norms(zoo.load_model("resnet"))
    ... # doctest: +SKIP
    >>> sim = QuantizationSimModel(folded, config_file="tflite_int8")
    ... # doctest: +SKIP
    >>> sim.compute_encodings(zoo.load_fashion_mnist_slice("calibration")[0])
    ... # doctest: +SKIP
    >>> result = export_tflite(sim, "out/resnet_int8.tflite")  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; use one of {MODES}.")
    if io_dtype not in _IO_DTYPES[mode]:
        raise ValueError(
            f"io_dtype={io_dtype!r} in {mode} mode; use one of "
            f"{sorted(_IO_DTYPES[mode])}."
        )
    sim = quantsim_lib.as_simulation(sim)
    path = pathlib.Path(path)
    changes = _check_sim(sim, mode)
    graph = deployment_lib.deployment_graph(
        sim,
        activation_bits=8 if mode == "int8" else 16,
        weight_bits=8,
        zero_centred_activations=mode == "16x8",
        integer_affine_layers=True,
        input_shapes=input_shapes,
    )
    flatbuffer = _convert(graph, sim, mode, io_dtype)
    if mode == "16x8":
        flatbuffer = _fix_16x8_flatbuffer(flatbuffer)
    else:
        flatbuffer, prelu_changes = _integer_prelus(flatbuffer, sim, graph)
        changes += prelu_changes
    interpreter = _check_integer(flatbuffer, mode, graph)
    changes += _requantizations(interpreter, graph)
    if changes and not allow_changes:
        raise ValueError(
            f"Exporting to TFLite {mode} changes what the sim computes "
            f"(allow_changes=False): " + " ".join(changes)
        )
    for change in changes:
        _LOG.warning("export_tflite: %s", change)
    layer_tensors = _layer_tensors(interpreter, graph)
    flatbuffer = _rename_tensors(
        flatbuffer, _layer_names(interpreter, graph, layer_tensors)
    )
    with staging_lib.staged_files({"tflite": path}) as staged:
        staged["tflite"].write_bytes(flatbuffer)
    return TFLiteExport(
        path=path,
        mode=mode,
        io_dtype=io_dtype,
        changes=tuple(changes),
        size_bytes=len(flatbuffer),
        layer_tensors={layer: layer for layer in layer_tensors},
    )
