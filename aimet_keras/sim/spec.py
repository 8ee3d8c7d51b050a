"""The quantsim config resolved per layer: which tensors get which grid.

:func:`resolve_layer_specs` applies a :class:`~aimet_keras.sim.QuantSimConfig`
to a model in AIMET's order (defaults, params, op_type, supergroups,
model_input, model_output) and returns a plain :class:`LayerSpec` per layer,
which the wrappers read; nothing downstream reads the config itself.

AIMET's rules kept here:

* a weight is a "bias" when its name contains ``bias`` (or is a
  normalization's ``beta``), else a "weight"; BatchNormalization's and
  Normalization's statistics are never quantized;
* Conv/ConvTranspose/Gemm/MatMul followed by BatchNormalization form a pair:
  the conv's output and the BN's parameters are not quantized;
* a supergroup (e.g. Conv+Relu) leaves only its last op's output quantized;
  a BN paired with its conv is transparent to supergroup matching;
* per-channel weights (Conv, ConvTranspose, Gemm and depthwise) use the
  output-channel axis: -1, -2 for ConvTranspose kernels, (-2, -1) for
  depthwise kernels.
"""

from __future__ import annotations

import dataclasses

import keras

from aimet_keras.graph import connections as connections_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import attention as attention_lib
from aimet_keras.sim import config as config_lib
from aimet_keras.sim import internals as internals_lib
from aimet_keras.sim import layer_norm as layer_norm_lib
from aimet_keras.sim import rules as rules_lib
from aimet_keras.sim import wrapper as wrapper_lib

__all__ = [
    "LayerSpec",
    "QuantizerSpec",
    "resolve_layer_specs",
    "weight_channel_axis",
]

_PAIR_WITH_BN = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Statistics, not weights: BatchNormalization's and Normalization's.
_NEVER_QUANTIZED = (
    "moving_mean",
    "moving_variance",
    "mean",
    "variance",
    "count",
)
# Additive weights that AIMET's configs treat as biases.
_BIAS_NAMES = ("beta",)


def is_bias_weight(name):
    """Whether AIMET's configs treat a weight of this name as a bias.

    Example:

    >>> is_bias_weight("bias"), is_bias_weight("beta"), is_bias_weight("kernel")
    (True, True, False)
    """
    return "bias" in name or name in _BIAS_NAMES


# Ops whose output values are some of their input's (or zero): an
# unquantized output stays on the input's grid.
_GRID_KEEPING_OPS = (
    "Dropout",
    "Flatten",
    "MaxPool",
    "Pad",
    "Reshape",
    "Slice",
    "Squeeze",
    "Transpose",
)
# A batch norm's gamma per channel: each channel's one value is exact on
# its own grid, as in the int8 per-channel op a target runs it as (TFLite:
# a 1x1 depthwise convolution); per tensor, small gammas lost digits that
# the target keeps.
_PER_CHANNEL_OPS = (
    "BatchNormalization",
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
)


@dataclasses.dataclass(frozen=True)
class QuantizerSpec:
    """How one tensor is quantized (``enabled=False``: left in float)."""

    enabled: bool = False
    bitwidth: int = 8
    is_symmetric: bool = False
    strict_symmetric: bool = False
    unsigned_symmetric: bool = False
    axis: object = None
    data_type: str = "int"
    fixed_range: tuple = None
    ties_away_from_zero: bool = False
    exponent_bits: int = None


