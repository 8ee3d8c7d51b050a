"""Spatial SVD: a kxk convolution as a kx1 convolution, then a 1xk one.

AIMET's factorisation (``svd_pruner.lingalg_spatial_svd``): the kernel,
read as a matrix ``M[(i, y), (o, x)] = W[y, x, i, o]`` of shape
``(I*kh, O*kw)``, is cut to its top ``r`` singular values, ``sqrt(s)`` on
each side. The left factor becomes a ``(kh, 1)`` convolution from ``I`` to
``r`` channels (the stride and dilation along rows), the right factor a
``(1, kw)`` convolution from ``r`` to ``O`` channels (along columns) that
carries the bias and activation. At full rank, ``min(I*kh, O*kw)``, the pair
computes what the convolution computes; 'same' padding stays exact because
the first factor has no bias (zero rows stay zero).
"""

import keras
import numpy as np

from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import op_types

__all__ = ["max_spatial_svd_rank", "spatial_svd", "spatial_svd_layers"]


def _check_conv(layer):
    if op_types.keras_class_name(layer, ("Conv2D",)) != "Conv2D" or (
        type(layer).__name__ != "Conv2D"
    ):
        raise ValueError(
            f"Layer {layer.name!r} is a {type(layer).__name__}; spatial SVD "
            "factorises Conv2D layers."
        )
    if layer.groups != 1 or layer.data_format != "channels_last":
        raise ValueError(
            f"Layer {layer.name!r}: spatial SVD needs groups=1 and "
            "channels_last."
        )


def max_spatial_svd_rank(layer):
    """The rank at which spatial SVD is exact: ``min(I*kh, O*kw)``.

    Example:

    >>> conv = keras.layers.Conv2D(8, 3)
    >>> conv.build((None, 10, 10, 4))
    >>> max_spatial_svd_rank(conv)
    12
    """
    _check_conv(layer)
    kh, kw, channels_in, channels_out = layer.kernel.shape
    return min(channels_in * kh, channels_out * kw)


def spatial_svd_layers(layer, rank):
    """The two layers replacing ``layer`` at ``rank``: ``(first, second)``.

    Args:
        layer: a built Conv2D (groups 1, channels last).
        rank: the inner channel count, 1 to :func:`max_spatial_svd_rank`.

    Returns:
        Built ``Conv2D`` layers named ``<name>_a`` (kh x 1) and ``<name>_b``
        (1 x kw, with the bias and activation).

    Raises:
        ValueError: for another layer type or a rank out of range.

    Example:

    >>> conv = keras.layers.Conv2D(8, 3, padding="same")
    >>> conv.build((None, 10, 10, 4))
    >>> first, second = spatial_svd_layers(conv, 12)
    >>> x = np.random.rand(2, 10, 10, 4).astype("float32")
    >>> bool(np.allclose(second(first(x)), conv(x), atol=1e-4))
    True
    """
    top = max_spatial_svd_rank(layer)
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= top:
        raise ValueError(
            f"Layer {layer.name!r}: rank={rank!r}; use a whole number from 1 "
            f"to {top} (the rank at which the factorisation is exact)."
        )
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    kh, kw, channels_in, channels_out = kernel.shape
    matrix = kernel.transpose(2, 0, 3, 1).reshape(
        channels_in * kh, channels_out * kw
    )
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    left = (u[:, :rank] * root).reshape(channels_in, kh, rank)
    right = (root[:, None] * vt[:rank]).reshape(rank, channels_out, kw)
    config = layer.get_config()
    stride_h, stride_w = config["strides"]
    dilation_h, dilation_w = config["dilation_rate"]
    first = keras.layers.Conv2D(
        rank,
        (kh, 1),
        strides=(stride_h, 1),
        padding=config["padding"],
        dilation_rate=(dilation_h, 1),
        use_bias=False,
        name=f"{layer.name}_a",
    )
    second = keras.layers.Conv2D(
        channels_out,
        (1, kw),
        strides=(1, stride_w),
        padding=config["padding"],
        dilation_rate=(1, dilation_w),
        use_bias=config["use_bias"],
        activation=config["activation"],
        name=f"{layer.name}_b",
    )
    first.build((None, None, None, channels_in))
    second.build((None, None, None, rank))
    dtype = layer.kernel.dtype
    first.kernel.assign(left.transpose(1, 0, 2)[:, None].astype(dtype))
    second.kernel.assign(right.transpose(2, 0, 1)[None].astype(dtype))
    if config["use_bias"]:
        second.bias.assign(layer.bias)
    return first, second


def spatial_svd(model, ranks):
    """A new model with the named convolutions factorised at given ranks.

    Args:
        model: a built ``keras.Model`` (any shape
            :func:`~aimet_keras.graph.prepare_model` takes); not changed.
        ranks: ``{Conv2D layer name: rank}``.

    Returns:
        The new functional model.

    Raises:
        ValueError: for a layer name the model does not have (listing
            close names), another layer type, or a rank out of range.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> smaller = spatial_svd(model, {"stage1_a_conv": 8})
    >>> [x.name for x in smaller.layers if x.name.startswith("stage1_a_c")]
    ['stage1_a_conv_a', 'stage1_a_conv_b']
    """
    prepared = prepare_lib.prepare_model(model)
    names = [layer.name for layer in prepared.layers]
    for name in ranks:
        if name not in names:
            raise ValueError(
                f"spatial_svd: the model has no layer {name!r}."
                + op_types.did_you_mean(name, names)
            )
    pairs = {
        name: spatial_svd_layers(prepared.get_layer(name), rank)
        for name, rank in ranks.items()
    }

    def replace(operation):
        if operation.name not in pairs:
            return operation
        first, second = pairs[operation.name]
        return lambda x, **kwargs: second(first(x))

    return prepare_lib.rebuild(prepared, replace)
