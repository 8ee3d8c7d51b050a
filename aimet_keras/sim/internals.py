"""Tensors inside a layer that the simulation can quantize.

Two layers have them: ``MultiHeadAttention`` (its matmuls and softmax, see
:mod:`aimet_keras.sim.attention`) and ``LayerNormalization`` run as the
integer ops a target computes it with (see
:mod:`aimet_keras.sim.layer_norm`). The wrapper quantizes them, the
exporter names them, both through :func:`internal_hooks`.
"""

from aimet_keras.sim import attention as attention_lib
from aimet_keras.sim import layer_norm as layer_norm_lib

__all__ = ["internal_hooks", "internal_tensors"]


def internal_tensors(layer):
    """The names of the inner tensors of ``layer`` a hook can see, or ().

    Example:

    >>> import keras
    >>> internal_tensors(keras.layers.LayerNormalization())[:2]
    ('mean', 'centred')
    >>> internal_tensors(keras.layers.Dense(2))
    ()
    """
    if attention_lib.has_internal_tensors(layer):
        return attention_lib.ATTENTION_TENSORS
    if layer_norm_lib.is_layer_norm(layer):
        return layer_norm_lib.LAYER_NORM_TENSORS
    return ()


def internal_hooks(layer, hook):
    """A context in which ``layer``'s calls pass inner tensors to ``hook``.

    Args:
        layer: a layer :func:`internal_tensors` names tensors of.
        hook: called as ``hook(name, tensor)``; returns the tensor to use.

    Example:

    >>> import keras
    >>> norm = keras.layers.LayerNormalization()
    >>> seen = []
    >>> with internal_hooks(norm, lambda n, t: seen.append(n) or t):
    ...     _ = norm(np.ones((1, 4), "float32"))
    >>> seen[-1]
    'normalized'
    """
    if layer_norm_lib.is_layer_norm(layer):
        return layer_norm_lib.layer_norm_hooks(layer, hook)
    return attention_lib.attention_hooks(layer, hook)
