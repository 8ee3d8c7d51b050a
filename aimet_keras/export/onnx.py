"""ONNX models from a sim: QDQ for onnxruntime, FP32 + encodings for QNN.

:func:`export_onnx` converts the sim's deployment graph
(:mod:`aimet_keras.export.deployment`: TF fake-quant ops carrying the
sim's grids) with tf2onnx and writes three files:

* ``<name>.onnx``: the QDQ model. Every quantized activation is a
  QuantizeLinear / DequantizeLinear pair with the sim's scale and zero
  point; every quantized kernel is an 8-bit initializer behind a
  DequantizeLinear (per channel on ONNX's output-channel axis) holding the
  sim's levels, -128 of a non-strict symmetric grid included.
  onnxruntime runs it, in integer kernels where it fuses the pairs.
* ``<name>.fp32.onnx``: the same graph with the pairs removed, holding the
  model's float kernels (AdaRound's are on their grids already), for
  Qualcomm's ONNX converter, which puts them on the encodings' grids.
* ``<name>.fp32.encodings``: AIMET's encodings file keyed by the FP32
  model's ONNX tensor and initializer names (AIMET's ONNX convention), for
  ``qnn-onnx-converter --quantization_overrides``; a per-channel kernel's
  2.0.0 ``axis`` is its channel axis in the ONNX layout (Conv 0, MatMul and
  ConvTranspose 1).

Kernels are matched to the sim's weights by value, as tf2onnx names some
after no layer (a depthwise kernel whose reshape it folds becomes
``const_fold_opt__<n>``). A quantized weight that no kernel holds (tf2onnx
folds a PReLU's alpha or a LayerNormalization's gamma into other constants)
keeps the sim's values as floats, without an encoding: every such departure
is a sentence of :attr:`OnnxExport.changes`.

Symmetric kernels are stored as uint8 with zero point 128 by default, not
int8 with zero point 0: the same levels and values, but onnxruntime then
fuses Conv/MatMul into its uint8 x uint8 kernels, which accumulate in 32
bits on every CPU. With int8 kernels it takes its uint8 x int8 kernels,
which on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) add pairs of
products in 16 bits with saturation (``vpmaddubsw``): the same file then
gives other results on those CPUs than the sim predicts (on the shipped
ResNet, 93% top-1 agreement instead of 100%). ``weight_dtype="int8"``
keeps int8 for runtimes that want signed weights, and says so in
:attr:`OnnxExport.changes`.

ONNX QDQ holds 8-bit grids here (tf2onnx's fake-quant conversion); a grid of
fewer bits is stored in 8 bits with the same step and clipped to its range,
wider grids are refused.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import typing

import numpy as np

from aimet_keras import _quiet as quiet_lib
from aimet_keras import graph as graph_lib
from aimet_keras.export import deployment as deployment_lib
from aimet_keras.export import encodings as encodings_lib
from aimet_keras.export import staging as staging_lib
from aimet_keras.sim import export as sim_export
from aimet_keras.sim import quantsim as quantsim_lib

if typing.TYPE_CHECKING:
    import keras

    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = ["OnnxExport", "export_onnx", "onnx_tensor_names"]

# ONNX ops whose input 1 is a kernel, and its output-channel axis there
# (Gemm's depends on transB: see _kernel_axis).
_KERNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        qdq_path: the QDQ model.
        fp32_path: the FP32 model.
        encodings_path: the encodings of the FP32 model's tensors.
        changes: where the QDQ model, the FP32 model or the encodings
            depart from the sim, one sentence each (empty when every
            quantized weight is a kernel on the sim's grid with its
            encoding).
        layer_tensors: ``{layer name: QDQ model tensor}``, the dequantized
            output of each layer whose output the sim quantizes (see
            :func:`~aimet_keras.export.layer_outputs.onnx_layer_outputs`).
        layer_shapes: ``{layer name: Keras output shape}`` (batch dimension
            first, None), to put channels-first ONNX tensors back in the
            Keras layout.
    """

    qdq_path: pathlib.Path
    fp32_path: pathlib.Path
    encodings_path: pathlib.Path
    changes: tuple
    layer_tensors: dict = dataclasses.field(default_factory=dict)
    layer_shapes: dict = dataclasses.field(default_factory=dict)


