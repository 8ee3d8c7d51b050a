"""The sim as a TensorFlow graph of TF's own fake-quantization ops.

Converters understand ``tf.quantization.fake_quant_with_min_max_vars``
(and its per-channel form): the TFLite converter turns each into the
quantization parameters of the tensor it sits on, tf2onnx into a
QuantizeLinear / DequantizeLinear pair. :func:`deployment_graph` traces the
sim's model with every calibrated quantizer replaced by such an op carrying
the sim's grid, so the exported model uses the sim's encodings instead of
re-calibrating:

* weights are constants already on the sim's grid (AdaRound's rounding
  included), under a fake-quant op with the same step, so the converter's
  re-quantization is lossless;
* activations get the sim's ``(min, max)``; a grid of fewer bits than the
  target's integer type is stored in it with the same step, and an
  explicit clip keeps the sim's range;
* per-channel grids on an axis other than the last (DepthwiseConv2D's
  ``(H, W, C, M)`` kernel) are reshaped so that the channel axis is last,
  as the per-channel op requires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing

import keras
import numpy as np
import tensorflow as tf

from aimet_keras import _quiet
from aimet_keras.quant import encoding as encoding_lib
from aimet_keras.quant import quantize as quantize_lib
from aimet_keras.sim import export as sim_export
from aimet_keras.sim import layer_norm as layer_norm_lib
from aimet_keras.sim import quantizer as quantizer_lib
from aimet_keras.sim import spec as spec_lib

if typing.TYPE_CHECKING:
    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = [
    "DeploymentGraph",
    "QuantizerRole",
    "deployment_graph",
    "input_signature",
]

# The widest grid TF's fake-quantization ops take.
_MAX_FAKE_QUANT_BITS = 16


@dataclasses.dataclass(frozen=True)
class QuantizerRole:
    """Where one quantizer of the sim sits.

    Attributes:
        layer: the layer (wrapper) name.
        kind: ``"input"``, ``"output"``, ``"param"`` or ``"internal"``.
        key: the input/output index, the weight key or the inner tensor's
            name.
    """

    layer: str
    kind: str
    key: object

    @property
    def is_bias(self) -> bool:
        """An additive weight (``bias``, LayerNorm's ``beta``): AIMET's
        configs quantize these as biases, to 32 bits where they are."""
        name = str(self.key).split("/")[-1]
        return self.kind == "param" and spec_lib.is_bias_weight(name)

    def describe(self) -> str:
        """``"conv1 output 0"``, ``"conv1 weight 'kernel'"``..."""
        if self.kind == "param":
            return f"{self.layer} weight {self.key!r}"
        return f"{self.layer} {self.kind} {self.key}"


def quantizer_roles(sim):
    """``{id(quantizer): QuantizerRole}`` for every quantizer of the sim."""
    roles = {}
    for wrapper in sim.quant_wrappers():
        for i, quantizer in enumerate(wrapper.input_quantizers):
            roles[id(quantizer)] = QuantizerRole(wrapper.name, "input", i)
        for i, quantizer in enumerate(wrapper.output_quantizers):
            roles[id(quantizer)] = QuantizerRole(wrapper.name, "output", i)
        for key, quantizer in wrapper.param_quantizers.items():
            roles[id(quantizer)] = QuantizerRole(wrapper.name, "param", key)
        for key, quantizer in wrapper.internal_quantizers.items():
            roles[id(quantizer)] = QuantizerRole(wrapper.name, "internal", key)
    return roles


@dataclasses.dataclass
class DeploymentGraph:
    """A traced deployment function and what it holds.

    Attributes:
        function: the ``tf.function`` (traced once, inside the override).
        concrete_function: its concrete function.
        input_signature: the ``tf.TensorSpec`` of each model input, batch
            dimension unknown.
        layer_scopes: ``{layer name: [name scope of each call]}``: the TF
            name scope every op of that call of the layer is created in.
        fake_quant_ops: ``{op name: (QuantizerRole, the sim's Encoding)}``
            for every fake-quantization op in the graph (names without
            ``:0``).
        frozen_function: the concrete function with its variables turned
            into constants, what converters read (unfrozen, the TFLite
            converter keeps unquantized weights as READ_VARIABLE ops).
    """

    function: object
    concrete_function: object
    input_signature: list
    layer_scopes: dict
    fake_quant_ops: dict
    frozen_function: object = None

    def __post_init__(self):
        def longest_first(pairs):
            return sorted(pairs, key=lambda pair: -len(pair[0]))

        items = self.layer_scopes.items()
        self._first_scopes = longest_first(
            (scopes[0], layer) for layer, scopes in items if scopes
        )
        self._all_scopes = longest_first(
            (scope, layer) for layer, scopes in items for scope in scopes
        )

    def owner(self, name: str, all_calls: bool = False) -> str | None:
        """The layer whose name scope holds an op or tensor name, or None.

        A converter names what it makes after the TF ops behind it
        (TFLite joins a fused op's names with ``;``, the last op first):
        the layer whose scope holds the first of them owns it.

        Args:
            name: a TFLite tensor or ONNX node name.
            all_calls: match any call of a shared layer, not only its
                first. Defaults to False.
        """
        first = name.split(";")[0]
        scopes = self._all_scopes if all_calls else self._first_scopes
        for scope, layer in scopes:
            if first.startswith(scope + "/"):
                return layer
        return None


def fake_quant_range(encoding, bits, narrow_range):
    """``(min, max)`` for a fake-quant op of ``bits`` holding ``encoding``.

    The op's grid has the encoding's step and contains every level of the
    encoding's grid: the same grid when ``bits`` is the encoding's
    bitwidth, a wider one starting at the same level when a smaller grid is
    stored in a larger integer type (the caller clips to the encoding's
    range). A narrow-range op (symmetric weights) is centred on zero with
    levels ``[-2^(b-1)+1, 2^(b-1)-1]``.

    Args:
        encoding: an integer :class:`~aimet_keras.quant.Encoding`.
        bits: the op's ``num_bits``, at least the encoding's bitwidth.
        narrow_range: the op's ``narrow_range``.

    Returns:
        Two float32 arrays (0-d per tensor, 1-d per channel).

    Example:

    >>> from aimet_keras.quant import compute_encoding
    >>> enc = compute_encoding(0.0, 1.5, bitwidth=4)  # step 0.1
    >>> [round(float(v), 6) for v in fake_quant_range(enc, 8, False)]
    [0.0, 25.5]
    """
    delta = np.asarray(encoding.delta, np.float64)
    if narrow_range:
        half = 2 ** (bits - 1) - 1
        lo, hi = -half * delta, half * delta
    else:
        lo = np.asarray(encoding.offset, np.float64) * delta
        hi = lo + (2**bits - 1) * delta
    return lo.astype(np.float32), hi.astype(np.float32)


def fake_quant(
    x, encoding, axis=None, bits=None, narrow_range=False, name=None
):
    """``x`` through TF's fake-quant op with ``encoding``'s grid.

    Args:
        x: a float tensor.
        encoding: its integer encoding (per tensor, or per channel along
            ``axis``).
        axis: the channel axis (an int or a tuple) of a per-channel
            encoding.
        bits: the op's ``num_bits``; defaults to the encoding's bitwidth.
        narrow_range: a narrow, zero-centred grid (symmetric weights).
        name: the op's name.

    Returns:
        The fake-quantized tensor.

    Example:

    >>> from aimet_keras.quant import compute_encoding
    >>> enc = compute_encoding(0.0, 2.55, bitwidth=8)  # step 0.01
    >>> round(float(fake_quant(tf.constant([1.004]), enc)[0]), 6)
    1.0
    """
    bits = encoding.bitwidth if bits is None else bits
    lo, hi = fake_quant_range(encoding, bits, narrow_range)
    if not encoding.is_per_channel:
        return tf.quantization.fake_quant_with_min_max_vars(
            x,
            float(lo),
            float(hi),
            num_bits=bits,
            narrow_range=narrow_range,
            name=name,
        )
    shape = x.shape
    rank = shape.rank
    axes = quantize_lib.channel_axes(axis, rank)
    # The per-channel op takes its channels on the last axis: move them
    # there (several channel axes flattened into one) and back after.
    order = [a for a in range(rank) if a not in axes] + list(axes)
    moved = x if order == list(range(rank)) else tf.transpose(x, order)
    moved_shape = [shape[a] for a in order]
    channels = int(np.prod([shape[a] for a in axes]))
    flat = tf.reshape(moved, [*moved_shape[: rank - len(axes)], channels])
    out = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        flat, lo, hi, num_bits=bits, narrow_range=narrow_range, name=name
    )
    out = tf.reshape(out, moved_shape)
    if order == list(range(rank)):
        return out
    return tf.transpose(out, np.argsort(order).tolist())


def zero_centred(encoding, bits):
    """The ``bits`` grid with ``encoding``'s step and zero point 0.

    Example:

    >>> from aimet_keras.quant import compute_encoding
    >>> enc = zero_centred(compute_encoding(0.0, 2.55, 8), 16)
    >>> int(enc.offset), enc.bitwidth
    (-32768, 16)
    """
    delta = np.asarray(encoding.delta, np.float64)
    offset = np.full_like(delta, -(2 ** (bits - 1)))
    return dataclasses.replace(
        encoding,
        bitwidth=bits,
        min=offset * delta,
        max=(offset + 2**bits - 1) * delta,
        offset=offset,
        is_symmetric=True,
        strict_symmetric=False,
        unsigned_symmetric=False,
    )


def _off_ties(x, encoding):
    """``x`` a thousandth of a step away from the zero of the signed
    integer it is stored in, so that a tie rounds that way under any
    rounding (see ``TensorQuantizer(ties_away_from_zero=True)``)."""
    delta = float(encoding.delta)
    level = encoding_lib.signed_level(
        x,
        delta,
        float(encoding.offset),
        encoding.bitwidth,
        encoding.is_symmetric,
    )
    return x + tf.where(level < 0, -1e-3 * delta, 1e-3 * delta)


def _float_round_trip(quantizer, x, scale=1.0):
    """``x`` cast to the quantizer's float format and back (an 8-bit
    format's scale times ``scale``, as a scaled weight needs)."""
    encoding = quantizer.encoding
    if encoding.delta is not None and scale != 1.0:
        encoding = encoding_lib.float_encoding(
            encoding.bitwidth, encoding.exponent_bits, encoding.delta * scale
        )
    return quantize_lib.quantize_dequantize(x, encoding, axis=quantizer.axis)


def _per_channel(values, channels):
    """``values`` as one float per channel of the last axis, or None when
    they vary along another axis."""
    values = np.asarray(values, np.float64)
    if values.size == 1:
        return np.full(channels, float(values.reshape(())))
    if values.ndim and values.shape[-1] == channels and values.size == channels:
        return values.reshape(channels)
    return None


def _is_layer_scale(layer):
    cls = type(layer)
    return (cls.__module__, cls.__name__) == (
        "keras.src.applications.convnext",
        "LayerScale",
    )


def _affine_values(layer, channels):
    import keras

    if type(layer) is keras.layers.Rescaling:
        scale = _per_channel(layer.scale, channels)
        offset = _per_channel(layer.offset, channels)
    elif type(layer) is keras.layers.Normalization:
        if layer.invert:
            return None
        mean = _per_channel(keras.ops.convert_to_numpy(layer.mean), channels)
        variance = _per_channel(
            keras.ops.convert_to_numpy(layer.variance), channels
        )
        if mean is None or variance is None:
            return None
        scale = 1.0 / np.maximum(np.sqrt(variance), keras.config.epsilon())
        offset = -mean * scale
    elif type(layer) is keras.layers.BatchNormalization:
        # A batch norm no conv could absorb (DenseNet's, after a concat),
        # at inference: its moving statistics.
        ndim = layer.input_spec.ndim if layer.input_spec else None
        if layer.axis != -1 and (ndim is None or layer.axis != ndim - 1):
            return None
        read = keras.ops.convert_to_numpy
        variance = _per_channel(read(layer.moving_variance), channels)
        mean = _per_channel(read(layer.moving_mean), channels)
        gamma = (
            _per_channel(read(layer.gamma), channels)
            if layer.scale
            else np.ones(channels)
        )
        beta = (
            _per_channel(read(layer.beta), channels)
            if layer.center
            else np.zeros(channels)
        )
        scale = gamma / np.sqrt(variance + layer.epsilon)
        offset = beta - mean * scale
    elif _is_layer_scale(layer):
        scale = _per_channel(keras.ops.convert_to_numpy(layer.gamma), channels)
        offset = np.zeros(channels)
    else:
        return None
    return scale, offset


def affine_factors(layer, channels):
    """``(scale, offset)`` per channel of an element-wise affine layer.

    ``Rescaling`` computes ``x * scale + offset``, ``Normalization``
    ``(x - mean) / sqrt(variance)``, ``BatchNormalization`` at inference
    its moving statistics' affine map and ConvNeXt's ``LayerScale``
    ``x * gamma``: each is ``x * a + b`` with one ``a`` and ``b`` per
    channel of the last axis. Returns None for any other
    layer, or factors that vary along another axis or scale a channel by
    zero.

    Example:

    >>> import keras
    >>> a, b = affine_factors(keras.layers.Rescaling(0.5, offset=-1.0), 2)
    >>> a.tolist(), b.tolist()
    ([0.5, 0.5], [-1.0, -1.0])
    """
    # The factors are weights: read them eagerly, also inside a trace.
    with tf.init_scope():
        factors = _affine_values(layer, channels)
    if factors is None:
        return None
    scale, offset = factors
    if scale is None or offset is None or not np.all(scale != 0):
        return None
    return scale, offset


def sum_of_squares(x):
    """``sum(x * x)`` over the last axis (kept), as one integer matmul.

    TFLite's BATCH_MATMUL of ``x`` with itself accumulates the products of
    integer levels in int32, so only the sum is rounded (to the grid of the
    fake-quant op that follows); MEAN over a SQUARED_DIFFERENCE would round
    every square to the activation type first.

    Example:

    >>> sum_of_squares(tf.constant([[1.0, 2.0], [3.0, 0.0]])).numpy().tolist()
    [[5.0], [9.0]]
    """
    channels = x.shape[-1]
    rows = tf.reshape(x, [-1, 1, channels])
    sums = tf.matmul(rows, rows, transpose_b=True)
    if all(d is not None for d in x.shape[1:]):
        shape = [-1, *x.shape[1:-1], 1]
    else:
        shape = tf.concat([tf.shape(x)[:-1], [1]], axis=0)
    return tf.reshape(sums, shape)


def integer_affine(x, scale, offset):
    """``x * scale + offset`` as a 1x1 depthwise convolution with bias.

    TFLite has no integer op for a per-channel affine map, and as a MUL
    then an ADD it needs a grid for the product that the sim does not
    have. A 1x1 depthwise convolution is one int8 op: each channel's scale
    is its kernel's only value, exact on its own per-channel int8 grid
    (``scale = 127 * step``), the offset its bias; the op's output is
    requantized to the layer's output grid as the sim does.

    Args:
        x: a float tensor, channels last.
        scale: one factor per channel.
        offset: one offset per channel.
    """
    channels = len(scale)
    shape = tf.shape(x)
    images = tf.reshape(x, [-1, 1, 1, channels]) if x.shape.rank != 4 else x
    # A zero factor (a LayerNormalization gamma rounded to 0) is level 0 of
    # any grid: give its channel a unit one.
    magnitude = np.where(scale == 0, 1.0, np.abs(scale))
    with tf.init_scope():  # eager, also while a graph is traced
        grid = encoding_lib.compute_encoding(
            -magnitude, magnitude, bitwidth=8, is_symmetric=True
        )
    kernel = fake_quant(
        tf.constant(scale.reshape(1, 1, channels, 1), tf.float32),
        grid,
        axis=(2, 3),
        narrow_range=True,
    )
    out = tf.nn.depthwise_conv2d(
        images, kernel, strides=[1, 1, 1, 1], padding="VALID"
    )
    out = tf.nn.bias_add(out, tf.constant(offset, tf.float32))
    return out if x.shape.rank == 4 else tf.reshape(out, shape)


def _scaled(encoding, scale):
    """``encoding`` with its step and range times ``scale``: the same
    levels, so ``Q_scaled(x) * (1 / scale) == Q(x / scale)``."""
    return dataclasses.replace(
        encoding,
        min=np.asarray(encoding.min, np.float64) * scale,
        max=np.asarray(encoding.max, np.float64) * scale,
        delta=np.asarray(encoding.delta, np.float64) * scale,
    )


_QUERY_WEIGHTS = ("query/kernel", "query/bias")


def _query_scale(layer):
    """MultiHeadAttention's query factor, ``1 / sqrt(key_dim)``."""
    with tf.init_scope():
        return float(keras.ops.convert_to_numpy(layer._inverse_sqrt_key_dim))


def _query_before_scaling(layer, query):
    """``(projected query, factor)`` where ``query = projected * factor``.

    MultiHeadAttention scales its projected query by ``1 / sqrt(key_dim)``
    before the sim quantizes it; the export folds the factor into the
    projection's weights and takes the projection's output as the query.
    Returns ``(None, None)`` where the tensor is not that product.
    """
    if getattr(query, "op", None) is None or query.op.type != "Mul":
        return None, None
    factor = _query_scale(layer)
    first, second = query.op.inputs
    for tensor, other in ((first, second), (second, first)):
        if other.op.type == "Const":
            value = tf.get_static_value(other)
            if value is not None and np.allclose(value, factor):
                return tensor, factor
    return None, None


def _layer_norm_affine(wrapper, constants, channels):
    """``(scale, offset)`` of a decomposed LayerNormalization's last step,
    from the weights the sim uses (quantized where their quantizer is on)."""
    layer = wrapper.layer
    values = {}
    for variable, quantizer in wrapper.quantized_weights():
        if quantizer.enabled:
            values[variable.name] = constants[id(quantizer)]
    with tf.init_scope():  # eager, also while a graph is traced

        def value(name, present):
            if not present:
                return None
            if name in values:
                return values[name]
            return np.asarray(getattr(layer, name).numpy())

        return layer_norm_lib.decomposed_affine(
            value("gamma", layer.scale), value("beta", layer.center), channels
        )


def _integer_layer_norm_step(wrapper, role, inputs, inner, constants):
    """One step of a decomposed LayerNormalization, as TFLite's int8 ops.

    The sim's own ops compute every step but three, which are recomputed
    from the quantized tensors before them (the sim's versions are left
    unused, and the converter drops them): the sum of squares as one
    integer matmul (:func:`sum_of_squares`); the reciprocal square root
    without the sim's epsilon floor (TFLite's RSQRT of the sum's level:
    the floor is below the sum's first nonzero level, and at level 0 both
    give the top of the rsqrt grid); and the output as one per-channel
    affine op (:func:`integer_affine`).

    Args:
        wrapper: the LayerNormalization's wrapper.
        role: the :class:`QuantizerRole` about to quantize ``inputs``.
        inputs: the tensor the sim computed for that step.
        inner: ``{inner tensor: quantized value}`` of the steps so far.
        constants: ``{id(param quantizer): quantized weight}``.

    Returns:
        The tensor to quantize for that step.
    """
    if role.kind == "output":
        if "normalized" not in inner:
            return inputs
        normalized = inner["normalized"]
        channels = normalized.shape[-1]
        return integer_affine(
            normalized, *_layer_norm_affine(wrapper, constants, channels)
        )
    if role.key == "sum_squares" and "centred" in inner:
        return sum_of_squares(inner["centred"])
    if role.key == "rsqrt" and "sum_squares" in inner:
        return tf.math.rsqrt(inner["sum_squares"])
    return inputs


def _dense_einsum(equation):
    """``(kept output axes)`` of an einsum that is a dense layer on the
    input's last axes, or None.

    ``"abc,cde->abde"`` (MultiHeadAttention's projections) contracts the
    input's last axis with the kernel's first and appends the kernel's
    others: a matmul of the input's rows, flattened, with the kernel,
    flattened.
    """
    inputs, _, output = equation.replace(" ", "").partition("->")
    x, _, kernel = inputs.partition(",")
    if "." in equation or not kernel:
        return None
    contracted = [c for c in x if c in kernel and c not in output]
    count = len(contracted)
    if not count or x[-count:] != "".join(contracted):
        return None
    batch, kept = x[:-count], kernel[count:]
    if kernel[:count] != x[-count:] or output != batch + kept:
        return None
    return count, len(kept)


def _flat_dense_call(layer):
    """``layer.call`` computing on 2-D rows: RESHAPE, FULLY_CONNECTED with
    its bias, RESHAPE; or None where it does not apply."""
    if isinstance(layer, keras.layers.EinsumDense):
        shape = _dense_einsum(layer.equation)
        if shape is None or layer.activation not in (
            None,
            keras.activations.linear,
        ):
            return None
        contracted, _ = shape
    elif isinstance(layer, keras.layers.Dense):
        contracted = 1
    else:
        return None
    if getattr(layer, "lora_enabled", False) or layer.quantization_mode:
        return None

    own_call = type(layer).call.__get__(layer)

    def call(inputs, *args, **kwargs):
        if inputs.shape.rank <= contracted + 1:
            return own_call(inputs, *args, **kwargs)  # a matmul already
        kernel = layer.kernel
        rows = int(np.prod(kernel.shape[:contracted]))
        columns = int(np.prod(kernel.shape[contracted:]))
        x = tf.reshape(inputs, [-1, rows])
        y = tf.matmul(x, tf.reshape(kernel, [rows, columns]))
        if layer.bias is not None:
            y = tf.nn.bias_add(y, tf.reshape(layer.bias, [columns]))
        lead = tf.shape(inputs)[: inputs.shape.rank - contracted]
        y = tf.reshape(y, tf.concat([lead, kernel.shape[contracted:]], 0))
        activation = getattr(layer, "activation", None)
        return activation(y) if activation is not None else y

    return call


@contextlib.contextmanager
def _flat_dense_calls(sim):
    """Dense and dense-like EinsumDense layers compute on 2-D rows.

    On inputs of rank 3 or more, Keras computes a Dense as a tensordot:
    RESHAPE, MATMUL, RESHAPE, then the bias ADD. The TFLite converter fuses
    a bias into a FULLY_CONNECTED only when the ADD follows it directly,
    so the matmul's output, which the sim does not quantize, would stay
    float. Flattened rows first, the bias is the FULLY_CONNECTED's own
    (int32, as the sim quantizes it); the values are the same.
    """
    patched = []
    for wrapper in sim.quant_wrappers():
        layers = [wrapper.layer]
        if isinstance(wrapper.layer, keras.layers.MultiHeadAttention):
            layers += [
                wrapper.layer._query_dense,
                wrapper.layer._key_dense,
                wrapper.layer._value_dense,
                wrapper.layer._output_dense,
            ]
        for layer in layers:
            call = _flat_dense_call(layer)
            if call is not None:
                object.__setattr__(layer, "call", call)
                patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


def input_signature(
    model: keras.Model,
    input_shapes: dict[str, tuple[int | None, ...]] | None = None,
) -> list[tf.TensorSpec]:
    """A ``tf.TensorSpec`` per model input, the batch axis unknown.

    Args:
        model: a Keras model.
        input_shapes: ``{input name: shape without the batch axis}``, to
            fix axes the model leaves unknown (a sequence length: integer
            accelerators and TFLite delegates want static shapes). Known
            axes must keep their size. Defaults to None (the model's).

    Raises:
        ValueError: for a name that is no input, or a shape that does not
            fit the input, naming it and the model's shape.

    Example:

    >>> import keras
    >>> tokens = keras.Input((None,), dtype="int32", name="token_ids")
    >>> model = keras.Model(tokens, keras.layers.Embedding(10, 4)(tokens))
    >>> input_signature(model, {"token_ids": (32,)})[0].shape.as_list()
    [None, 32]
    """
    shapes = dict(input_shapes or {})
    names = [tensor.name for tensor in model.inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise ValueError(
            f"input_shapes names {unknown}, which are not inputs of "
            f"{model.name!r}; its inputs are {names}."
        )
    signature = []
    for tensor in model.inputs:
        own = tuple(tensor.shape[1:])
        shape = tuple(shapes.get(tensor.name, own))
        if len(shape) != len(own) or any(
            a is not None and a != b for a, b in zip(own, shape)
        ):
            raise ValueError(
                f"input_shapes[{tensor.name!r}] is {shape}, which does not "
                f"fit the input's shape {own} (without the batch axis): "
                "give a size for each axis, the model's where it has one."
            )
        signature.append(
            tf.TensorSpec((None, *shape), tensor.dtype, name=tensor.name)
        )
    return signature


def deployment_graph(
    sim: QuantizationSimModel,
    activation_bits: int = 8,
    weight_bits: int = 8,
    zero_centred_activations: bool = False,
    integer_affine_layers: bool = False,
    input_shapes: dict[str, tuple[int | None, ...]] | None = None,
    explicit_ties: bool = False,
    narrow_weights: bool = True,
) -> DeploymentGraph:
    """Traces the sim's model with TF fake-quant ops carrying its grids.

    Args:
        sim: a calibrated :class:`~aimet_keras.sim.QuantizationSimModel`.
        activation_bits: the integer type activations are stored in (8 or
            16). A grid of fewer bits keeps its step in it and is clipped to
            its own range. Defaults to 8.
        weight_bits: the integer type of weights. Symmetric weight grids
            become narrow-range (zero point 0, as TFLite and most
            accelerators need). Defaults to 8.
        zero_centred_activations: store every activation grid in a
            zero-centred ``activation_bits`` grid of the same step (zero
            point 0, as TFLite's 16x8 mode needs), clipped to its own range.
            Defaults to False.
        integer_affine_layers: compute ``Rescaling``, ``Normalization``,
            ``BatchNormalization`` and ``LayerScale`` layers as one
            integer op (:func:`integer_affine`) from their
            quantized input to their output grid, as TFLite needs; and a
            decomposed ``LayerNormalization`` (see
            :mod:`aimet_keras.sim.layer_norm`) as the integer ops TFLite
            has (:func:`_integer_layer_norm_step`). Defaults to False.
        input_shapes: ``{input name: shape without the batch axis}`` to
            trace with instead of the model's (see :func:`input_signature`);
            the batch axis stays unknown. Defaults to None (the model's).
        explicit_ties: the target rounds ties to even (ONNX's
            ``QuantizeLinear``, and ONNX Runtime's fused average pooling):
            an output whose quantizer rounds ties away from the signed
            integer zero (``ties_away_from_zero``) is moved a thousandth of
            a step that way first, so the target rounds it as the sim does.
            Defaults to False (TFLite's kernels round so themselves).
        narrow_weights: store signed symmetric weight grids narrow-range
            (levels -127 to 127, as TFLite's int8 weights): a non-strict
            grid's level -128 becomes -127. False keeps every level of the
            sim's grid (ONNX's int8 weights take -128); strict grids are
            narrow either way. Defaults to True.

    Returns:
        A :class:`DeploymentGraph`.

    Raises:
        ValueError: for an uncalibrated sim, or ``input_shapes`` that do not
            fit the model's inputs.

    Example:

    >>> import keras
    >>> from aimet_keras.sim import QuantizationSimModel
    >>> inputs = keras.Input((4,), name="x")
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    >>> sim = QuantizationSimModel(model, quant_scheme="tf")
    >>> sim.compute_encodings(np.random.rand(8, 4).astype("float32"))
    >>> graph = deployment_graph(sim)
    >>> sorted(graph.layer_scopes)
    ['fc']
    """
    sim_export._check_calibrated(sim)
    roles = quantizer_roles(sim)
    encodings, constants = {}, {}
    for wrapper in sim.quant_wrappers():
        for quantizer in wrapper.quantizers:
            if quantizer.enabled and quantizer.data_type == "int":
                encodings[id(quantizer)] = quantizer.encoding
        for variable, quantizer in wrapper.quantized_weights():
            if quantizer.enabled:
                # The sim's own quantized weight, AdaRound's rounding and
                # all: the graph holds it as a constant.
                constants[id(quantizer)] = np.asarray(quantizer(variable))
    layer_scopes, fake_quant_ops = {}, {}
    affine = {
        wrapper.name: wrapper.layer
        for wrapper in sim.quant_wrappers()
        if integer_affine_layers
        and len(wrapper.input_quantizers) == 1
        and len(wrapper.output_quantizers) == 1
    }
    # The quantized input of each affine layer, kept until its output.
    affine_inputs = {}
    layer_norms = {
        wrapper.name: wrapper
        for wrapper in sim.quant_wrappers()
        if integer_affine_layers
        and wrapper.internal_quantizers
        and layer_norm_lib.is_layer_norm(wrapper.layer)
    }
    # Each decomposed LayerNormalization's quantized inner tensors.
    layer_norm_tensors = {}
    attentions = {
        wrapper.name: wrapper.layer
        for wrapper in sim.quant_wrappers()
        if integer_affine_layers
        and isinstance(wrapper.layer, keras.layers.MultiHeadAttention)
    }

    def record_scope(layer):
        # The quantizer runs in "<layer scope>/<quantizer name>".
        scope = tf.get_current_name_scope().rsplit("/", 1)[0]
        scopes = layer_scopes.setdefault(layer, [])
        if scope not in scopes:
            scopes.append(scope)

    def override(quantizer, inputs):
        role = roles[id(quantizer)]
        if role.layer in layer_norms and role.kind in ("internal", "output"):
            inner = layer_norm_tensors.setdefault(role.layer, {})
            inputs = _integer_layer_norm_step(
                layer_norms[role.layer], role, inputs, inner, constants
            )
            if role.kind == "output":
                layer_norm_tensors.pop(role.layer)
            else:
                inner[role.key] = inputs = quantized(quantizer, inputs)
                return inputs
            return quantized(quantizer, inputs)
        if role.layer in attentions and role.key in _QUERY_WEIGHTS:
            # The query's scaling by 1 / sqrt(key_dim) folded into its
            # projection: the same integer levels on a grid scaled by the
            # factor, so the projection writes the scaled query at once
            # (a MUL after it would need a grid of its own, and 16x8 has
            # no int16 MUL by an int8 constant).
            factor = _query_scale(attentions[role.layer])
            return quantized(quantizer, inputs, factor)
        if role.layer in attentions and role.key == "query":
            unscaled, _ = _query_before_scaling(attentions[role.layer], inputs)
            if unscaled is None:
                raise ValueError(
                    f"{role.layer}: the query is not its projection times "
                    "1 / sqrt(key_dim) in this Keras version's "
                    "MultiHeadAttention; the TFLite export cannot fold the "
                    "factor into the projection. Export with export_onnx."
                )
            inputs = unscaled  # already scaled: the Mul is left unused
        if role.layer in affine and role.kind in ("input", "output"):
            if role.kind == "input":
                affine_inputs[role.layer] = outputs = quantized(
                    quantizer, inputs
                )
                return outputs
            x = affine_inputs.pop(role.layer, None)
            factors = affine_factors(affine[role.layer], inputs.shape[-1])
            if x is not None and factors:
                # The layer's own float ops are left unused: the
                # converter drops them. With the output quantizer off (a
                # batch norm and ReLU supergroup), TFLite fuses the ReLU
                # into the op, whose output takes the ReLU's grid.
                inputs = integer_affine(x, *factors)
        return quantized(quantizer, inputs)

    def quantized(quantizer, inputs, scale=1.0):
        """``inputs`` on the quantizer's grid (with ``scale`` times its
        step and range: the same levels; a weight is scaled too)."""
        role = roles[id(quantizer)]
        record_scope(role.layer)
        if role.kind == "param":
            if quantizer.enabled:
                inputs = tf.constant(constants[id(quantizer)])
            inputs = inputs * scale if scale != 1.0 else inputs
        if not quantizer.enabled:
            return inputs
        if quantizer.data_type == "float":
            return _float_round_trip(quantizer, inputs, scale)
        encoding = encodings[id(quantizer)]
        if scale != 1.0:
            encoding = _scaled(encoding, scale)
        if encoding.bitwidth > _MAX_FAKE_QUANT_BITS:
            return inputs  # a 32-bit bias: its values are the grid's
        own, clip = encoding, None
        if role.kind == "param":
            bits = max(weight_bits, encoding.bitwidth)
            narrow = (
                encoding.is_symmetric
                and not encoding.unsigned_symmetric
                and (narrow_weights or encoding.strict_symmetric)
            )
        else:
            bits = max(activation_bits, own.bitwidth)
            narrow = own.is_symmetric and own.strict_symmetric
            signed = own.is_symmetric and not own.unsigned_symmetric
            if zero_centred_activations:
                # Zero point 0 over the type's full range, as TFLite's int16
                # activations. A strict symmetric grid of that width is the
                # same but for the lowest level, never reached in practice:
                # no clip for it.
                full_width = signed and bits == own.bitwidth
                encoding, narrow = zero_centred(own, bits), False
                if not full_width:
                    clip = (float(own.min), float(own.max))
            elif bits > own.bitwidth:
                clip = (float(own.min), float(own.max))
            elif narrow and signed:
                # The same grid with the type's lowest level too (reached
                # only beyond the calibrated range, as above): converters
                # take no narrow-range activation op (tf2onnx refuses one).
                encoding, narrow = zero_centred(own, bits), False

        if explicit_ties and quantizer.ties_away_from_zero:
            inputs = _off_ties(inputs, own)

        def emit(x):
            name = f"aimet_fake_quant_{len(fake_quant_ops)}"
            scope = tf.get_current_name_scope()
            fake_quant_ops[f"{scope}/{name}" if scope else name] = (role, own)
            return fake_quant(
                x,
                encoding,
                axis=quantizer.axis,
                bits=bits,
                narrow_range=narrow,
                name=name,
            )

        if clip is None:
            return emit(inputs)
        # A smaller grid in a wider type: the producer's output gets the
        # wide grid first (a fused Conv+ReLU needs a range to stay
        # integer), then a clip on integers keeps the sim's range.
        return emit(tf.clip_by_value(emit(inputs), *clip))

    model = sim.model
    signature = input_signature(model, input_shapes)

    @tf.function(input_signature=signature, autograph=False)
    def serve(*inputs):
        return model(
            inputs[0] if len(inputs) == 1 else list(inputs), training=False
        )

    from tensorflow.python.framework import convert_to_constants

    flat = (
        _flat_dense_calls(sim)
        if integer_affine_layers
        else contextlib.nullcontext()
    )
    with _quiet.quiet_conversion():
        with quantizer_lib.call_override(override), flat:
            concrete = serve.get_concrete_function()
        frozen = convert_to_constants.convert_variables_to_constants_v2(
            concrete
        )
    return DeploymentGraph(
        function=serve,
        concrete_function=concrete,
        input_signature=signature,
        layer_scopes=layer_scopes,
        fake_quant_ops=fake_quant_ops,
        frozen_function=frozen,
    )