def resolve_data_type(data_type: str):
    """The float format a sim's ``default_data_type`` names, or None for
    ``"int"`` (``"float"`` is fp16, as in AIMET).

    Example:

    >>> resolve_data_type("fp8_e5m2").exponent_bits
    5
    """
    from aimet_keras.quant import float_formats

    if data_type == "int":
        return None
    if data_type == "float":
        return float_formats.FORMATS["fp16"]
    if data_type in float_formats.FORMATS:
        return float_formats.FORMATS[data_type]
    raise ValueError(
        f"default_data_type={data_type!r}; use 'int', 'float' (fp16) or a "
        f"float format: {sorted(float_formats.FORMATS)}."
    )


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """The quantizers of one layer: per input, per output, per weight.

    ``params`` is keyed by :func:`~aimet_keras.sim.weight_key` (``"kernel"``,
    or ``"query/kernel"`` for a weight of a sublayer). ``known`` is False
    for a layer no rule covers (see :mod:`aimet_keras.sim.rules`).
    ``internals`` holds tensors inside the layer (MultiHeadAttention's
    matmul inputs and outputs and softmax, see
    :mod:`aimet_keras.sim.attention`; a decomposed LayerNormalization's,
    see :mod:`aimet_keras.sim.layer_norm`). ``output_grid_source`` is
    ``(layer name, "input" or "output", index)``: the quantizer whose grid
    the output takes (an op type with ``output_on_input_grid``, or the
    producer of one with ``inputs_on_output_grid``), or None.
    ``bias_grid_source`` is the quantizer whose grid the layer's input is
    on, for a layer with a kernel and a 32-bit bias: the bias then takes
    the step integer kernels give it, input step x weight step (see
    :meth:`~aimet_keras.sim.QuantizationSimModel.compute_encodings`).
    """

    op_type: str
    inputs: tuple
    outputs: tuple
    params: dict
    known: bool = True
    internals: dict = dataclasses.field(default_factory=dict)
    output_grid_source: tuple = None
    bias_grid_source: tuple = None


def weight_channel_axis(
    layer: keras.layers.Layer,
    weight_name: str,
    rule: rules_lib.QuantizationRule | None = None,
) -> int | tuple[int, ...]:
    """The output-channel axis of a layer's weight, by AIMET's rules.

    Depthwise kernels ``(H, W, I, M)`` flatten their last two axes,
    transposed-conv kernels ``(H, W, O, I)`` use -2, everything else
    (Conv, Dense, pointwise and bias) the last axis.

    Args:
        layer: a Keras layer.
        weight_name: the weight's name, such as ``"kernel"``.

    Returns:
        An int or a tuple of ints for
        :func:`~aimet_keras.quant.quantize_dequantize`'s ``axis``.

    Example:

    >>> weight_channel_axis(keras.layers.DepthwiseConv2D(3), "kernel")
    (-2, -1)
    >>> weight_channel_axis(keras.layers.Conv2DTranspose(2, 3), "kernel")
    -2
    """
    rule = rule or rules_lib.rule_for(layer)
    layer = getattr(layer, "quantization_proxy", None) or layer
    if weight_name in rule.channel_axes:
        return rule.channel_axes[weight_name]
    kind = type(layer).__name__
    if weight_name == "depthwise_kernel" or (
        kind.startswith("DepthwiseConv") and weight_name == "kernel"
    ):
        return (-2, -1)
    if kind.endswith("Transpose") and weight_name == "kernel":
        return -2
    return -1


def _fused_outputs(connections, config, kinds):
    """Layers whose output quantizer a Conv+BN pair or supergroup turns off.

    Returns:
        ``(fused layer names, BN layers paired with a conv)``.
    """
    paired_convs, paired_bns = set(), set()
    for name in connections.consumers:
        consumer = connections.sole_consumer(name)
        if kinds[name] in _PAIR_WITH_BN and consumer:
            if kinds[consumer] == "BatchNormalization":
                paired_convs.add(name)
                paired_bns.add(consumer)
    fused = set(paired_convs)
    for group in config.supergroups:
        for start in connections.consumers:
            chain, name = [], start
            for index, op in enumerate(group):
                if name is None or kinds.get(name) != op:
                    break
                chain.append(name)
                if index + 1 == len(group):
                    fused.update(chain[:-1])
                    break
                following = connections.sole_consumer(name)
                # A BN paired with its conv is transparent, unless the
                # group names it.
                if name in paired_convs and group[index + 1] != (
                    "BatchNormalization"
                ):
                    chain.append(following)
                    following = connections.sole_consumer(following)
                name = following
    return fused, paired_bns


