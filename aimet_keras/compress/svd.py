"""Spatial SVD and weight SVD: one layer as two thinner ones.

Spatial SVD: a kxk convolution as a kx1 convolution, then a 1xk one.

AIMET's factorisation (``svd_pruner.lingalg_spatial_svd``): the kernel,
read as a matrix ``M[(i, y), (o, x)] = W[y, x, i, o]`` of shape
``(I*kh, O*kw)``, is cut to its top ``r`` singular values, ``sqrt(s)`` on
each side. The left factor becomes a ``(kh, 1)`` convolution from ``I`` to
``r`` channels (the stride and dilation along rows), the right factor a
``(1, kw)`` convolution from ``r`` to ``O`` channels (along columns) that
carries the bias and activation. At full rank, ``min(I*kh, O*kw)``, the pair
computes what the convolution computes; 'same' padding stays exact because
the first factor has no bias (zero rows stay zero).

Weight SVD: a Dense layer or 1x1 convolution, ``W (in, out)``, as one from
``in`` to ``r`` features (``U sqrt(s)``, no bias) and one from ``r`` to
``out`` (``sqrt(s) V^T``, with the bias and activation).
"""

from __future__ import annotations

import keras
import numpy as np

from aimet_keras.compress import reconstruction
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import op_types

__all__ = [
    "max_spatial_svd_rank",
    "max_weight_svd_rank",
    "rank_cost",
    "svd_rank",
    "spatial_svd",
    "spatial_svd_layers",
    "weight_svd",
    "weight_svd_layers",
]


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


def max_spatial_svd_rank(layer: keras.layers.Layer) -> int:
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


def spatial_svd_layers(
    layer: keras.layers.Layer, rank: int
) -> tuple[keras.layers.Layer, keras.layers.Layer]:
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
    _check_rank(layer, rank, max_spatial_svd_rank(layer))
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


def _check_weight_svd(layer):
    kind = type(layer).__name__
    is_pointwise = (
        kind == "Conv2D"
        and tuple(layer.kernel.shape[:2]) == (1, 1)
        and layer.groups == 1
        and tuple(layer.get_config()["dilation_rate"]) == (1, 1)
    )
    if kind != "Dense" and not is_pointwise:
        raise ValueError(
            f"Layer {layer.name!r} is a {kind}"
            + (" with a kernel larger than 1x1" if kind == "Conv2D" else "")
            + "; weight SVD factorises Dense layers and 1x1 Conv2D layers "
            "(use spatial SVD for larger kernels)."
        )


def max_weight_svd_rank(layer: keras.layers.Layer) -> int:
    """The rank at which weight SVD is exact: ``min(in, out)``.

    Example:

    >>> dense = keras.layers.Dense(6)
    >>> dense.build((None, 10))
    >>> max_weight_svd_rank(dense)
    6
    """
    _check_weight_svd(layer)
    return min(layer.kernel.shape[-2:])


def _check_rank(layer, rank, top):
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= top:
        raise ValueError(
            f"Layer {layer.name!r}: rank={rank!r}; use a whole number from 1 "
            f"to {top} (the rank at which the factorisation is exact)."
        )


