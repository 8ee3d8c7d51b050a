"""Outlier channels injected into a model without changing what it computes.

Transformers and some CNNs carry a few activation channels far wider than
the rest (Bondarenko et al. 2021); a per-tensor 8-bit grid wide enough for
them rounds every other channel to a few levels. :func:`inject_outlier_channel`
makes such a model from any conv or dense layer followed (through a ReLU or
nothing) by its only consumer: it scales one output channel of the first
layer up and the matching input channel of the consumer down. The FP32
function is unchanged; its quantization is not. Benchmarks and tests use it
to check that analysis finds the layer, and to compare integer and float
formats on outliers.
"""

from __future__ import annotations

import typing

import numpy as np

if typing.TYPE_CHECKING:
    import keras

__all__ = ["inject_outlier_channel"]


def inject_outlier_channel(
    model: keras.Model,
    layer: str,
    consumer: str,
    channel: int = 0,
    scale: float = 300.0,
) -> keras.Model:
    """Scales ``layer``'s output ``channel`` up, ``consumer``'s input down.

    Args:
        model: a built ``keras.Model``; changed in place (clone it first to
            keep the original).
        layer: the name of a layer with ``kernel`` and ``bias`` whose output
            reaches ``consumer`` only, through positively homogeneous layers
            (ReLU, max pooling) or directly.
        consumer: the name of the layer with a ``kernel`` reading it.
        channel: the output channel to widen. Defaults to 0.
        scale: how much wider, > 0. Defaults to 300.

    Returns:
        ``model``.

    Raises:
        ValueError: for a layer without kernel and bias, a non-positive
            scale, or shapes that do not line up, naming the layer.

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(3, activation="relu", name="fc1")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(hidden))
    >>> x = np.random.default_rng(0).random((5, 4)).astype("float32")
    >>> before = model.predict(x, verbose=0)
    >>> _ = inject_outlier_channel(model, "fc1", "fc2", scale=100.0)
    >>> bool(np.allclose(model.predict(x, verbose=0), before, atol=1e-4))
    True
    >>> float(np.abs(model.get_layer("fc1").kernel.numpy()[:, 0]).max()) > 1
    True
    """
    if not scale > 0:
        raise ValueError(
            f"scale={scale!r}: use a positive factor (a negative one would "
            "not pass through the ReLU)."
        )
    first, second = model.get_layer(layer), model.get_layer(consumer)
    for named, needed in ((first, ("kernel", "bias")), (second, ("kernel",))):
        if not all(getattr(named, key, None) is not None for key in needed):
            raise ValueError(
                f"Layer {named.name!r} ({type(named).__name__}) has no "
                f"{' and '.join(needed)}; pick a Conv2D or Dense layer."
            )
    kernel = np.asarray(first.kernel).copy()
    bias = np.asarray(first.bias).copy()
    inner = np.asarray(second.kernel).copy()
    if inner.shape[-2] != kernel.shape[-1]:
        raise ValueError(
            f"{consumer!r} reads {inner.shape[-2]} channels, {layer!r} "
            f"writes {kernel.shape[-1]}: {consumer!r} must read {layer!r}'s "
            "output directly or through element-wise layers."
        )
    kernel[..., channel] *= scale
    bias[channel] *= scale
    inner[..., channel, :] /= scale
    first.kernel.assign(kernel)
    first.bias.assign(bias)
    second.kernel.assign(inner)
    return model