def resolve_layer_specs(
    model: keras.Model,
    config: object = None,
    default_output_bw: int = 8,
    default_param_bw: int = 8,
    default_data_type: str = "int",
) -> dict[str, LayerSpec]:
    """Resolves a quantsim config into a :class:`LayerSpec` per layer.

    Args:
        model: a built Functional or Sequential ``keras.Model``.
        config: anything :func:`~aimet_keras.sim.load_quantsim_config`
            takes. Defaults to AIMET's default config.
        default_output_bw: activation bitwidth. Defaults to 8.
        default_param_bw: weight bitwidth (a param's ``bitwidth`` in the
            config wins). Defaults to 8.
        default_data_type: ``"int"``; ``"float"`` for fp16; or a float
            format's name, ``"fp16"``, ``"bf16"``, ``"fp8_e4m3"`` or
            ``"fp8_e5m2"`` (see :mod:`aimet_keras.quant.float_formats`):
            every quantizer then takes that format, whatever the
            bitwidths. Defaults to ``"int"``.

    Returns:
        ``{layer name: LayerSpec}`` for every layer but the input layers.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> x = keras.layers.ReLU(name="relu")(x)
    >>> specs = resolve_layer_specs(keras.Model(inputs, x))
    >>> specs["conv"].outputs[0].enabled, specs["relu"].outputs[0].enabled
    (False, True)
    >>> specs["conv"].params["kernel"].is_symmetric
    True
    """
    config = config_lib.load_quantsim_config(config)
    model = prepare_lib._as_functional(model)
    connections = connections_lib.layer_connections(model)
    sites = {}
    for site in prepare_lib.walk(model):
        sites.setdefault(site.operation.name, site)
    rules = {n: rules_lib.rule_for(s.operation) for n, s in sites.items()}
    kinds = {n: rule.op_type for n, rule in rules.items()}
    fused, paired_bns = _fused_outputs(connections, config, kinds)
    float_format = resolve_data_type(default_data_type)

    def tensor_spec(enabled, symmetric, bitwidth, axis=None, fixed=None):
        if float_format is not None and bitwidth != 32:
            # (A 32-bit tensor, such as a bias, stays float32.)
            bitwidth = float_format.bitwidth
        return QuantizerSpec(
            enabled=bool(enabled),
            bitwidth=bitwidth,
            is_symmetric=bool(symmetric),
            strict_symmetric=config.strict_symmetric,
            unsigned_symmetric=config.unsigned_symmetric,
            axis=axis,
            data_type="int" if float_format is None else "float",
            fixed_range=fixed,
            exponent_bits=None
            if float_format is None or bitwidth == 32
            else float_format.exponent_bits,
        )

    def is_float(tensor):
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        return keras.backend.is_float_dtype(dtype)

    def activation_settings(kind):
        op = config.op_types.get(kind, config_lib.OpTypeSettings())
        symmetric = (
            op.is_symmetric
            if op.is_symmetric is not None
            else config.activation_symmetric
        )
        output_on = (
            op.is_output_quantized
            if op.is_output_quantized is not None
            else config.output_quantized
        )
        return op, symmetric, output_on

    specs = {}
    for name, site in sites.items():
        layer, kind, rule = site.operation, kinds[name], rules[name]
        op, symmetric, output_on = activation_settings(kind)
        if name in fused:
            output_on = False
        if (
            name in connections.model_output_layers
            and config.model_output_quantized
        ):
            output_on = True
        inputs = tuple(
            tensor_spec(
                is_float(tensor)
                and (
                    bool(op.is_input_quantized)
                    or (source is None and config.model_input_quantized)
                ),
                symmetric,
                default_output_bw,
            )
            for source, tensor in zip(connections.producers[name], site.inputs)
        )
        outputs = tuple(
            tensor_spec(
                output_on and is_float(t),
                symmetric,
                default_output_bw,
                fixed=op.encoding_constraints,
            )
            for t in site.outputs
        )
        per_channel = (
            op.per_channel_quantization
            if op.per_channel_quantization is not None
            else config.per_channel_quantization
        ) and kind in _PER_CHANNEL_OPS
        params = {}
        for weight in getattr(layer, "weights", []):
            key = wrapper_lib.weight_key(layer, weight)
            role = "bias" if is_bias_weight(weight.name) else "weight"
            merged = [config.param_defaults, config.params.get(role)]
            merged += [config.params.get(weight.name), op.params.get(role)]
            merged.append(op.params.get(weight.name))
            settings = {}
            for source in merged:
                for field in ("is_quantized", "is_symmetric", "bitwidth"):
                    value = getattr(source, field, None) if source else None
                    if value is not None:
                        settings[field] = value
            enabled = settings.get("is_quantized", False)
            if weight.name in _NEVER_QUANTIZED or name in paired_bns:
                enabled = False
            if not rule.known or (
                rule.weights is not None and key not in rule.weights
            ):
                enabled = False
            bitwidth = settings.get("bitwidth", default_param_bw)
            # A 32-bit bias goes per channel with its kernel: it takes the
            # step input step x weight step (see bias_grid_source).
            axis = (
                weight_channel_axis(layer, weight.name, rule)
                if per_channel and (role == "weight" or bitwidth == 32)
                else None
            )
            params[key] = tensor_spec(
                enabled,
                settings.get("is_symmetric", False),
                bitwidth,
                axis,
            )
        internals = {}
        if attention_lib.has_internal_tensors(layer):
            for tensor in attention_lib.ATTENTION_TENSORS:
                inner_kind = "Softmax" if tensor == "softmax" else "MatMul"
                inner, inner_symmetric, inner_on = activation_settings(
                    inner_kind
                )
                # The softmax's fixed grid too (TFLite's 1/256 for int8).
                internals[tensor] = tensor_spec(
                    inner_on,
                    inner_symmetric,
                    default_output_bw,
                    fixed=inner.encoding_constraints,
                )
        elif (
            op.decomposed_quantization
            and layer_norm_lib.is_layer_norm(layer)
            and not layer_norm_lib.unsupported_reason(
                layer, len(site.inputs[0].shape)
            )
        ):
            # The target runs it as integer ops: each one's output has a
            # grid (the op type's output settings; see the module for why
            # the centred tensor's is symmetric).
            _, inner_symmetric, inner_on = activation_settings(kind)
            for tensor in layer_norm_lib.LAYER_NORM_TENSORS:
                internals[tensor] = tensor_spec(
                    inner_on,
                    inner_symmetric
                    or tensor in layer_norm_lib.SYMMETRIC_TENSORS,
                    default_output_bw,
                )
        elif op.decomposed_quantization and internals_lib.partial_sums(
            layer, len(site.inputs)
        ):
            # An Add of 3+ inputs: the target's two-input adds write each
            # partial sum on a grid (the Add's output settings, also where
            # a fused ReLU takes its output's).
            _, inner_symmetric, inner_on = activation_settings(kind)
            for tensor in internals_lib.partial_sums(layer, len(site.inputs)):
                internals[tensor] = tensor_spec(
                    inner_on, inner_symmetric, default_output_bw
                )
        elif op.decomposed_quantization and internals_lib.activation_tensors(
            layer
        ):
            # swish's sigmoid takes a Sigmoid output's grid (TFLite's fixed
            # 1/256 for int8), hard sigmoid's relu6(x + 3) a Relu's.
            inner, inner_symmetric, inner_on = activation_settings(
                internals_lib.activation_grid_op_type(layer)
            )
            (tensor,) = internals_lib.activation_tensors(layer)
            internals[tensor] = tensor_spec(
                inner_on,
                inner_symmetric,
                default_output_bw,
                fixed=inner.encoding_constraints,
            )
        if internals_lib.patch_embedding_tensors(layer):
            # Flat, the patches are a Concat's output.
            _, inner_symmetric, inner_on = activation_settings("Concat")
            internals["tokens"] = tensor_spec(
                inner_on, inner_symmetric, default_output_bw
            )
        specs[name] = LayerSpec(
            kind, inputs, outputs, params, rule.known, internals
        )
    for name, spec in specs.items():
        op, _, _ = activation_settings(spec.op_type)
        if op.output_ties_away_from_zero and spec.outputs:
            first = dataclasses.replace(
                spec.outputs[0], ties_away_from_zero=True
            )
            spec = specs[name] = dataclasses.replace(
                spec, outputs=(first, *spec.outputs[1:])
            )
        if op.output_on_input_grid and spec.outputs and spec.outputs[0].enabled:
            source = _input_grid_source(name, specs, connections)
            if source is not None:
                specs[name] = dataclasses.replace(
                    spec, output_grid_source=source
                )
    for name in list(specs):
        op, _, _ = activation_settings(specs[name].op_type)
        if op.inputs_on_output_grid:
            for producer in _producers_on_output_grid(name, specs, connections):
                specs[producer] = dataclasses.replace(
                    specs[producer], output_grid_source=(name, "output", 0)
                )
    for name, spec in specs.items():
        if _has_int32_bias(spec):
            source = _input_grid_source(name, specs, connections, None)
            if source is not None:
                specs[name] = dataclasses.replace(
                    specs[name], bias_grid_source=source
                )
    return specs


