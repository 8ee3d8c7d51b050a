"""Manual mixed precision: other bitwidths for chosen layers of a sim.

A sim's quantsim config gives every activation the same bitwidth
(``default_output_bw``). Transformers break that: a few tensors, the residual
sums and the LayerNorms that read them, carry outliers in a handful of
hidden dimensions (an FFN output of 260 where most values are below 2,
Bondarenko et al. 2021, "Understanding and Overcoming the Challenges of
Efficient Transformer Quantization"), and an 8-bit grid wide enough for the
outliers rounds every other value to a few levels. Their first remedy, and
what AIMET's manual mixed precision does (``aimet_torch``'s
``MixedPrecisionConfigurator``), is to keep those tensors at 16 bits and the
rest at 8.

:func:`set_precision` does that on a built sim: it sets the bitwidth of the
chosen layers' quantizers, before :meth:`~aimet_keras.sim.
QuantizationSimModel.compute_encodings` (grids are then computed at the new
bitwidth) or after it (grids are computed again from the calibration
statistics and the weights; an encoding loaded from a file keeps its range).
Exported encodings carry each tensor's own bitwidth.
"""

from __future__ import annotations

import typing

import numpy as np

from aimet_keras.quant import encoding as encoding_lib
from aimet_keras.sim import spec as spec_lib

if typing.TYPE_CHECKING:
    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = ["set_precision"]


def _matcher(sim, layers):
    """A predicate on a wrapper from names, op types, classes or callables."""
    if isinstance(layers, (str, type)) or callable(layers):
        layers = [layers]
    tests = []
    for item in layers:
        if isinstance(item, str):
            # A layer name, or an op type as the quantsim config names it
            # (``x + y`` in a functional graph is an "Add" but no
            # keras.layers.Add).
            tests.append(
                lambda wrapper, key=item: (
                    key
                    in (
                        wrapper.layer.name,
                        sim.specs[wrapper.layer.name].op_type,
                    )
                )
            )
        elif isinstance(item, type):
            tests.append(
                lambda wrapper, cls=item: isinstance(wrapper.layer, cls)
            )
        elif callable(item):
            tests.append(lambda wrapper, test=item: test(wrapper.layer))
        else:
            raise TypeError(
                f"set_precision: {item!r} is not a layer name, an op type, a "
                "layer class or a callable taking a layer."
            )
    return lambda wrapper: any(test(wrapper) for test in tests)


def _data_type(target):
    """``(data_type, bitwidth, exponent_bits)`` of a set_precision target
    (None stays None)."""
    from aimet_keras.quant import float_formats

    if target is None:
        return None
    if isinstance(target, str):
        if target in float_formats.FORMATS:
            fmt = float_formats.FORMATS[target]
            return "float", fmt.bitwidth, fmt.exponent_bits
        if target.startswith("int") and target[3:].isdigit():
            encoding_lib._check_bitwidth(int(target[3:]))
            return "int", int(target[3:]), None
        raise ValueError(
            f"set_precision: {target!r} is not a data type; use a bitwidth, "
            f"'int<bits>' or a float format: {sorted(float_formats.FORMATS)}."
        )
    encoding_lib._check_bitwidth(target)
    return "int", target, None


def _type_of(quantizer):
    return quantizer.data_type, quantizer.bitwidth, quantizer.exponent_bits


def _set_type(quantizer, data_type, bitwidth, exponent_bits):
    """An activation quantizer's new type, its grid recomputed."""
    if _type_of(quantizer) == (data_type, bitwidth, exponent_bits):
        return
    encoding = quantizer.encoding if quantizer.is_initialized else None
    quantizer.data_type = data_type
    quantizer.bitwidth = bitwidth
    quantizer.exponent_bits = exponent_bits
    calibrated = data_type == "int" or quantizer.scaled_float
    if not calibrated:
        return  # a cast needs no grid
    if encoding is None or encoding.max is None:
        quantizer._initialized = False  # calibrate again
        return
    if int(quantizer.observer.num_updates.numpy()) > 0:
        # Calibrated here: the observer still holds the statistics, so the
        # grid is the one calibrating at this type gives.
        quantizer.compute_encoding()
        return
    # An encoding set or loaded: its range on the new grid (the old grid's
    # zero-point nudge, up to half an old step, stays in the range).
    if quantizer.scaled_float:
        largest = np.maximum(np.abs(encoding.min), np.abs(encoding.max))
        quantizer.set_encoding(
            encoding_lib.float_encoding(
                bitwidth,
                exponent_bits,
                largest / quantizer._float_format.largest,
            )
        )
        return
    quantizer.set_encoding(
        encoding_lib.compute_encoding(
            encoding.min,
            encoding.max,
            bitwidth,
            quantizer.is_symmetric,
            quantizer.strict_symmetric,
            quantizer.unsigned_symmetric,
        )
    )