def _check_sim(sim):
    sim_export._check_calibrated(sim)
    grouped = [
        w.name
        for w in sim.quant_wrappers()
        if graph_lib.is_depthwise_grouped(w.layer)
    ]
    if grouped:
        raise ValueError(
            f"Conv2D layer(s) {grouped[:4]} are depthwise convolutions "
            "written with groups=channels (ConvNeXt's), which Keras runs as a "
            "compiled function tf2onnx cannot convert. Rewrite them as "
            "DepthwiseConv2D (exact) before folding and building the sim: "
            "model = aimet_keras.graph.depthwise_from_grouped(model)."
        )
    roles = deployment_lib.quantizer_roles(sim)
    errors = []
    for wrapper in sim.quant_wrappers():
        for quantizer in wrapper.quantizers:
            if not quantizer.enabled:
                continue
            role = roles[id(quantizer)]
            if quantizer.data_type == "float":
                errors.append(
                    f"{role.describe()} is {quantizer.type_name}"
                    ": the ONNX QDQ export holds integer grids; give it an "
                    "integer data type in the config (8-bit float grids are "
                    "written to encodings 2.0.0 by sim.export)."
                )
            elif quantizer.bitwidth > 8 and not role.is_bias:
                errors.append(
                    f"{role.describe()} is {quantizer.bitwidth}-bit: the QDQ "
                    "export holds 8-bit grids; lower its bitwidth (export "
                    "16-bit activations with export_tflite(mode='16x8'))."
                )
    if errors:
        raise ValueError(
            "The sim cannot be exported to ONNX QDQ as configured: "
            + " ".join(errors[:3])
            + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")
        )


@dataclasses.dataclass(frozen=True)
class _SimWeight:
    """One weight the sim quantizes to an integer grid (biases aside)."""

    layer: str
    key: str
    encoding: object
    quantized: np.ndarray  # the sim's values on its grid, Keras layout
    values: np.ndarray  # the model's float values, Keras layout

    def describe(self):
        return f"{self.layer} weight {self.key!r}"


def _sim_weights(sim):
    """A :class:`_SimWeight` for every enabled integer weight quantizer but
    biases' (32-bit biases stay float in the QDQ model)."""
    found = []
    roles = deployment_lib.quantizer_roles(sim)
    for wrapper in sim.quant_wrappers():
        tensors = wrapper.weight_values()
        for key, quantizer in wrapper.param_quantizers.items():
            encoding = quantizer.encoding
            if (
                not quantizer.enabled
                or roles[id(quantizer)].is_bias
                or encoding is None
                or encoding.is_float
            ):
                continue
            values = tensors[key]
            found.append(
                _SimWeight(
                    wrapper.name,
                    key,
                    encoding,
                    np.asarray(quantizer(values), np.float32),
                    np.asarray(values, np.float32),
                )
            )
    return found


def _layouts(rank):
    """Axis orders that carry a Keras kernel of ``rank`` towards an ONNX
    initializer (then reshaped to its shape): as it is (MatMul; EinsumDense
    flattened); ``(..., in, out)`` to ``(out, in, ...)`` (Conv,
    ConvTranspose, Conv1D with a unit axis added, Gemm with transB);
    ``(h, w, channels, multiplier)`` to ``(channels, multiplier, h, w)``
    (a depthwise kernel, which tf2onnx folds into one constant)."""
    orders = [tuple(range(rank))]
    if rank >= 2:
        orders.append((rank - 1, rank - 2, *range(rank - 2)))
    if rank == 4:
        orders.append((2, 3, 0, 1))
    return list(dict.fromkeys(orders))


def _onnx_layout(weight, values):
    """Whether ``values``, an ONNX initializer, holds ``weight``'s quantized
    values, and the float values in its layout.

    Returns:
        ``(False, None)`` when ``values`` is not the weight; ``(True,
        floats)``; ``(True, None)`` when several layouts put the sim's
        values there but the float ones apart (a kernel of repeated
        values), so which float kernel belongs there is unknown.
    """
    quantized = weight.quantized
    if quantized.size != values.size:
        return False, None
    step = float(np.min(np.asarray(weight.encoding.delta)))
    floats = {}
    for order in _layouts(quantized.ndim):
        carried = np.transpose(quantized, order).reshape(values.shape)
        if np.allclose(carried, values, rtol=1e-5, atol=1e-3 * step):
            moved = np.transpose(weight.values, order).reshape(values.shape)
            floats[moved.tobytes()] = moved
    if not floats:
        return False, None
    return True, (next(iter(floats.values())) if len(floats) == 1 else None)


