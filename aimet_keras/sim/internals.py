"""Tensors inside a layer that the simulation can quantize.

Three layers have them: ``MultiHeadAttention`` (its matmuls and softmax, see
:mod:`aimet_keras.sim.attention`), ``LayerNormalization`` run as the
integer ops a target computes it with (see
:mod:`aimet_keras.sim.layer_norm`), and an ``Add`` of three or more inputs,
whose partial sums (see :func:`partial_sums`) a target with two-input adds
(TFLite's ADD) writes on grids of their own. The wrapper quantizes them,
the exporter names them, both through :func:`internal_hooks`.
"""

import contextlib

import keras

from aimet_keras.sim import attention as attention_lib
from aimet_keras.sim import layer_norm as layer_norm_lib

__all__ = ["internal_hooks", "internal_tensors", "partial_sums"]


def partial_sums(layer, count=None):
    """The names of an ``Add``'s partial sums: ``("sum_2", ...)``, or ().

    An ``Add`` of ``n`` inputs runs as ``n - 1`` two-input adds; all but
    the last write a partial sum (``sum_k``: the first ``k`` inputs) that
    the layer's output quantizer never sees. BERT's embeddings add the
    token, position and segment embeddings in one ``Add``.

    Args:
        layer: a layer; only ``keras.layers.Add`` has partial sums.
        count: its number of inputs; defaults to the count it was built
            with.

    Example:

    >>> add = keras.layers.Add()
    >>> partial_sums(add, 4)
    ('sum_2', 'sum_3')
    >>> partial_sums(add, 2)
    ()
    """
    if type(layer) is not keras.layers.Add:
        return ()
    if count is None:
        shapes = (getattr(layer, "_build_shapes_dict", None) or {}).get(
            "input_shape"
        )
        count = len(shapes) if isinstance(shapes, (list, tuple)) else 0
    return tuple(f"sum_{k}" for k in range(2, count))


@contextlib.contextmanager
def _partial_sum_hooks(layer, hook):
    def merge(inputs):
        # Keras's own order (inputs[0] + inputs[1] + ...): with the hook
        # passing tensors through, the same values.
        total = inputs[0]
        for k, x in enumerate(inputs[1:], start=2):
            total = keras.ops.add(total, x)
            if k < len(inputs):
                total = hook(f"sum_{k}", total)
        return total

    # Merge.call aligns ranks, then calls _merge_function: only the sum is
    # replaced. A plain instance attribute, removed again on exit.
    object.__setattr__(layer, "_merge_function", merge)
    try:
        yield
    finally:
        object.__delattr__(layer, "_merge_function")


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
    return partial_sums(layer)


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
    if partial_sums(layer):
        return _partial_sum_hooks(layer, hook)
    return attention_lib.attention_hooks(layer, hook)
