"""MultiHeadAttention with its inner tensors quantized.

A ``keras.layers.MultiHeadAttention`` runs two matmuls and a softmax inside
one layer; quantizing only its output would simulate none of them. Keras
documents ``_compute_attention`` as the method to override for a custom
attention; :func:`attention_hooks` overrides it on one layer instance, for
the duration of a call, with the same computation (the explicit-scores
path) that passes six tensors through a hook:

============  ==================================================
``query``     projected, scaled query (the first matmul's input)
``key``       projected key
``value``     projected value (the second matmul's input)
``scores``    query-key products (the first matmul's output)
``softmax``   attention probabilities
``context``   attention-weighted values (the second matmul's output)
============  ==================================================

The simulation hooks quantizers in; the exporter hooks in named Identity
ops, so the encodings name tensors of the exported graph.
"""

from __future__ import annotations

import contextlib
import typing

import keras
from keras import ops

if typing.TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

__all__ = ["ATTENTION_TENSORS", "attention_hooks", "has_internal_tensors"]

ATTENTION_TENSORS = ("query", "key", "value", "scores", "softmax", "context")


def has_internal_tensors(layer: keras.layers.Layer) -> bool:
    """Whether the simulation quantizes tensors inside ``layer``.

    Example:

    >>> has_internal_tensors(keras.layers.MultiHeadAttention(2, 4))
    True
    >>> has_internal_tensors(keras.layers.Dense(4))
    False
    """
    return isinstance(layer, keras.layers.MultiHeadAttention)


def _without_mask(tensor):
    """``tensor`` with the Keras mask Softmax attached to it dropped.

    With an ``attention_mask``, Keras's Softmax layer attaches it to the
    probabilities; the hooked quantizer, a layer without masking, would then
    warn that it drops the mask. Nothing after the softmax reads it.
    """
    from keras.src.backend import get_keras_mask
    from keras.src.backend import set_keras_mask

    if get_keras_mask(tensor) is not None:
        set_keras_mask(tensor, None)
    return tensor


def _attention(
    layer,
    hook,
    query,
    key,
    value,
    attention_mask=None,
    training=None,
    return_attention_scores=False,
    use_causal_mask=False,
):
    del return_attention_scores  # the scores are always computed here
    if use_causal_mask:
        causal = layer._compute_causal_mask(query, value)
        attention_mask = (
            causal
            if attention_mask is None
            else ops.logical_and(ops.cast(attention_mask, "bool"), causal)
        )
    query = ops.multiply(
        query, ops.cast(layer._inverse_sqrt_key_dim, query.dtype)
    )
    query, key, value = (
        hook("query", query),
        hook("key", key),
        hook("value", value),
    )
    scores = ops.einsum(layer._dot_product_equation, key, query)
    scores = hook("scores", scores)
    probabilities = layer._masked_softmax(scores, attention_mask)
    scores = hook("softmax", _without_mask(probabilities))
    if layer._dropout > 0.0:
        dropped = layer._dropout_layer(scores, training=training)
    else:
        dropped = scores
    context = ops.einsum(layer._combine_equation, dropped, value)
    return hook("context", context), scores


@contextlib.contextmanager
def attention_hooks(
    layer: keras.layers.MultiHeadAttention,
    hook: Callable[[str, object], object],
) -> Iterator[None]:
    """Runs ``layer``'s attention with ``hook(name, tensor)`` on its tensors.

    Args:
        layer: a ``keras.layers.MultiHeadAttention``.
        hook: called as ``hook(name, tensor)`` for each name in
            :data:`ATTENTION_TENSORS`; returns the tensor to use.

    Example:

    >>> mha = keras.layers.MultiHeadAttention(2, 4)
    >>> x = np.ones((1, 3, 8), "float32")
    >>> seen = []
    >>> with attention_hooks(mha, lambda n, t: seen.append(n) or t):
    ...     _ = mha(x, x)
    >>> seen
    ['query', 'key', 'value', 'scores', 'softmax', 'context']
    """

    def compute(*args, **kwargs):
        return _attention(layer, hook, *args, **kwargs)

    # object.__setattr__: a plain instance attribute, kept out of Keras's
    # layer tracking; removed again on exit.
    object.__setattr__(layer, "_compute_attention", compute)
    try:
        yield
    finally:
        object.__delattr__(layer, "_compute_attention")