def _integer_kernel(values, encoding, axis, weight_dtype):
    """``(integer values, scale, zero point)`` when ``values`` sit on the grid.

    Signed symmetric grids are stored as ``weight_dtype``: int8 with zero
    point 0, or uint8 with zero point 128 (the same levels shifted, so the
    same values); other grids as uint8 with zero point ``-offset`` (ONNX's
    asymmetric weights). Returns None when the values are not on the grid
    (the kernel is not the one the encoding describes, or its layout
    differs), or do not fit the type.
    """
    delta = np.asarray(encoding.delta, np.float64)
    offset = np.asarray(encoding.offset, np.float64)
    shape = ()
    if encoding.is_per_channel:
        if values.shape[axis] != delta.size:
            return None
        shape = [1] * values.ndim
        shape[axis] = delta.size
    levels = values.astype(np.float64) / delta.reshape(shape)
    if np.max(np.abs(levels - np.round(levels)), initial=0.0) > 1e-2:
        return None
    if encoding.is_symmetric and not encoding.unsigned_symmetric:
        dtype = np.dtype(weight_dtype)
        zero = np.full_like(delta, 128 if dtype == np.uint8 else 0)
    else:
        dtype, zero = np.uint8, -offset
    stored = np.round(levels) + zero.reshape(shape)
    info = np.iinfo(dtype)
    if stored.min(initial=0) < info.min or stored.max(initial=0) > info.max:
        return None
    return stored.astype(dtype), delta.astype(np.float32), zero.astype(dtype)


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx has no Erfc (Keras's exact GELU on TensorFlow uses it)."""
    from tf2onnx import utils

    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(
        utils.make_name(f"{node.name}_one"), np.array(1.0, np.float32)
    )
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    node.type = "Sub"


def _convert(graph, sim, opset):
    import tf2onnx

    frozen = graph.frozen_function
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    # ONNX names: the Keras input and output names, without ":0".
    rename = {
        name: spec.name for name, spec in zip(inputs, graph.input_signature)
    }
    rename.update(
        {name: output for name, output in zip(outputs, sim.model.output_names)}
    )
    try:
        # tf2onnx.convert loads (and logs) inside the block.
        with quiet_lib.quiet_conversion():
            from_graph_def = tf2onnx.convert.from_graph_def
            # tf2onnx numbers the ops it adds from a process-wide counter
            # (loading it counts too): start it afresh, so that an export's
            # names do not depend on what the process converted before.
            tf2onnx.utils.INTERNAL_NAME = 1
            model, _ = from_graph_def(
                frozen.graph.as_graph_def(),
                input_names=inputs,
                output_names=outputs,
                opset=opset,
                tensors_to_rename=rename,
                custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
            )
    except Exception as error:  # tf2onnx raises its own types
        raise ValueError(
            f"tf2onnx could not convert {sim.model.name!r}: "
            f"{str(error).splitlines()[0]}"
        ) from None
    _name_shared_constants(model)
    return model


def _name_shared_constants(model):
    """Names each initializer that several nodes read after its first
    reader, and sorts the initializers by name.

    tf2onnx merges equal constants (two layers' zero points, say) and keeps
    whichever name and place its iteration meets first, which varies from
    run to run: naming the survivor after the first node that reads it
    (graph order is stable) makes the file's bytes the same on every run.
    Constants tf2onnx folds (``const_fold_opt__N``: a depthwise kernel in
    ONNX's layout) are numbered in an order that varies between
    conversions too, and are named after their reader the same way, so
    that the names of one model's ONNX copy are the same in every
    conversion (an encodings file of one copy names the tensors of any).
    """
    import onnx

    graph = model.graph
    readers = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, index))
    outputs = {o.name for o in graph.output}
    for initializer in graph.initializer:
        found = readers.get(initializer.name, [])
        folded = initializer.name.startswith("const_fold_opt__")
        if not found or initializer.name in outputs:
            continue
        if len(found) < 2 and not folded:
            continue
        first, index = found[0]
        name = f"{first.name}_input{index}"
        for node, position in found:
            node.input[position] = name
        initializer.name = name
    ordered = []
    for initializer in sorted(graph.initializer, key=lambda t: t.name):
        copy = onnx.TensorProto()
        copy.CopyFrom(initializer)
        ordered.append(copy)
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def _kernel_owner(node, graph):
    """The layer a kernel op comes from, by its name or its tensors' names.

    tf2onnx names some ops it builds anew without their scope (a depthwise
    convolution becomes ``Conv__272``): their bias or output tensor names
    still carry it.
    """
    for name in (node.name, *node.output, *node.input[2:]):
        layer = graph.owner(name, all_calls=True)
        if layer is not None:
            return layer
    return None


