"""Exporting a simulation, and reading encodings back into one.

:func:`export_sim` writes, for ``QuantizationSimModel.export``:

* ``<prefix>/``: a TensorFlow SavedModel of the FP32 model (the sim's float
  weights, no quantizer ops), with one ``serving_default`` signature. The
  TFLite converter and Qualcomm's TensorFlow converters read it.
* ``<prefix>.keras``: the simulated model, quantizers and grids included.
* ``<prefix>.encodings``: AIMET's encodings file (0.6.1 by default).

Tensor names: the encodings file names tensors of the SavedModel's serving
function, which names them on purpose (Identity ops), so every name in the
file is a node of the exported graph:

========================  ===============================================
tensor                    name
========================  ===============================================
model input ``image``     ``image:0`` (the signature's placeholder)
output ``i`` of layer L   ``L:i``; a shared layer's later calls
                          ``L_call1:i``, ``L_call2:i``...
weight of layer L         ``L/kernel:0``, ``L/bias:0`` (AIMET's Keras
                          names); a sublayer's ``L/query/kernel:0``
input ``j`` of layer L    ``L/input{j}:0``, when L quantizes an input that
                          is not a model input
inside MultiHeadAttention ``L/query:0``, ``L/scores:0``, ``L/softmax:0``...
                          (AIMET's ``<wrapper>/<quantizer>:0``)
========================  ===============================================

:func:`load_encodings` reads any encodings file aimet_keras or AIMET writes
(0.6.1, 1.0.0, 2.0.0, AdaRound's flat file) and sets the sim's grids by
these names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import typing
import warnings

import keras
import numpy as np

from aimet_keras.export import encodings as encodings_lib
from aimet_keras.export import staging as staging_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.quant import encoding as encoding_lib
from aimet_keras.sim import internals as internals_lib
from aimet_keras.sim import wrapper as wrapper_lib

if typing.TYPE_CHECKING:
    from aimet_keras.sim.quantsim import QuantizationSimModel


__all__ = ["export_sim", "load_encodings", "tensor_names"]


@dataclasses.dataclass(frozen=True)
class SiteNames:
    """The exported names of one call of a layer.

    Attributes:
        layer: the layer (wrapper) name.
        inputs: per input tensor, its name, or None where the export adds no
            name (an internal tensor the layer does not quantize).
        outputs: per output tensor, its name.
        params: ``{weight key: name}`` for quantized weights.
        internals: ``{inner tensor: name}`` for quantized tensors inside the
            layer (MultiHeadAttention's).
    """

    layer: str
    inputs: tuple
    outputs: tuple
    params: dict
    internals: dict


def tensor_names(sim: QuantizationSimModel) -> list[SiteNames]:
    """The exported tensor name of every call site of a sim's model.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel`.

    Returns:
        A list of :class:`SiteNames`, in the order the graph runs.

    Example:

    >>> inputs = keras.Input((4,), name="features")
    >>> outputs = keras.layers.Dense(2, name="fc")(inputs)
    >>> sim = QuantizationSimModel(keras.Model(inputs, outputs))
    >>> names = tensor_names(sim)[0]
    >>> names.inputs, names.outputs, names.params["kernel"]
    (('features:0',), ('fc:0',), 'fc/kernel:0')
    """
    prepared = sim._prepared
    input_names = {id(t): t.name for t in prepared.inputs}
    wrappers = {w.name: w for w in sim.quant_wrappers()}
    calls, used, plan = {}, set(), []
    for site in prepare_lib.walk(prepared):
        name = site.operation.name
        wrapper = wrappers[name]
        call = calls.get(name, 0)
        calls[name] = call + 1
        stem = name if call == 0 else f"{name}_call{call}"
        inputs = []
        for j, (tensor, quantizer) in enumerate(
            zip(site.inputs, wrapper.input_quantizers)
        ):
            candidate = None
            if id(tensor) in input_names:
                candidate = f"{input_names[id(tensor)]}:0"
            if quantizer.enabled and (candidate is None or candidate in used):
                candidate = f"{stem}/input{j}:0"
            if quantizer.enabled:
                used.add(candidate)
            inputs.append(candidate)
        outputs = tuple(f"{stem}:{i}" for i in range(len(site.outputs)))
        params = {
            key: f"{name}/{key}:0"
            for key, quantizer in wrapper.param_quantizers.items()
            if quantizer.enabled
        }
        internals = {
            tensor: f"{stem}/{tensor}:0"
            for tensor, quantizer in wrapper.internal_quantizers.items()
            if quantizer.enabled
        }
        plan.append(SiteNames(name, tuple(inputs), outputs, params, internals))
    return plan


def _quantizer_table(sim):
    """``{tensor name: (quantizer, "param"|"activation")}``."""
    wrappers = {w.name: w for w in sim.quant_wrappers()}
    table = {}
    for names in tensor_names(sim):
        wrapper = wrappers[names.layer]
        for name, quantizer in zip(names.inputs, wrapper.input_quantizers):
            if name is not None and quantizer.enabled:
                table.setdefault(name, (quantizer, "activation"))
        for name, quantizer in zip(names.outputs, wrapper.output_quantizers):
            table[name] = (quantizer, "activation")
        for key, name in names.params.items():
            table[name] = (wrapper.param_quantizers[key], "param")
        for tensor, name in names.internals.items():
            table[name] = (wrapper.internal_quantizers[tensor], "activation")
    return table


def _check_calibrated(sim):
    training_layers = [
        w.name for w in sim.quant_wrappers() if w.quantizes_own_weights
    ]
    if training_layers:
        raise ValueError(
            f"Layers {training_layers} still train with batch norm folding "
            "simulated (aimet_keras.qat.FoldedBatchNorm); call "
            "aimet_keras.qat.finalize_batch_norm_folding(sim) to turn them "
            "into the folded layers deployment runs, then export."
        )
    missing = [
        quantizer.name
        for wrapper in sim.quant_wrappers()
        for quantizer in wrapper.quantizers
        if quantizer.enabled
        and quantizer.data_type == "int"
        and not quantizer.is_initialized
    ]
    if missing:
        raise ValueError(
            f"The sim is not calibrated: {len(missing)} quantizer(s) have no "
            f"encoding (first: {missing[0]!r}). Call sim.compute_encodings "
            "(or load_encodings_to_sim) before exporting."
        )


def sim_encodings(sim, version="0.6.1"):
    """The sim's encodings as an AIMET encodings dict (the file's JSON).

    Args:
        sim: a calibrated :class:`~aimet_keras.sim.QuantizationSimModel`.
        version: ``"0.6.1"``, ``"1.0.0"`` or ``"2.0.0"``. Defaults to
            ``"0.6.1"``.

    Returns:
        The JSON-serializable dict.
    """
    _check_calibrated(sim)
    params, activations = {}, {}
    for name, (quantizer, kind) in _quantizer_table(sim).items():
        encoding = quantizer.encoding
        if encoding is not None:
            (params if kind == "param" else activations)[name] = encoding
    # 2.0.0 names the channel axis of per-channel weights, counted from 0.
    axes = {}
    for wrapper in sim.quant_wrappers():
        for weight, quantizer in wrapper.quantized_weights():
            axis = quantizer.axis
            if isinstance(axis, tuple):
                # A depthwise kernel's channels span (in, multiplier); with
                # a multiplier of 1 they lie on one axis, which 2.0.0 needs.
                spread = [a for a in axis if weight.shape[a] != 1]
                axis = spread[0] if len(spread) == 1 else None
            if isinstance(axis, int):
                key = wrapper_lib.weight_key(wrapper.layer, weight)
                axes[f"{wrapper.name}/{key}:0"] = axis % len(weight.shape)
    return encodings_lib.encodings_to_dict(
        params,
        activations,
        version=version,
        quantizer_args=sim.quantizer_args(),
        axes=axes,
    )


def _fp32_serving_function(sim):
    """The FP32 model as a function whose tensors carry the export names."""
    import tensorflow as tf

    prepared = sim._prepared
    plan = tensor_names(sim)
    placeholders = {f"{t.name}:0" for t in prepared.inputs}

    def serve(*inputs):
        computed = {id(x): y for x, y in zip(prepared.inputs, inputs)}
        named_weights = {}  # a shared layer's weights are named once
        for site, names in zip(prepare_lib.walk(prepared), plan):
            values = {}
            for tensor, name in zip(site.inputs, names.inputs):
                value = computed[id(tensor)]
                if name is not None and name not in placeholders:
                    value = _named(tf, value, name)
                values[id(tensor)] = value
            args, kwargs = site.node.arguments.fill_in(values)
            layer = site.operation
            mapping = []
            for weight in getattr(layer, "weights", []):
                name = names.params.get(wrapper_lib.weight_key(layer, weight))
                if name is not None:
                    if name not in named_weights:
                        named_weights[name] = _named(tf, weight.value, name)
                    mapping.append((weight, named_weights[name]))
            if isinstance(layer, keras.layers.Layer):
                kwargs["training"] = False
            hooks = contextlib.nullcontext()
            if names.internals:
                hooks = internals_lib.internal_hooks(
                    layer,
                    lambda tensor, value, internals=names.internals: _named(
                        tf, value, internals[tensor], absolute=True
                    ),
                )
            # The layer's own ops go under a scope of their own, so that the
            # export names stay free.
            with tf.name_scope("fp32"), hooks:
                with keras.StatelessScope(state_mapping=mapping):
                    outputs = layer(*args, **kwargs)
            outputs = tf.identity_n(
                keras.tree.flatten(outputs), name=names.outputs[0][:-2]
            )
            for tensor, value, name in zip(
                site.outputs, outputs, names.outputs
            ):
                _check_name(value, name)
                computed[id(tensor)] = value
        flat = [computed[id(x)] for x in keras.tree.flatten(prepared.outputs)]
        return keras.tree.pack_sequence_as(prepared._outputs_struct, flat)

    signature = [
        tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in prepared.inputs
    ]
    return serve, signature


def _named(tf, value, name, absolute=False):
    if name is None:
        return value
    if absolute:
        # Inside a layer's name scope: re-enter the root scope (a scope
        # name ending in "/" is taken as is).
        scope, _, op_name = name[:-2].rpartition("/")
        with tf.compat.v1.get_default_graph().name_scope(f"{scope}/"):
            named = tf.identity(value, name=op_name)
    else:
        named = tf.identity(value, name=name[:-2])
    _check_name(named, name)
    return named


def _check_name(tensor, name):
    if tensor.name != name:
        raise RuntimeError(
            f"Exporting tensor {name!r}: the graph named it {tensor.name!r} "
            "(two layers' export names clash). Rename one of the layers."
        )


def _write_saved_model(sim, path):
    serve, signature = _fp32_serving_function(sim)
    archive = keras.export.ExportArchive()
    archive.track(sim._prepared)
    archive.add_endpoint("serve", serve, input_signature=signature)
    archive.write_out(str(path), verbose=False)


def export_sim(
    sim: QuantizationSimModel,
    path: str | os.PathLike,
    filename_prefix: str,
    encoding_version: str = "0.6.1",
) -> dict[str, pathlib.Path]:
    """Writes the SavedModel, the ``.keras`` sim and the encodings file.

    Everything is written into a temporary folder next to the targets and
    moved into place only once complete: a failed export leaves nothing.

    Args:
        sim: a calibrated :class:`~aimet_keras.sim.QuantizationSimModel`.
        path: the folder to write into (created if missing).
        filename_prefix: the file names' stem.
        encoding_version: ``"0.6.1"`` (default), ``"1.0.0"`` or ``"2.0.0"``.

    Returns:
        ``{"saved_model": ..., "keras": ..., "encodings": ...}`` paths.

    Raises:
        ValueError: for an uncalibrated sim, an unknown encoding version or a
            prefix that is not a plain file name.
    """
    if encoding_version not in encodings_lib.ENCODING_VERSIONS:
        raise ValueError(
            f"encoding_version={encoding_version!r}; use one of "
            f"{encodings_lib.ENCODING_VERSIONS}."
        )
    if not filename_prefix or os.sep in filename_prefix:
        raise ValueError(
            f"filename_prefix={filename_prefix!r} must be a plain file name "
            "(put folders in path)."
        )
    data = sim_encodings(sim, encoding_version)
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    targets = {
        "saved_model": path / filename_prefix,
        "keras": path / f"{filename_prefix}.keras",
        "encodings": path / f"{filename_prefix}.encodings",
    }
    with staging_lib.staged_files(targets) as staged:
        encodings_lib.write_encodings(staged["encodings"], data)
        sim.model.save(staged["keras"])
        _write_saved_model(sim, staged["saved_model"])
    return targets


def load_encodings(
    sim: QuantizationSimModel,
    path: str | os.PathLike,
    params_only: bool = False,
) -> list[str]:
    """Sets a sim's grids from an encodings file; returns what was set.

    Quantizers take the file's bitwidth, symmetry and data type. An enabled
    quantizer the file does not name is disabled, as AIMET does (with a
    warning naming them); with ``params_only`` only the params the file
    names are touched. A file that names the tensors of the model's ONNX
    copy (what :func:`~aimet_keras.export_onnx` writes, and AIMET's ONNX
    tools for the tf2onnx copy) is read through
    :func:`~aimet_keras.export.onnx.onnx_tensor_names`. 32-bit bias
    encodings (AIMET's 2.0.0 files hold them) are skipped where the sim
    keeps that bias float or derives its 32-bit step from the input's and
    kernel's, as AIMET does not simulate them either; they are not counted
    as set. Such a derived bias stays enabled where the file has no
    encoding for it.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel`.
        path: an encodings file (0.6.1, 1.0.0, 2.0.0 or AdaRound's flat
            parameter file).
        params_only: read only the param encodings. Defaults to False.

    Returns:
        The names of the quantizers set.

    Raises:
        ValueError: for a tensor name the sim does not have, an encoding
            that does not fit its quantizer, or a grid the sim cannot hold
            (beyond float32, or narrower than AIMET's minimum range of
            0.01, which the sim would widen), naming the tensor and file.
            A refused file leaves the sim as it was.
    """
    table = _quantizer_table(sim)
    biases = _bias_quantizers(sim)
    param_names = [n for n, (_, kind) in table.items() if kind == "param"]
    param_names += [n for n in biases if n not in table]
    params, activations = encodings_lib.read_encodings(path, param_names)
    if any(name not in table for name in {**params, **activations}):
        params, activations = _from_onnx_names(
            sim, path, param_names, params, activations
        )
    params = _without_32_bit_biases(params, biases)
    wanted = {"param": params, "activation": activations}
    for kind, section in wanted.items():
        if params_only and kind == "activation":
            continue
        for name in section:
            if name not in table or table[name][1] != kind:
                known = sorted(n for n, (_, k) in table.items() if k == kind)
                raise ValueError(
                    f"{path}: {kind} tensor {name!r} is not a tensor of this "
                    f"sim's model; its {kind} tensors are "
                    f"{known[:8]}{' ...' if len(known) > 8 else ''}. Export "
                    "the encodings from a sim of the same model."
                )
    named = params if params_only else {**params, **activations}
    if table and not named:
        raise ValueError(
            f"{path} holds no encodings for this sim"
            + (" (none of its params)" if params_only else "")
            + "; loading it would disable every quantizer. Check that it "
            "is the encodings file of this model."
        )
    for name, encoding in named.items():
        try:
            _check_holdable(encoding)
        except ValueError as error:
            raise ValueError(f"{path}: tensor {name!r}: {error}") from None
    done, loaded, disabled = set(), [], []
    # All or nothing: a tensor the sim refuses halfway through the file
    # puts back the quantizers set before it.
    saved = [_saved_settings(quantizer) for quantizer, _ in table.values()]
    try:
        for name, (quantizer, kind) in table.items():
            if params_only and kind == "activation":
                continue
            encoding = wanted[kind].get(name)
            if encoding is None:
                if params_only or quantizer.tied_to_product:
                    # set_and_freeze leaves the other weights alone; a 32-bit
                    # bias takes its step from the input and kernel loaded.
                    continue
                if quantizer.enabled and id(quantizer) not in done:
                    quantizer.enabled = False
                    disabled.append(name)
                continue
            if id(quantizer) in done:
                continue
            try:
                _set_from_file(quantizer, encoding)
            except ValueError as error:
                raise ValueError(f"{path}: tensor {name!r}: {error}") from None
            done.add(id(quantizer))
            loaded.append((quantizer, encoding))
    except ValueError:
        for settings in saved:
            _restore_settings(settings)
        raise
    # A tied grid the file gives another value is the file's from now on.
    for quantizer, encoding in loaded:
        if quantizer.tied and not _same_grid(quantizer.encoding, encoding):
            quantizer.untie()
    if disabled:
        # AIMET disables them too; say so, a partial file is often a mistake.
        warnings.warn(
            f"{path} has no encodings for {len(disabled)} enabled "
            f"quantizer(s) of this sim, now disabled: {disabled[:5]}"
            f"{' ...' if len(disabled) > 5 else ''}.",
            stacklevel=3,
        )
    sim._retrace()
    return sorted(
        name for name, (quantizer, _) in table.items() if id(quantizer) in done
    )


def _from_onnx_names(sim, path, param_names, params, activations):
    """The file's encodings keyed by the sim's names, where it names the
    tensors of the sim's ONNX copy; as read where it does not."""
    named = {**params, **activations}
    try:
        from aimet_keras.export import onnx as onnx_lib

        translate, fp32 = onnx_lib._onnx_copy(sim)
    except ImportError:
        return params, activations  # the unknown names are reported later
    except ValueError as error:
        unknown = next(n for n in named if n not in _quantizer_table(sim))
        raise ValueError(
            f"{path}: tensor {unknown!r} is not a tensor of this sim; to "
            "read it as a name of the model's ONNX copy the sim must convert "
            f"to ONNX, and: {error}"
        ) from None
    missing = [name for name in named if name not in translate]
    if len(missing) == len(named):
        return params, activations  # not ONNX names: reported later
    near, other, foreign = onnx_lib.unquantized_onnx_tensors(
        fp32, translate, missing
    )
    if foreign:
        raise ValueError(
            f"{path}: tensor {foreign[0]!r} is a tensor of neither this sim "
            f"nor its ONNX copy, whose names {len(named) - len(missing)} of "
            f"the file's {len(named)} entries use ({len(foreign)} unknown: "
            f"{foreign[:5]}). Export the encodings from a sim of the same "
            "model, or from AIMET's sim of its ONNX copy."
        )
    # 2.0.0 files have one list: sort it by the ONNX copy's param names.
    onnx_params = [n for n, ours in translate.items() if ours in param_names]
    params, activations = encodings_lib.read_encodings(path, onnx_params)
    everything = {**params, **activations}
    _warn_unquantized(path, near, other, everything)
    sections = []
    for section in (params, activations):
        ours = {}
        for name, encoding in section.items():
            if name not in translate:
                continue  # a tensor this sim does not quantize: warned
            other_encoding = ours.setdefault(translate[name], encoding)
            if other_encoding is not encoding and not _same_grid(
                other_encoding, encoding
            ):
                raise ValueError(
                    f"{path}: tensor {name!r} and another name of the ONNX "
                    f"copy are both {translate[name]!r} of this sim, with "
                    "different encodings; keep one of them in the file."
                )
        sections.append(ours)
    return tuple(sections)


def _warn_unquantized(path, near, other, encodings):
    """Says which entries of an ONNX-named file the sim has no quantizer
    for, and why they are left out.

    ``near`` and ``other`` are :func:`unquantized_onnx_tensors`' sorting.
    An entry with the grid of a mapped tensor one clipping or value-moving
    op away is AIMET's 2.0.0 export copying that grid; one with a grid of
    its own is a quantizer AIMET's sim has and this sim does not.
    """
    copies, extra = [], list(other)
    for name, (op, mapped) in near.items():
        if _same_grid(encodings.get(mapped), encodings[name]):
            copies.append(f"{name} (= {mapped} across {op})")
        else:
            extra.append(name)
    lines = []
    if copies:
        lines.append(
            f"{len(copies)} repeat the grid of a tensor the sim quantizes, "
            "across an op that only clips or moves values (AIMET's 2.0.0 "
            f"export writes such copies): {copies[:3]}"
            f"{' ...' if len(copies) > 3 else ''}"
        )
    if extra:
        lines.append(
            f"{len(extra)} are quantizers of AIMET's sim that this sim "
            "lacks (e.g. a convolution's output the sim fuses with the "
            "activation after it, or a constant input), so their grids are "
            f"not simulated: {sorted(extra)[:5]}"
            f"{' ...' if len(extra) > 5 else ''}"
        )
    if lines:
        warnings.warn(
            f"{path}: {len(copies) + len(extra)} entries name tensors of the "
            "model's ONNX copy that this sim does not quantize, left out; "
            + "; ".join(lines)
            + ".",
            stacklevel=4,
        )


def _bias_quantizers(sim):
    """``{tensor name: quantizer}`` of every bias, quantized or not."""
    return {
        f"{wrapper.name}/{key}:0": quantizer
        for wrapper in sim.quant_wrappers()
        for key, quantizer in wrapper.param_quantizers.items()
        if key == "bias"
    }


def _without_32_bit_biases(params, biases):
    """``params`` less the 32-bit bias grids of biases the sim keeps float.

    AIMET writes 32-bit bias encodings (export_int32_bias) and does not
    simulate them; a sim that keeps its biases float keeps doing so. A bias
    whose 32-bit step the sim takes from its input's and kernel's
    (``tie_to_product``) is loaded as any tied grid is: it stays tied where
    the file's grid is that product (as AIMET writes it), and takes the
    file's grid where not.
    """
    kept = {}
    for name, encoding in params.items():
        quantizer = biases.get(name)
        if (
            quantizer is not None
            and not encoding.is_float
            and encoding.bitwidth >= 32
            and not quantizer.enabled
        ):
            continue
        kept[name] = encoding
    return kept


# What loading a file may change on a quantizer.
_LOADED_SETTINGS = (
    "enabled",
    "data_type",
    "bitwidth",
    "exponent_bits",
    "is_symmetric",
    "strict_symmetric",
    "unsigned_symmetric",
    "_initialized",
)


def _saved_settings(quantizer):
    values = {key: getattr(quantizer, key) for key in _LOADED_SETTINGS}
    variables = []
    if quantizer.built:
        variables = [
            (v, v.numpy())
            for v in (
                quantizer.encoding_min,
                quantizer.encoding_max,
                quantizer.has_encoding,
            )
        ]
    return quantizer, values, variables


def _restore_settings(saved):
    quantizer, values, variables = saved
    for key, value in values.items():
        setattr(quantizer, key, value)
    for variable, value in variables:
        variable.assign(value)


_FLOAT32 = np.finfo(np.float32)


def _check_holdable(encoding):
    """A file's grid must be one the sim can hold: in float32, at least
    MIN_RANGE wide."""
    if encoding.delta is None:
        return
    values = [np.abs(np.asarray(encoding.delta, np.float64))]
    if encoding.min is not None:
        values += [
            np.abs(np.asarray(v, np.float64))
            for v in (encoding.min, encoding.max)
        ]
    if any(np.any(v > _FLOAT32.max) for v in values) or np.any(
        values[0] < _FLOAT32.tiny
    ):
        raise ValueError(
            f"the grid (scale {encoding.delta!r}, range {encoding.min!r} to "
            f"{encoding.max!r}) does not fit float32, which the sim keeps "
            f"grids in (scales from {_FLOAT32.tiny:.3g}, ranges up to "
            f"{_FLOAT32.max:.3g})."
        )
    if encoding.is_float:
        return
    width = np.asarray(encoding.max, np.float64) - np.asarray(
        encoding.min, np.float64
    )
    if np.any(width < encoding_lib.MIN_RANGE * (1 - 1e-6)):
        raise ValueError(
            f"the grid spans {float(np.min(width)):.3g}, less than the "
            f"{encoding_lib.MIN_RANGE} every grid of the sim spans (AIMET's "
            "minimum range); the sim would compute on a wider grid than "
            "the file's."
        )


def _same_grid(a, b):
    """Whether integer encoding ``a`` is the grid file encoding ``b`` says
    (a symmetric ``b`` that cannot say whether its lowest level is used,
    a 2.0.0 int<b> with zero point 0, fits either)."""
    return (
        a is not None
        and not a.is_float
        and not b.is_float
        and a.bitwidth == b.bitwidth
        and (
            np.array_equal(np.asarray(a.offset), np.asarray(b.offset))
            or (
                a.is_symmetric and b.is_symmetric and b.strict_symmetric is None
            )
        )
        and np.allclose(a.delta, b.delta, rtol=1e-6, atol=0.0)
    )


def _set_from_file(quantizer, encoding):
    quantizer.enabled = True
    if encoding.is_float:
        quantizer.data_type = "float"
        quantizer.bitwidth = encoding.bitwidth
        quantizer.exponent_bits = encoding.exponent_bits
        if encoding.delta is not None:  # an 8-bit format's scale
            quantizer.set_encoding(encoding)
        return
    quantizer.data_type = "int"
    quantizer.exponent_bits = None
    quantizer.bitwidth = encoding.bitwidth
    quantizer.is_symmetric = encoding.is_symmetric
    if encoding.strict_symmetric is not None:  # None: the file cannot say
        quantizer.strict_symmetric = bool(encoding.strict_symmetric)
    quantizer.unsigned_symmetric = bool(encoding.unsigned_symmetric)
    if quantizer.axis is None and encoding.is_per_channel:
        raise ValueError(
            f"the file has {encoding.num_channels} per-channel encodings; "
            f"quantizer {quantizer.name} is per-tensor. Build the sim with a "
            "per-channel config."
        )
    if quantizer.axis is not None and not encoding.is_per_channel:
        # One grid for every channel of a per-channel quantizer.
        channels = quantizer.observer.num_channels
        encoding = encoding_lib.compute_encoding(
            np.full(channels, float(np.squeeze(encoding.min))),
            np.full(channels, float(np.squeeze(encoding.max))),
            encoding.bitwidth,
            encoding.is_symmetric,
            encoding.strict_symmetric,
            encoding.unsigned_symmetric,
        )
    quantizer.set_encoding(encoding)