def set_precision(
    sim: QuantizationSimModel,
    layers: object,
    activation: int | str | None = None,
    param: int | str | None = None,
) -> list[str]:
    """Sets the bitwidth or data type of the chosen layers' quantizers.

    A bitwidth (an int) changes enabled integer quantizers only: a tensor
    the config leaves in float (or simulates as fp16) stays so. A data type
    by name changes every enabled quantizer but 32-bit ones (biases) to
    that type: ``"int8"``, ``"int4"``, ``"int16"``..., or a float format,
    ``"fp16"``, ``"bf16"``, ``"fp8_e4m3"``, ``"fp8_e5m2"`` (see
    :mod:`aimet_keras.quant.float_formats`). Grids are recomputed from the
    statistics of the last calibration, or from the range they had.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel`.
        layers: which layers: a layer name, an op type as the quantsim
            config names it (``"Add"``, ``"LayerNormalization"``,
            ``"Gemm"``; see ``sim.specs``), a Keras layer class (every layer
            of that class), a callable taking the original layer and
            returning a bool, or a list of these.
        activation: bitwidth or data type of the layers' activation
            quantizers (their enabled inputs, outputs and internal tensors,
            such as MultiHeadAttention's softmax), or None to leave them.
        param: bitwidth or data type of the layers' weight quantizers
            (biases and LayerNorm's beta keep theirs), or None to leave
            them.

    Returns:
        The names of the quantizers set: activations, then weights, each
        in layer order.

    Raises:
        ValueError: when no layer of the sim matches ``layers``, for a
            bitwidth out of range, or for a weight whose encoding was set
            and frozen.

    Example:

    >>> from aimet_keras.ptq import set_precision
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.Dense(4, name="fc")(inputs)
    >>> x = keras.layers.Add(name="residual")([x, x])
    >>> x = keras.layers.LayerNormalization(name="norm")(x)
    >>> sim = QuantizationSimModel(keras.Model(inputs, x))  # W8A8
    >>> set_precision(
    ...     sim, ["Add", "LayerNormalization"], activation=16)
    ['residual_output0', 'norm_output0']
    >>> sim.compute_encodings(np.random.default_rng(0).random((8, 4)))
    >>> sim.model.get_layer("residual").output_quantizers[0].encoding.bitwidth
    16
    """
    activation_type = _data_type(activation)
    param_type = _data_type(param)
    matches = _matcher(sim, layers)
    wrappers = [w for w in sim.quant_wrappers() if matches(w)]
    if not wrappers:
        raise ValueError(
            f"set_precision: no layer of the sim matches {layers!r}; layer "
            "names are those of sim.model's wrapped layers."
        )

    def chosen(quantizers, target):
        if isinstance(target, int):
            return [q for q in quantizers if q.enabled and q.data_type == "int"]
        return [q for q in quantizers if q.enabled and q.bitwidth != 32]

    activations, params = [], []
    for wrapper in wrappers:
        if activation is not None:
            activations += chosen(
                [
                    *wrapper.input_quantizers,
                    *wrapper.output_quantizers,
                    *wrapper.internal_quantizers.values(),
                ],
                activation,
            )
        if param is not None:
            # Biases keep their own grids (32 bits where the config says).
            weights = [
                q
                for key, q in wrapper.param_quantizers.items()
                if not spec_lib.is_bias_weight(key.split("/")[-1])
            ]
            params += chosen(weights, param)
    frozen = [q.name for q in params if id(q) in sim._frozen]
    if frozen:
        raise ValueError(
            f"set_precision: the encodings of {frozen} were set and frozen "
            "(set_and_freeze_param_encodings, AdaRound) at their bitwidth; "
            "set the precision before freezing them."
        )
    for quantizer in activations:
        _set_type(quantizer, *activation_type)
    recompute = any(
        q.is_initialized and _type_of(q) != param_type for q in params
    )
    for quantizer in params:
        quantizer.data_type, quantizer.bitwidth, quantizer.exponent_bits = (
            param_type
        )
    if recompute:
        # A weight's grid comes from the weight: computed again, as
        # compute_encodings would, for the quantizers whose bitwidth changed.
        sim._compute_param_encodings()
    # Bitwidths are baked into traced functions.
    sim._retrace()
    return [q.name for q in activations + params]