def _kernel_axis(node):
    """The output-channel axis of the kernel ``node`` reads as input 1, or
    None for an op that reads no kernel."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return _KERNEL_AXIS.get(node.op_type)


@dataclasses.dataclass
class _Kernels:
    """What :func:`_quantize_kernels` did, by ONNX initializer name.

    Attributes:
        encodings: the sim's encoding of each kernel it quantized.
        weights: the ``(layer, weight key)`` of the sim each one holds.
        axes: the ONNX channel axis of each per-channel one.
        floats: the model's float kernel, in the ONNX layout, for the FP32
            model.
        changes: where the QDQ or FP32 model departs from the sim.
    """

    encodings: dict = dataclasses.field(default_factory=dict)
    weights: dict = dataclasses.field(default_factory=dict)
    axes: dict = dataclasses.field(default_factory=dict)
    floats: dict = dataclasses.field(default_factory=dict)
    changes: list = dataclasses.field(default_factory=list)


def _quantize_kernels(model, sim, graph, weight_dtype):
    """Kernels holding the sim's quantized weights become 8-bit initializers
    behind a DequantizeLinear. Returns a :class:`_Kernels`.

    A kernel is matched to the sim's weight by value (its layer's weights
    first): tf2onnx folds some kernels' reshapes into constants named
    ``const_fold_opt__<n>`` after no layer (depthwise kernels).
    """
    from onnx import helper
    from onnx import numpy_helper

    weights = _sim_weights(sim)
    by_layer = {}
    for weight in weights:
        by_layer.setdefault(weight.layer, []).append(weight)
    initializers = {init.name: init for init in model.graph.initializer}
    quantized_inputs = {
        node.output[0]
        for node in model.graph.node
        if node.op_type == "DequantizeLinear"
    }
    result, placed, new_nodes = _Kernels(), set(), []
    for node in model.graph.node:
        axis = _kernel_axis(node)
        if axis is None or len(node.input) < 2:
            continue
        name = node.input[1]
        if name in result.encodings or name not in initializers:
            continue
        values = numpy_helper.to_array(initializers[name])
        owner = _kernel_owner(node, graph)
        weight = floats = None
        for candidate in by_layer.get(owner, []) + [
            w for w in weights if w.layer != owner
        ]:
            matched, floats = _onnx_layout(candidate, values)
            if matched:
                weight = candidate
                break
        if weight is None:
            if owner in by_layer or (
                owner is None and node.input[0] in quantized_inputs
            ):
                # Left float, onnxruntime would quantize it on its own grid.
                result.changes.append(
                    f"{node.op_type} {node.name!r} (layer "
                    f"{owner or 'unknown'}): its kernel {name!r} holds no "
                    "weight the sim quantizes; left float in the QDQ model."
                )
            continue
        found = _integer_kernel(values, weight.encoding, axis, weight_dtype)
        if found is None:
            result.changes.append(
                f"{weight.describe()}: kernel {name!r} of {node.op_type} "
                f"{node.name!r} is not on the sim's grid along ONNX axis "
                f"{axis}; left float in the QDQ model."
            )
            continue
        placed.add((weight.layer, weight.key))
        result.weights[name] = (weight.layer, weight.key)
        if floats is None:
            result.changes.append(
                f"{weight.describe()}: several layouts of its repeated values "
                f"fit kernel {name!r}; the FP32 model holds its quantized "
                "values, not the float ones."
            )
        else:
            result.floats[name] = floats
        ints, scale, zero = found
        encoding = weight.encoding
        model.graph.initializer.remove(initializers[name])
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(ints, f"{name}_quantized"),
                numpy_helper.from_array(
                    scale if encoding.is_per_channel else scale.reshape(()),
                    f"{name}_scale",
                ),
                numpy_helper.from_array(
                    zero if encoding.is_per_channel else zero.reshape(()),
                    f"{name}_zero_point",
                ),
            ]
        )
        attributes = {"axis": axis} if encoding.is_per_channel else {}
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"],
                [name],
                name=f"{name}_DequantizeLinear",
                **attributes,
            )
        )
        result.encodings[name] = encoding
        if encoding.is_per_channel:
            result.axes[name] = axis
    # Topological order: the new nodes read only initializers, so first.
    nodes = new_nodes + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    unplaced = [w.describe() for w in weights if (w.layer, w.key) not in placed]
    if unplaced:
        result.changes.append(
            f"{', '.join(unplaced)}: no kernel of a Conv, ConvTranspose, "
            "MatMul or Gemm holds them (tf2onnx folds such weights into "
            "other constants): the QDQ and FP32 models hold the sim's "
            "quantized values as floats, and the encodings have no entry "
            "for them."
        )
    return result


def _quantize_nodes(model, graph):
    """``(QuantizeLinear node, QuantizerRole, Encoding)`` for each node the
    deployment graph's fake-quantization ops became."""
    import re

    pattern = re.compile(r"^(.*aimet_fake_quant_\d+)")
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        match = pattern.search(node.name) or pattern.search(node.output[0])
        if match and match.group(1) in graph.fake_quant_ops:
            yield (node, *graph.fake_quant_ops[match.group(1)])


