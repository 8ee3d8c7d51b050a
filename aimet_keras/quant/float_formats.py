"""Floating-point formats the simulation can quantize to.

AIMET describes a float format by its exponent and mantissa bits
(``FloatQuantizeDequantize(exponent_bits, mantissa_bits, ...)``) and a
``finite`` flag for formats that spend the all-ones exponent on numbers
instead of infinities. The 16-bit formats are plain casts; the 8-bit
formats (and any narrower one) are scaled: a calibrated ``scale`` maps the
tensor's largest magnitude to the format's largest finite value, so
``y = scale * cast(x / scale)``, which is ONNX's ``QuantizeLinear`` with a
float8 output type and AIMET's 2.0.0 encoding of an 8-bit float tensor.

========== ============== ============== ======== =====================
name       exponent bits  mantissa bits  finite   largest value
========== ============== ============== ======== =====================
fp16       5              10             no       65504
bf16       8              7              no       3.39e38
fp8_e4m3   4              3              yes      448 (OCP E4M3FN)
fp8_e5m2   5              2              no       57344 (OCP E5M2)
========== ============== ============== ======== =====================
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

__all__ = [
    "FORMATS",
    "FloatFormat",
    "float_format",
    "float_quantize_dequantize",
]


@dataclasses.dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: sign, exponent and mantissa bits.

    ``finite`` formats have no infinities: the all-ones exponent holds
    numbers, and only its all-ones mantissa is NaN (OCP's E4M3FN).

    Example:

    >>> fmt = FloatFormat("fp8_e4m3", 4, 3, finite=True)
    >>> fmt.bitwidth, fmt.largest, fmt.smallest_normal
    (8, 448.0, 0.015625)
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    finite: bool = False

    @property
    def bitwidth(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def largest(self) -> float:
        """The largest finite value."""
        m = self.mantissa_bits
        if self.finite:
            # The top exponent holds numbers; its last mantissa is NaN.
            top = 2**self.exponent_bits - 1 - self.bias
            return float((2 - 2.0 ** (1 - m)) * 2.0**top)
        top = 2**self.exponent_bits - 2 - self.bias
        return float((2 - 2.0**-m) * 2.0**top)

    @property
    def smallest_normal(self) -> float:
        return float(2.0 ** (1 - self.bias))

    @property
    def is_cast(self) -> bool:
        """Whether the format is used unscaled (fp16, bf16)."""
        return self.bitwidth >= 16

    @property
    def onnx_dtype(self) -> str | None:
        """The ONNX tensor type name, where there is one."""
        return {
            "fp16": "float16",
            "bf16": "bfloat16",
            "fp8_e4m3": "float8e4m3fn",
            "fp8_e5m2": "float8e5m2",
        }.get(self.name)


FORMATS = {
    fmt.name: fmt
    for fmt in (
        FloatFormat("fp16", 5, 10),
        FloatFormat("bf16", 8, 7),
        FloatFormat("fp8_e4m3", 4, 3, finite=True),
        FloatFormat("fp8_e5m2", 5, 2),
    )
}

# The format a bitwidth means when no exponent width is given.
_DEFAULT_EXPONENT_BITS = {16: 5, 8: 4}


def float_format(
    bitwidth: int = 16, exponent_bits: int | None = None
) -> FloatFormat:
    """The float format of ``bitwidth`` bits with ``exponent_bits``.

    Args:
        bitwidth: 8 or 16 (32 is float32 itself and has no format here).
        exponent_bits: 4 or 5 at 8 bits (E4M3, E5M2), 5 or 8 at 16 bits
            (fp16, bf16). Defaults to E4M3 and fp16.

    Returns:
        A :class:`FloatFormat`.

    Raises:
        ValueError: for a combination that is not one of :data:`FORMATS`.

    Example:

    >>> float_format(8, 5).name, float_format(16).name
    ('fp8_e5m2', 'fp16')
    """
    if exponent_bits is None:
        exponent_bits = _DEFAULT_EXPONENT_BITS.get(bitwidth)
    for fmt in FORMATS.values():
        if (fmt.bitwidth, fmt.exponent_bits) == (bitwidth, exponent_bits):
            return fmt
    choices = ", ".join(
        f"{f.name} (bitwidth={f.bitwidth}, exponent_bits={f.exponent_bits})"
        for f in FORMATS.values()
    )
    raise ValueError(
        f"No float format has bitwidth={bitwidth!r} and exponent_bits="
        f"{exponent_bits!r}; use one of: {choices}."
    )


def _binade(magnitude):
    """``floor(log2(magnitude))`` of float32 values, exactly: their exponent
    field (float32 subnormals and zero count as the smallest normal)."""
    bits = tf.bitcast(magnitude, tf.int32)
    field = tf.bitwise.right_shift(bits, 23)
    return tf.cast(tf.maximum(field, 1) - 127, tf.float32)


def _round_to_format(x, fmt):
    """``x`` (float32) rounded to the nearest value of ``fmt``, ties to
    even, saturated at its largest value; NaN and inf pass through."""
    exponent = tf.maximum(_binade(tf.abs(x)), 1.0 - fmt.bias)
    # Subnormals share the smallest normal exponent's step.
    step = tf.pow(2.0, exponent - fmt.mantissa_bits)
    rounded = tf.round(x / step) * step  # half to even
    largest = tf.constant(fmt.largest, x.dtype)
    saturated = tf.clip_by_value(rounded, -largest, largest)
    return tf.where(tf.math.is_finite(x), saturated, x)


def float_quantize_dequantize(
    x: tf.Tensor, fmt: FloatFormat, scale: tf.Tensor | float = 1.0
) -> tf.Tensor:
    """Rounds ``x`` to the float format ``fmt`` and back (fake cast).

    16-bit formats are casts (``scale`` is ignored); narrower formats round
    ``x / scale`` to the nearest value of the format (ties to even),
    saturate at its largest finite value and multiply by ``scale`` again.
    The gradient is straight-through inside the representable range and
    zero where saturated.

    Args:
        x: a float tensor.
        fmt: a :class:`FloatFormat` (see :func:`float_format`).
        scale: scalar or broadcastable float tensor; calibration sets it to
            ``max |x| / fmt.largest``. Defaults to 1.0.

    Returns:
        A tensor like ``x``.

    Example:

    >>> fp8 = float_format(8)
    >>> x = tf.constant([0.3, 1.1, 500.0])
    >>> float_quantize_dequantize(x, fp8).numpy().tolist()
    [0.3125, 1.125, 448.0]
    """
    x = tf.convert_to_tensor(x)
    if fmt.name == "fp16":
        from aimet_keras.quant import quantize as quantize_lib

        return quantize_lib._cast_to_fp16(x)
    if fmt.name == "bf16":
        return _cast_straight_through(x, tf.bfloat16)
    dtype = x.dtype
    x32 = tf.cast(x, tf.float32)
    scale = tf.cast(scale, tf.float32)
    y = _scaled_fake_cast(x32, scale, fmt)
    return tf.cast(y, dtype)


def _cast_straight_through(x, narrow):
    @tf.custom_gradient
    def cast(x):
        return tf.cast(tf.cast(x, narrow), x.dtype), lambda dy: dy

    return cast(x)


def _scaled_fake_cast(x, scale, fmt):
    @tf.custom_gradient
    def fake_cast(x, scale):
        y = _round_to_format(x / scale, fmt) * scale

        def grad(dy):
            inside = tf.abs(x) <= fmt.largest * scale
            return tf.where(inside, dy, tf.zeros_like(dy)), tf.zeros_like(scale)

        return y, grad

    return fake_cast(x, scale)