def _has_int32_bias(spec):
    """A quantized kernel and a 32-bit integer bias, and no other weight."""
    kernels = [key for key in spec.params if key != "bias"]
    return (
        "bias" in spec.params
        and len(kernels) == 1
        and all(
            spec.params[key].enabled and spec.params[key].data_type == "int"
            for key in spec.params
        )
        and spec.params["bias"].bitwidth == 32
    )


_OUTPUT = object()  # the layer's own output quantizer


def _grid_kind(quantizer):
    """What two quantizers on one grid share: bits and kind of grid."""
    return quantizer.bitwidth, quantizer.is_symmetric, quantizer.data_type


def _producers_on_output_grid(name, specs, connections):
    """The producers of ``name`` that can round onto its output grid.

    Each is not a model output, has one enabled output quantizer of the
    same kind as ``name``'s, on a grid of its own (not a fixed one, not
    tied to another). ``name``'s inputs are left unquantized. A producer
    that also feeds other layers takes the grid too: TFLite would
    requantize it into the concatenation otherwise, and the sim cannot
    round as XNNPACK's 8-bit requantization multiplier does.
    """
    spec = specs[name]
    if len(spec.outputs) != 1 or not spec.outputs[0].enabled:
        return []
    wanted = spec.outputs[0]
    found = []
    for index, producer in enumerate(connections.producers[name]):
        if index < len(spec.inputs) and spec.inputs[index].enabled:
            continue
        if (
            producer is None
            or producer not in specs
            or producer in found
            or producer in connections.model_output_layers
        ):
            continue
        before = specs[producer]
        if len(before.outputs) != 1 or before.output_grid_source is not None:
            continue
        quantizer = before.outputs[0]
        if (
            quantizer.enabled
            and quantizer.fixed_range is None
            and _grid_kind(quantizer) == _grid_kind(wanted)
        ):
            found.append(producer)
    return found