def _activation_encodings(model, graph):
    """``{QuantizeLinear input name: the sim's Encoding}``."""
    return {
        node.input[0]: encoding
        for node, _, encoding in _quantize_nodes(model, graph)
    }


def _layer_output_tensors(model, graph):
    """``{layer: tensor}``: the DequantizeLinear output after each layer's
    first output quantizer."""
    readers = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    found = {}
    for node, role, _ in _quantize_nodes(model, graph):
        if role.kind != "output" or role.key != 0 or role.layer in found:
            continue
        for reader in readers.get(node.output[0], []):
            if reader.op_type == "DequantizeLinear":
                found[role.layer] = reader.output[0]
                break
    return found


def _strip_qdq(model, floats):
    """A copy of the QDQ model without its QDQ pairs; returns the renames.

    Each quantized kernel becomes ``floats[its name]`` (the model's float
    kernel), or its dequantized values where ``floats`` has none.

    Returns ``(fp32 model, {QDQ-model tensor name: FP32-model name})`` for
    tensors whose name changes (a pair at a graph output keeps the output's
    name).
    """
    import copy

    from onnx import numpy_helper

    fp32 = copy.deepcopy(model)
    graph = fp32.graph
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    outputs = {out.name for out in graph.output}
    rename, remove = {}, []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = producers.get(node.input[0])
        if source is not None and source.op_type == "QuantizeLinear":
            remove += [node, source]
            if node.output[0] in outputs:
                rename[source.input[0]] = node.output[0]
            else:
                rename[node.output[0]] = source.input[0]
        elif node.input[0] in initializers:
            # A quantized kernel: back to float under its own name.
            if node.output[0] in floats:
                graph.initializer.append(
                    numpy_helper.from_array(
                        floats[node.output[0]], node.output[0]
                    )
                )
                remove.append(node)
                continue
            ints = numpy_helper.to_array(initializers[node.input[0]])
            scale = numpy_helper.to_array(initializers[node.input[1]])
            zero = numpy_helper.to_array(initializers[node.input[2]])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * ints.ndim
            if scale.ndim:
                shape[axis] = scale.size
            values = (
                ints.astype(np.float32) - zero.astype(np.float32).reshape(shape)
            ) * scale.reshape(shape)
            graph.initializer.append(
                numpy_helper.from_array(
                    values.astype(np.float32), node.output[0]
                )
            )
            remove.append(node)
    for node in remove:
        graph.node.remove(node)
    # Pairs in a row (one layer's output grid, then the next one's input
    # grid) chain their renames: follow each to its end.
    for name in list(rename):
        seen, target = {name}, rename[name]
        while target in rename and target not in seen:
            seen.add(target)
            target = rename[target]
        rename[name] = target
    used = {name for node in graph.node for name in node.input}
    for init in list(graph.initializer):
        if init.name not in used and init.name not in outputs:
            graph.initializer.remove(init)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = rename.get(name, name)
    return fp32, rename


