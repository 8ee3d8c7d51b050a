"""LayerNormalization as the chain of integer ops a target runs.

TFLite has no LayerNormalization op: an integer runtime computes it as a
chain of element-wise and reduction ops, each writing its result on a grid
of its own. The simulation predicts such a target only if it quantizes the
same intermediate tensors, so under a quantsim config whose
``LayerNormalization`` entry sets ``"decomposed_quantization": "True"``
(the shipped ``tflite_int8`` and ``tflite_16x8`` configs do) the layer runs
as :func:`layer_norm_hooks` computes it, with a hook on five tensors:

===============  ===========================================  ==========
tensor           value                                        TFLite op
===============  ===========================================  ==========
``mean``         ``mean(x)`` over the channels                MEAN
``centred``      ``d = x - mean``                             SUB
``sum_squares``  ``s = sum(d * d)`` over the channels         BATCH_MATMUL
``rsqrt``        ``r = 1 / sqrt(max(s, C * epsilon))``       RSQRT
``normalized``   ``y = d * r``                                MUL
===============  ===========================================  ==========

and the layer's output is ``y * (sqrt(C) * gamma) + beta``, one integer
per-channel affine op (a 1x1 depthwise convolution in TFLite). With ``C``
channels, ``d * rsqrt(C * var) * sqrt(C)`` is ``(x - mean) / sqrt(var)``:
with the hooks passing tensors through, the decomposition computes what the
layer computes, but for epsilon, which only bounds the variance from below
(``max(var, eps)`` for ``var + eps``: equal to float precision wherever the
variance is well above epsilon, and what an integer RSQRT of the sum's
level computes). The sum of squares (not the variance) is the
quantized tensor because an integer matmul of ``d`` with itself sums the
squares exactly in int32: only the sum is rounded, where MEAN over a
SQUARED_DIFFERENCE would round every square to int8 first.

Only normalization over the last axis (what transformers and ConvNeXt use)
and without ``rms_scaling`` is decomposed; :func:`unsupported_reason` says
why a layer is not.
"""

from __future__ import annotations

import contextlib
import math
import typing

import keras
from keras import ops

if typing.TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

    import numpy as np

__all__ = [
    "LAYER_NORM_TENSORS",
    "SYMMETRIC_TENSORS",
    "decomposed_affine",
    "is_layer_norm",
    "layer_norm_hooks",
    "unsupported_reason",
]

LAYER_NORM_TENSORS = ("mean", "centred", "sum_squares", "rsqrt", "normalized")
# Tensors on a symmetric grid (zero point 0) whatever the config says: both
# operands of the sum of squares' integer matmul are the centred tensor,
# and TFLite's XNNPACK kernel for a matmul of two activations computes
# wrong sums with a nonzero zero point (several levels off; its builtin
# kernel is right). The centred tensor is zero-centred anyway.
SYMMETRIC_TENSORS = ("centred",)


def is_layer_norm(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is a ``keras.layers.LayerNormalization``.

    Example:

    >>> is_layer_norm(keras.layers.LayerNormalization())
    True
    """
    return isinstance(layer, keras.layers.LayerNormalization)


def unsupported_reason(
    layer: keras.layers.LayerNormalization, rank: int
) -> str | None:
    """Why ``layer`` cannot run decomposed on inputs of ``rank``, or None.

    Example:

    >>> unsupported_reason(keras.layers.LayerNormalization(), 3) is None
    True
    >>> unsupported_reason(keras.layers.LayerNormalization(axis=1), 3)
    'it normalizes over axes [1], not the last axis only'
    """
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if sorted(a % rank for a in axes) != [rank - 1]:
        return f"it normalizes over axes {list(axes)}, not the last axis only"
    if layer.rms_scaling:
        return "it uses rms_scaling"
    return None


def decomposed_affine(
    gamma: object | None, beta: object | None, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` of the last step: ``y * scale + offset``.

    Args:
        gamma: the layer's gamma values, or None without ``scale``.
        beta: its beta values, or None without ``center``.
        channels: the number of channels ``C``.

    Returns:
        Two float arrays of ``C`` values: ``sqrt(C) * gamma`` and ``beta``.

    Example:

    >>> scale, offset = decomposed_affine(None, None, 4)
    >>> scale.tolist(), offset.tolist()
    ([2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0])
    """
    import numpy as np

    root = math.sqrt(channels)
    scale = (
        np.full(channels, root)
        if gamma is None
        else root * np.asarray(gamma, np.float64).reshape(channels)
    )
    offset = (
        np.zeros(channels)
        if beta is None
        else np.asarray(beta, np.float64).reshape(channels)
    )
    return scale, offset


def _decomposed(layer, hook, inputs):
    x = ops.cast(inputs, layer.compute_dtype)
    channels = x.shape[-1]
    mean = hook("mean", ops.mean(x, axis=-1, keepdims=True))
    centred = hook("centred", ops.subtract(x, mean))
    sum_squares = hook(
        "sum_squares", ops.sum(ops.square(centred), axis=-1, keepdims=True)
    )
    # epsilon * C: the variance's epsilon, for the sum of C squares, as a
    # floor rather than a term: an integer target takes the reciprocal
    # root of the sum's level as it is (adding epsilon, far below one
    # step of the sum, would change no level), and at level 0 both give
    # the top of the rsqrt grid.
    rsqrt = hook(
        "rsqrt", ops.rsqrt(ops.maximum(sum_squares, layer.epsilon * channels))
    )
    normalized = hook("normalized", ops.multiply(centred, rsqrt))
    scale = math.sqrt(channels)
    if layer.scale:
        scale = ops.multiply(ops.cast(layer.gamma, x.dtype), scale)
    outputs = ops.multiply(normalized, scale)
    if layer.center:
        outputs = ops.add(outputs, ops.cast(layer.beta, x.dtype))
    return outputs


@contextlib.contextmanager
def layer_norm_hooks(
    layer: keras.layers.LayerNormalization,
    hook: Callable[[str, object], object],
) -> Iterator[None]:
    """Runs ``layer`` decomposed, with ``hook(name, tensor)`` on its tensors.

    Args:
        layer: a ``keras.layers.LayerNormalization`` over the last axis.
        hook: called as ``hook(name, tensor)`` for each name in
            :data:`LAYER_NORM_TENSORS`; returns the tensor to use.

    Raises:
        ValueError: for a layer :func:`unsupported_reason` refuses, naming
            it.

    Example:

    >>> norm = keras.layers.LayerNormalization(epsilon=1e-6)
    >>> x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    >>> expected = norm(x)
    >>> seen = []
    >>> with layer_norm_hooks(norm, lambda n, t: seen.append(n) or t):
    ...     got = norm(x)
    >>> seen
    ['mean', 'centred', 'sum_squares', 'rsqrt', 'normalized']
    >>> bool(np.allclose(got, expected, atol=1e-5))
    True
    """

    def call(inputs):
        reason = unsupported_reason(layer, len(inputs.shape))
        if reason:
            raise ValueError(
                f"LayerNormalization {layer.name!r} cannot run as integer "
                f"ops: {reason}. Quantize it as one op (a config without "
                "decomposed_quantization for LayerNormalization), or "
                "normalize over the last axis."
            )
        return _decomposed(layer, hook, inputs)

    # object.__setattr__: a plain instance attribute, kept out of Keras's
    # layer tracking; removed again on exit.
    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        object.__delattr__(layer, "call")