def weight_svd_layers(
    layer: keras.layers.Layer, rank: int
) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """The two layers replacing a Dense or 1x1 Conv2D at ``rank``.

    Args:
        layer: a built Dense, or Conv2D with a 1x1 kernel.
        rank: the inner width, 1 to :func:`max_weight_svd_rank`.

    Returns:
        ``(first, second)``, built layers of ``layer``'s class named
        ``<name>_a`` and ``<name>_b`` (the second has the bias and
        activation; a strided 1x1 conv keeps its stride on the first).

    Example:

    >>> dense = keras.layers.Dense(6)
    >>> dense.build((None, 10))
    >>> first, second = weight_svd_layers(dense, 6)
    >>> x = np.random.rand(3, 10).astype("float32")
    >>> bool(np.allclose(second(first(x)), dense(x), atol=1e-5))
    True
    """
    _check_rank(layer, rank, max_weight_svd_rank(layer))
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    matrix = kernel.reshape(kernel.shape[-2:])
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    left, right = u[:, :rank] * root, root[:, None] * vt[:rank]
    config = layer.get_config()
    first_config = dict(
        config, use_bias=False, activation="linear", name=f"{layer.name}_a"
    )
    second_config = dict(config, name=f"{layer.name}_b")
    if isinstance(layer, keras.layers.Dense):
        first_config["units"] = rank
    else:
        first_config["filters"] = rank
        second_config["strides"] = (1, 1)  # the first one strides
    first = layer.__class__.from_config(first_config)
    second = layer.__class__.from_config(second_config)
    leading = (None,) * (len(kernel.shape) - 1)
    first.build((*leading, matrix.shape[0]))
    second.build((*leading, rank))
    dtype = layer.kernel.dtype
    first.kernel.assign(left.reshape(first.kernel.shape).astype(dtype))
    second.kernel.assign(right.reshape(second.kernel.shape).astype(dtype))
    if config["use_bias"]:
        second.bias.assign(layer.bias)
    return first, second


def rank_cost(
    layer: keras.layers.Layer, scheme: str, cost_metric: str = "mac"
) -> tuple[int, int]:
    """``(cost per unit of rank, original cost)`` of factorising ``layer``.

    In kernel elements, or in MACs per output position (AIMET's formulas:
    the first spatial-SVD factor runs on ``stride_w`` times the positions).
    Multiply both by the output positions for MACs.

    Example:

    >>> dense = keras.layers.Dense(8)
    >>> dense.build((None, 24))
    >>> rank_cost(dense, "weight_svd")
    (32, 192)
    """
    if scheme == "spatial_svd":
        kh, kw, channels_in, channels_out = layer.kernel.shape
        config = layer.get_config()
        stride_w = config["strides"][1] if cost_metric == "mac" else 1
        per_rank = channels_in * kh * stride_w + channels_out * kw
        return per_rank, channels_out * channels_in * kh * kw
    if scheme == "weight_svd":
        channels_in, channels_out = layer.kernel.shape[-2:]
        return channels_in + channels_out, channels_in * channels_out
    raise ValueError(f"scheme={scheme!r}; use 'spatial_svd' or 'weight_svd'.")


def svd_rank(
    layer: keras.layers.Layer,
    comp_ratio: float,
    scheme: str = "spatial_svd",
    cost_metric: str = "mac",
    multiplicity: int = 1,
) -> int:
    """The rank that brings ``layer``'s cost to ``comp_ratio`` of itself.

    AIMET's rule: the largest rank whose cost is at most ``comp_ratio``
    times the layer's, at least 1, then rounded up to a multiple of
    ``multiplicity`` (capped at the exact rank).

    Args:
        layer: a built layer the scheme factorises.
        comp_ratio: the target cost over the original, in (0, 1].
        scheme: ``"spatial_svd"`` or ``"weight_svd"``. Defaults to
            ``"spatial_svd"``.
        cost_metric: ``"mac"`` or ``"memory"``. Defaults to ``"mac"``.
        multiplicity: round ranks up to a multiple of this. Defaults to 1.

    Returns:
        The rank, an int.

    Example:

    >>> conv = keras.layers.Conv2D(16, 3)
    >>> conv.build((None, 10, 10, 16))
    >>> svd_rank(conv, 0.5), svd_rank(conv, 0.5, multiplicity=8)
    (12, 16)
    """
    if not 0 < comp_ratio <= 1:
        raise ValueError(
            f"comp_ratio={comp_ratio!r} for layer {layer.name!r}; use a "
            "fraction in (0, 1]."
        )
    if cost_metric not in ("mac", "memory"):
        raise ValueError(f"cost_metric={cost_metric!r}; use 'mac' or 'memory'.")
    if not isinstance(multiplicity, int) or multiplicity < 1:
        raise ValueError(f"multiplicity={multiplicity!r}; use an int >= 1.")
    if scheme not in ("spatial_svd", "weight_svd"):
        raise ValueError(
            f"scheme={scheme!r}; use 'spatial_svd' or 'weight_svd'."
        )
    top = (
        max_spatial_svd_rank(layer)
        if scheme == "spatial_svd"
        else max_weight_svd_rank(layer)
    )
    per_rank, original = rank_cost(layer, scheme, cost_metric)
    rank = max(1, min(top, int(np.floor(comp_ratio * original / per_rank))))
    return round_up(rank, multiplicity, top)