def _before_unquantized_reshapes(model, activations, config):
    """Moves an encoding back across ops the config leaves unquantized.

    tf2onnx writes some layers as an op and a reshape (global average
    pooling as ReduceMean, then Squeeze), and the QDQ pair sits after the
    reshape. AIMET puts the quantizer on the op's own output when the
    config says the reshape's output is not quantized (``Squeeze`` in every
    shipped config), and loads a file strictly only when it names that
    tensor. The values are the same on both sides of a reshape.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    readers = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    moved = {}
    for name, encoding in activations.items():
        node = producers.get(name)
        while node is not None:
            settings = config.op_types.get(node.op_type)
            source = node.input[0] if node.input else None
            if (
                settings is None
                or settings.is_output_quantized is not False
                or source not in producers
                or source in activations
                or readers.get(source) != 1
            ):
                break
            name, node = source, producers[source]
        moved[name] = encoding
    return moved


def _onnx_models(sim, opset, weight_dtype):
    """The QDQ and FP32 models of a checked sim, and how they were made.

    Returns ``(deployment graph, QDQ model, the kernels' _Kernels, FP32
    model, {QDQ tensor name: FP32 tensor name})``.
    """
    # ONNX's int8 weights hold level -128: the sim's grids whole.
    graph = deployment_lib.deployment_graph(
        sim,
        activation_bits=8,
        weight_bits=8,
        explicit_ties=True,
        narrow_weights=False,
    )
    model = _convert(graph, sim, opset)
    kernels = _quantize_kernels(model, sim, graph, weight_dtype)
    fp32, rename = _strip_qdq(model, kernels.floats)
    return graph, model, kernels, fp32, rename


def onnx_tensor_names(
    sim: QuantizationSimModel | keras.Model, opset: int = 13
) -> dict[str, str]:
    """Which tensor of the sim each quantized tensor of its ONNX copy is.

    The ONNX copy is the FP32 model :func:`export_onnx` writes (tf2onnx's
    names, as AIMET's ONNX tools name the tensors of their encodings
    files); the sim's names are those of
    :func:`aimet_keras.sim.export.tensor_names`. Kernels map to the layer
    op that reads them, activations to the quantizer the QDQ pair of the
    QDQ model came from: the same mapping :func:`export_onnx` writes its
    encodings with. A convolution's or Gemm's bias maps to the layer's
    ``bias`` tensor, whether or not the sim quantizes it (AIMET writes
    32-bit encodings of biases).

    Args:
        sim: a calibrated :class:`~aimet_keras.sim.QuantizationSimModel`,
            or the model :func:`~aimet_keras.quantize_model` returned.
        opset: the ONNX opset of the copy. Defaults to 13.

    Returns:
        ``{ONNX tensor name: the sim's tensor name}``.

    Raises:
        ValueError: as :func:`export_onnx` does for a sim it cannot export.

    Example:

    >>> import keras
    >>> from aimet_keras.sim import QuantizationSimModel
    >>> inputs = keras.Input((4,), name="features")
    >>> sim = QuantizationSimModel(
    ...     keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    ... )
    >>> sim.compute_encodings(np.ones((2, 4), "float32"))
    >>> names = onnx_tensor_names(sim)
    >>> sorted(set(names.values()))
    ['fc/kernel:0', 'fc:0', 'features:0']
    """
    return _onnx_copy(sim, opset)[0]


def _onnx_copy(sim, opset=13):
    """``(onnx_tensor_names(sim), the FP32 ONNX copy)``."""
    from aimet_keras.sim import export as export_lib

    sim = quantsim_lib.as_simulation(sim)
    _check_sim(sim)
    graph, model, kernels, fp32, rename = _onnx_models(sim, opset, "uint8")
    sites = {}
    for names in export_lib.tensor_names(sim):
        sites.setdefault(names.layer, names)
    found = {}
    for kernel, (layer, key) in kernels.weights.items():
        name = sites[layer].params.get(key) if layer in sites else None
        if name is not None:
            found[kernel] = name
    roles = {
        rename.get(node.input[0], node.input[0]): role
        for node, role, _ in _quantize_nodes(model, graph)
    }
    roles = _before_unquantized_reshapes(fp32, roles, sim.config)
    for onnx_name, role in roles.items():
        site = sites.get(role.layer)
        if site is None:
            continue
        if role.kind in ("input", "output"):
            names = site.inputs if role.kind == "input" else site.outputs
            name = names[role.key] if role.key < len(names) else None
        elif role.kind == "param":
            name = site.params.get(role.key)
        else:
            name = site.internals.get(role.key)
        if name is not None:
            found[onnx_name] = name
    # A bias (input 2): AIMET's 2.0.0 files hold 32-bit encodings of them
    # (export_int32_bias), whether or not the sim quantizes biases.
    biases = {
        w.name: f"{w.name}/{key}:0"
        for w in sim.quant_wrappers()
        for key in w.param_quantizers
        if key == "bias"
    }
    for node in fp32.graph.node:
        if node.op_type in _KERNEL_AXIS and node.input[2:3]:
            bias = biases.get(_kernel_owner(node, graph))
            if bias is not None and node.input[2]:
                found.setdefault(node.input[2], bias)
    # AIMET's 2.0.0 files repeat an encoding after ops that only move
    # values (the input's NHWC-to-NCHW Reshape, a Squeeze): the same tensor.
    for node in fp32.graph.node:
        if node.op_type in _MOVES_VALUES and node.input[0] in found:
            found.setdefault(node.output[0], found[node.input[0]])
    return found, fp32


_MOVES_VALUES = ("Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten")

# Ops across which AIMET's 2.0.0 export copies a grid to a tensor its sim
# does not quantize (_derive_data_movement_op_encodings): value movers,
# and clipping ops backwards (a Clip's input takes its output's grid).
_COPIES_GRIDS = _MOVES_VALUES + ("Clip", "Relu", "MaxPool", "Pad", "Gather")


def unquantized_onnx_tensors(fp32, found, names):
    """Sorts names of the ONNX copy that the sim does not quantize.

    Args:
        fp32: the FP32 ONNX copy (``ModelProto``).
        found: :func:`onnx_tensor_names` of the sim.
        names: tensor names not in ``found``.

    Returns:
        ``(near, other, foreign)``: ``near`` maps each tensor of the copy
        reached from a mapped one across ops of ``_COPIES_GRIDS`` (where
        AIMET's 2.0.0 export copies grids) to ``(op type, mapped name)``;
        ``other`` lists the copy's other tensors; ``foreign`` the names
        that are no tensor of the copy.

    Example:

    >>> import onnx
    >>> node = onnx.helper.make_node("Clip", ["conv:0"], ["relu6:0"])
    >>> graph = onnx.helper.make_graph([node], "g", [], [])
    >>> unquantized_onnx_tensors(
    ...     onnx.helper.make_model(graph), {"relu6:0": "relu6:0"},
    ...     ["conv:0", "x:0"],
    ... )
    ({'conv:0': ('Clip', 'relu6:0')}, [], ['x:0'])
    """
    tensors = {i.name for i in fp32.graph.input}
    tensors |= {i.name for i in fp32.graph.initializer}
    neighbours = {}
    for node in fp32.graph.node:
        tensors.update(node.input)
        tensors.update(node.output)
        if node.op_type in _COPIES_GRIDS and node.input and node.output:
            a, b = node.input[0], node.output[0]
            neighbours.setdefault(a, []).append((node.op_type, b))
            neighbours.setdefault(b, []).append((node.op_type, a))
    near, other = {}, []
    for name in names:
        if name not in tensors:
            continue
        # Breadth first: the nearest mapped tensor across grid-copying ops.
        seen, queue = {name}, [(op, n) for op, n in neighbours.get(name, ())]
        while queue and queue[0][1] not in found:
            op, tensor = queue.pop(0)
            seen.add(tensor)
            queue += [(op, n) for _, n in neighbours.get(tensor, ())]
            queue = [(o, n) for o, n in queue if n not in seen or n in found]
        if queue:
            near[name] = queue[0]
        else:
            other.append(name)
    return near, other, [name for name in names if name not in tensors]


_WEIGHT_DTYPES = ("uint8", "int8")

_INT8_SATURATION = (
    "symmetric kernels stored as int8: onnxruntime's uint8 x int8 kernels "
    "on x86 CPUs without VNNI may saturate 16-bit pair sums and depart "
    "from the sim there; weight_dtype='uint8' computes the sim on every CPU."
)


def export_onnx(
    sim: QuantizationSimModel | keras.Model,
    path: str | os.PathLike,
    opset: int = 13,
    encoding_version: str = "0.6.1",
    weight_dtype: str = "uint8",
) -> OnnxExport:
    """Writes the sim as a QDQ ONNX model, and as FP32 ONNX + encodings.

    Args:
        sim: a calibrated :class:`~aimet_keras.sim.QuantizationSimModel`
            with grids of at most 8 bits (32-bit biases are kept float), or
            the model :func:`~aimet_keras.quantize_model` returned.
        path: the QDQ model's ``.onnx`` path; the FP32 model and its
            encodings go beside it as ``<stem>.fp32.onnx`` and
            ``<stem>.fp32.encodings``.
        opset: the ONNX opset, 13 or later (per-channel DequantizeLinear).
            Defaults to 13.
        encoding_version: AIMET encodings version of the encodings file.
            Defaults to ``"0.6.1"``.
        weight_dtype: how symmetric kernels are stored: ``"uint8"`` (zero
            point 128; onnxruntime's exact uint8 x uint8 kernels on every
            CPU) or ``"int8"`` (zero point 0; faster uint8 x int8 kernels
            on VNNI CPUs, but saturating sums on x86 CPUs without VNNI).
            The values are the same either way. Defaults to ``"uint8"``.

    Returns:
        An :class:`OnnxExport`.

    Raises:
        ValueError: for an uncalibrated sim, grids ONNX QDQ cannot hold
            here, or a failed conversion. Nothing is written then.

    Example:

    >>> from aimet_keras import export_onnx, ptq, zoo
    >>> from aimet_keras.sim import QuantizationSimModel
    >>> folded, _ = ptq.fold_all_batch_norms(zoo.load_model("resnet"))
    ... # doctest: +SKIP
    >>> sim = QuantizationSimModel(folded, config_file="tflite_int8")
    ... # doctest: +SKIP
    >>> sim.compute_encodings(zoo.load_fashion_mnist_slice("calibration")[0])
    ... # doctest: +SKIP
    >>> result = export_onnx(sim, "out/resnet.onnx")  # doctest: +SKIP
    """
    import onnx

    if opset < 13:
        raise ValueError(
            f"opset={opset}: per-channel DequantizeLinear needs opset 13 or "
            "later."
        )
    if encoding_version not in encodings_lib.ENCODING_VERSIONS:
        raise ValueError(
            f"encoding_version={encoding_version!r}; use one of "
            f"{encodings_lib.ENCODING_VERSIONS}."
        )
    if weight_dtype not in _WEIGHT_DTYPES:
        raise ValueError(
            f"weight_dtype={weight_dtype!r}; use one of {_WEIGHT_DTYPES}."
        )
    sim = quantsim_lib.as_simulation(sim)
    _check_sim(sim)
    path = pathlib.Path(path)
    stem = (
        path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    )
    graph, model, kernels, fp32, rename = _onnx_models(sim, opset, weight_dtype)
    changes = kernels.changes
    if weight_dtype == "int8" and any(
        enc.is_symmetric and not enc.unsigned_symmetric
        for enc in kernels.encodings.values()
    ):
        changes.append(_INT8_SATURATION)
    activations = _activation_encodings(model, graph)
    layer_tensors = _layer_output_tensors(model, graph)
    activations = {rename.get(k, k): v for k, v in activations.items()}
    activations = _before_unquantized_reshapes(fp32, activations, sim.config)
    data = encodings_lib.encodings_to_dict(
        kernels.encodings,
        activations,
        version=encoding_version,
        quantizer_args=sim.quantizer_args(),
        # The channel axis in the ONNX kernel's layout (MatMul's is 1).
        axes=kernels.axes,
    )
    for kind, checked in (("QDQ", model), ("FP32", fp32)):
        try:
            onnx.checker.check_model(checked)
        except onnx.checker.ValidationError as error:
            raise ValueError(
                f"The {kind} ONNX model of {sim.model.name!r} is not valid "
                f"ONNX: {' '.join(str(error).split())[:600]}"
            ) from None
    targets = {
        "qdq": path,
        "fp32": path.with_name(f"{stem}.fp32.onnx"),
        "encodings": path.with_name(f"{stem}.fp32.encodings"),
    }
    with staging_lib.staged_files(targets) as staged:
        onnx.save(model, staged["qdq"])
        onnx.save(fp32, staged["fp32"])
        encodings_lib.write_encodings(staged["encodings"], data)
    return OnnxExport(
        qdq_path=targets["qdq"],
        fp32_path=targets["fp32"],
        encodings_path=targets["encodings"],
        changes=tuple(changes),
        layer_tensors=layer_tensors,
        layer_shapes={
            layer: tuple(sim.model.get_layer(layer).output.shape)
            for layer in layer_tensors
        },
    )