def _input_grid_source(name, specs, connections, wanted=_OUTPUT):
    """The quantizer whose grid ``name``'s one input is on, or None.

    Its own input quantizer, else the producer's output quantizer, looking
    through ops whose output is left unquantized and is a selection of
    their input's values (max pooling, reshapes, padding, dropout). The
    quantizer found must have the bits and kind of grid of ``wanted`` (by
    default the layer's output quantizer), or be any integer quantizer
    when ``wanted`` is None.
    """
    spec = specs[name]
    if len(spec.inputs) != 1:
        return None
    if wanted is _OUTPUT:
        wanted = spec.outputs[0]

    def matches(quantizer):
        if wanted is None:
            return quantizer.enabled and quantizer.data_type == "int"
        return quantizer.enabled and _grid_kind(quantizer) == _grid_kind(wanted)

    if spec.inputs[0].enabled:
        return (name, "input", 0) if matches(spec.inputs[0]) else None
    producer = connections.producers[name][0]
    while producer is not None and producer in specs:
        before = specs[producer]
        if len(before.outputs) != 1:
            return None
        if before.outputs[0].enabled:
            return (
                (producer, "output", 0) if matches(before.outputs[0]) else None
            )
        if before.op_type not in _GRID_KEEPING_OPS or len(before.inputs) != 1:
            return None
        if before.inputs[0].enabled:
            return (producer, "input", 0) if matches(before.inputs[0]) else None
        producer = connections.producers[producer][0]
    return None