def round_up(count, multiple, top):
    """``count`` rounded up to a multiple of ``multiple``, at most ``top``.

    Example:

    >>> round_up(9, 8, 20), round_up(17, 8, 20)
    (16, 20)
    """
    return int(min(-(-count // multiple) * multiple, top))


def _factorise(prepared, ranks, make_layers):
    """A new model with each named layer of ``prepared`` (a model from
    :func:`~aimet_keras.graph.prepare_model`, whose other layers the result
    shares) replaced by a factorised pair."""
    names = [layer.name for layer in prepared.layers]
    for name in ranks:
        if name not in names:
            raise ValueError(
                f"The model has no layer {name!r}."
                + op_types.did_you_mean(name, names)
            )
    pairs = {
        name: make_layers(prepared.get_layer(name), rank)
        for name, rank in ranks.items()
    }

    def replace(operation):
        if operation.name not in pairs:
            return operation
        first, second = pairs[operation.name]
        return lambda x, **kwargs: second(first(x))

    return prepare_lib.rebuild(prepared, replace)


def _factorise_and_refit(
    model, ranks, make_layers, data, num_reconstruction_samples
):
    prepared = prepare_lib.prepare_model(model)
    result = _factorise(prepared, ranks, make_layers)
    if data is not None:
        sampler = reconstruction.LayerSampler(data, num_reconstruction_samples)
        reconstruction.refit_layers(
            result, prepared, {f"{name}_b": name for name in ranks}, sampler
        )
    return result


def weight_svd(
    model: keras.Model,
    ranks: dict[str, int],
    data: object = None,
    num_reconstruction_samples: int = 5000,
) -> keras.Model:
    """A new model with the named Dense / 1x1 Conv2D layers factorised.

    Args:
        model: a built ``keras.Model``; not changed.
        ranks: ``{layer name: rank}``.
        data: model inputs to refit each second factor on (see
            :func:`spatial_svd`). Defaults to None (SVD only).
        num_reconstruction_samples: sampled output positions per layer.
            Defaults to 5000.

    Returns:
        The new functional model.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> smaller = weight_svd(model, {"logits": 4})
    >>> [x.name for x in smaller.layers if x.name.startswith("logits")]
    ['logits_a', 'logits_b']
    """
    return _factorise_and_refit(
        model, ranks, weight_svd_layers, data, num_reconstruction_samples
    )


def spatial_svd(
    model: keras.Model,
    ranks: dict[str, int],
    data: object = None,
    num_reconstruction_samples: int = 5000,
) -> keras.Model:
    """A new model with the named convolutions factorised at given ranks.

    With ``data``, each second factor (the 1xk convolution) is then refit
    by least squares, in graph order, so that on the data it reproduces the
    original convolution's output from the inputs it actually gets (the
    first factor's, after the earlier layers' compression): the asymmetric
    reconstruction of Zhang et al. 2015, with channel pruning's sampling.
    AIMET's spatial SVD is the weight-only factorisation (``data=None``).

    Args:
        model: a built ``keras.Model`` (any shape
            :func:`~aimet_keras.graph.prepare_model` takes); not changed.
        ranks: ``{Conv2D layer name: rank}``.
        data: model inputs (an array or a ``tf.data`` set of batches) for
            the refit. Defaults to None (SVD only).
        num_reconstruction_samples: sampled output positions per layer,
            10 per image. Defaults to 5000.

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
    return _factorise_and_refit(
        model, ranks, spatial_svd_layers, data, num_reconstruction_samples
    )
