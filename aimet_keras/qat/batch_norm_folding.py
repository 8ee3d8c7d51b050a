"""Batch norm folding simulated in quantization-aware training.

A deployed network runs each Conv + BatchNormalization as one layer with the
folded kernel ``W * gamma / sqrt(var + eps)``, quantized. QAT should train
that quantized tensor, but removing the batch norm before training (as
:func:`~aimet_keras.ptq.fold_all_batch_norms_to_scale` does) also removes
its batch statistics, which steady training. The QAT literature (Jacob et
al. 2018; Krishnamoorthi 2018) keeps both, as PyTorch's ``ConvBn`` modules
do, and :class:`FoldedBatchNorm` follows them:

* training: the conv runs on the quantized folded kernel (folded with the
  *moving* variance, so the grid sees a steady tensor); the factor is
  divided back out and the batch norm normalizes with the batch's
  statistics, which it keeps tracking;
* after :class:`~aimet_keras.qat.FreezeBatchNormStatistics`, and in
  inference: exactly the folded layer, ``conv(x, q(W * s)) + q(b_folded)``
  with the moving statistics, which deployment runs.

:func:`simulate_batch_norm_folding` puts these layers into a sim;
:func:`finalize_batch_norm_folding` turns them into the plain folded layers
(same outputs, same grids) for export.
"""

from __future__ import annotations

import typing

import keras
import numpy as np

from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.ptq import batch_norm_fold as fold_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = [
    "FoldedBatchNorm",
    "finalize_batch_norm_folding",
    "simulate_batch_norm_folding",
]


def _is_depthwise(layer):
    return (
        op_types.keras_class_name(layer, ("DepthwiseConv1D", "DepthwiseConv2D"))
        is not None
    )


@keras.saving.register_keras_serializable(package="aimet_keras")
class FoldedBatchNorm(keras.layers.Layer):
    """A linear layer and the batch norm after it, trained as one folded layer.

    Quantizes its own weights: a
    :class:`~aimet_keras.sim.QuantizationWrapper` around it passes its
    ``"kernel"`` and ``"bias"`` quantizers, which see the folded kernel and
    bias (:meth:`quantized_weight_values`).

    Args:
        layer: a built Conv1D/2D/3D, DepthwiseConv1D/2D or Dense with a
            linear activation, channels last, and a bias.
        batch_norm: the built BatchNormalization that follows it, on the
            last axis.

    Input shape:
        As ``layer``.

    Output shape:
        As ``layer``.

    Example:

    >>> conv = keras.layers.Conv2D(4, 3, name="conv")
    >>> conv.build((None, 8, 8, 3))
    >>> bn = keras.layers.BatchNormalization(name="bn")
    >>> bn.build((None, 6, 6, 4))
    >>> folded = FoldedBatchNorm(conv, bn)
    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> want = bn(conv(x), training=False)
    >>> bool(np.allclose(folded(x, training=False), want, atol=1e-5))
    True
    """

    quantizes_own_weights = True
    quantized_weight_keys = ("kernel", "bias")

    def __init__(
        self,
        layer: keras.layers.Layer,
        batch_norm: keras.layers.BatchNormalization,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("name", layer.name)
        super().__init__(**kwargs)
        kind = op_types.keras_class_name(layer, fold_lib.LINEAR_LAYERS)
        problems = []
        if kind is None:
            problems.append(f"is a {type(layer).__name__}")
        if not fold_lib._linear(layer):
            problems.append("has an activation")
        if not fold_lib._channels_last(layer):
            problems.append("is channels_first")
        if not getattr(layer, "use_bias", False):
            problems.append("has no bias")
        if problems:
            raise ValueError(
                f"FoldedBatchNorm: layer {layer.name!r} {', '.join(problems)}; "
                "it takes a Conv1D/2D/3D, DepthwiseConv1D/2D or Dense with a "
                "linear activation, channels last and use_bias=True "
                "(simulate_batch_norm_folding builds one for you)."
            )
        if not isinstance(batch_norm, keras.layers.BatchNormalization):
            raise ValueError(
                f"FoldedBatchNorm: {batch_norm.name!r} is a "
                f"{type(batch_norm).__name__}, not a BatchNormalization."
            )
        for part in (layer, batch_norm):
            if not part.built:
                raise ValueError(
                    f"FoldedBatchNorm: layer {part.name!r} is not built; "
                    "build it before folding."
                )
        self.layer = layer
        self.batch_norm = batch_norm
        self.built = True

    @property
    def quantization_proxy(self) -> keras.layers.Layer:
        """The layer this one is quantized as (the linear layer)."""
        return self.layer

    def _scale(self):
        """``gamma / sqrt(moving_variance + eps)``, per output channel."""
        bn = self.batch_norm
        scale = keras.ops.rsqrt(bn.moving_variance + bn.epsilon)
        return bn.gamma * scale if bn.scale else scale

    def _kernel_scale(self, scale):
        kernel = self.layer.kernel
        if _is_depthwise(self.layer):  # (..., C, M): C*M outputs
            return keras.ops.reshape(scale, tuple(kernel.shape[-2:]))
        return scale

    def quantized_weight_values(self) -> dict[str, object]:
        """``{"kernel": W * s, "bias": beta + (b - mean) * s}``, s per channel.

        The tensors deployment runs (with the moving statistics).
        """
        bn = self.batch_norm
        scale = self._scale()
        beta = bn.beta if bn.center else 0.0
        return {
            "kernel": self.layer.kernel * self._kernel_scale(scale),
            "bias": beta + (self.layer.bias - bn.moving_mean) * scale,
        }

    def compute_output_spec(
        self, inputs: object, **kwargs: object
    ) -> keras.KerasTensor:
        return self.layer.compute_output_spec(inputs)

    def call(
        self,
        inputs: object,
        training: bool | None = None,
        weight_quantizers: dict | None = None,
        statistics_switch: object = None,
    ) -> object:
        # statistics_switch: a boolean variable; in training, True picks the
        # frozen (folded) output, so FreezeBatchNormStatistics flips it
        # without a retrace. The wrapper keeps the moving statistics then.
        quantizers = weight_quantizers or {}
        values = self.quantized_weight_values()
        kernel = values["kernel"]
        if "kernel" in quantizers:
            kernel = quantizers["kernel"](kernel)
        bias = self.layer.bias
        with keras.StatelessScope(
            state_mapping=[
                (self.layer.kernel, kernel),
                (bias, keras.ops.zeros_like(bias)),
            ]
        ):
            outputs = self.layer(inputs)
        if training and statistics_switch is None:
            return self._batch_normalized(outputs, bias)
        folded_bias = values["bias"]
        if "bias" in quantizers:
            folded_bias = quantizers["bias"](folded_bias)
        if not training:
            return outputs + folded_bias
        return keras.ops.where(
            statistics_switch,
            outputs + folded_bias,
            self._batch_normalized(outputs, bias),
        )

    def _batch_normalized(self, outputs, bias):
        """The batch norm's training output for the unfolded layer.

        The unfolded output is ``z = outputs / s + b``; its batch statistics
        follow from those of ``outputs``, so one per-channel affine of
        ``outputs`` computes ``gamma * (z - mean) / sqrt(var + eps) + beta``
        (what BatchNormalization computes on ``z``) without materializing
        ``z``. The moving statistics track ``z``'s, as the batch norm's own
        training step does.
        """
        ops = keras.ops
        bn = self.batch_norm
        scale = self._scale()
        axes = list(range(len(outputs.shape) - 1))
        mean, variance = ops.moments(
            outputs, axes, synchronized=bn.synchronized
        )
        batch_mean = mean / scale + bias
        batch_variance = variance / ops.square(scale)
        factor = ops.rsqrt(batch_variance + bn.epsilon) / scale
        if bn.scale:
            factor = factor * bn.gamma
        # -mean * factor, written through the bias it cancels: the bias
        # gets its (zero) gradient instead of none, which Keras warns about.
        shift = -(batch_mean - bias) * scale * factor
        if bn.center:
            shift = shift + bn.beta
        momentum = bn.momentum
        bn.moving_mean.assign(
            bn.moving_mean * momentum + batch_mean * (1.0 - momentum)
        )
        bn.moving_variance.assign(
            bn.moving_variance * momentum + batch_variance * (1.0 - momentum)
        )
        return outputs * factor + shift

    def folded_layer(self) -> keras.layers.Layer:
        """The plain layer deployment runs: folded kernel and bias."""
        values = {
            key: keras.ops.convert_to_numpy(value)
            for key, value in self.quantized_weight_values().items()
        }
        folded = self.layer.__class__.from_config(self.layer.get_config())
        folded.build_from_config(self.layer.get_build_config())
        folded.kernel.assign(values["kernel"].astype(folded.kernel.dtype))
        folded.bias.assign(values["bias"].astype(folded.bias.dtype))
        return folded

    def get_config(self) -> dict:
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            layer=serialize(self.layer), batch_norm=serialize(self.batch_norm)
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> FoldedBatchNorm:
        deserialize = keras.saving.deserialize_keras_object
        config = dict(config)
        config["layer"] = deserialize(config["layer"])
        config["batch_norm"] = deserialize(config["batch_norm"])
        return cls(**config)


def _with_bias(layer):
    """``layer`` itself if it has a bias, else a copy with a zero bias."""
    if layer.use_bias:
        return layer
    copy = layer.__class__.from_config(dict(layer.get_config(), use_bias=True))
    copy.build_from_config(layer.get_build_config())
    copy.kernel.assign(layer.kernel)
    copy.bias.assign(np.zeros(copy.bias.shape, copy.bias.dtype))
    return copy


def simulate_batch_norm_folding(
    sim: QuantizationSimModel,
) -> list[tuple[str, str]]:
    """Trains each Conv/Dense + BatchNormalization of a sim as folded, in place.

    Every linear layer followed by a batch norm (Conv1D/2D/3D,
    DepthwiseConv1D/2D, Dense) becomes a :class:`FoldedBatchNorm`: its
    kernel quantizer sees the folded kernel (the grid is the old one times
    the fold's per-channel factor, so the simulated outputs do not change),
    the batch norm's output grid moves to it, and in training the batch
    statistics still normalize. Freeze them later in training with
    :class:`~aimet_keras.qat.FreezeBatchNormStatistics`, and call
    :func:`finalize_batch_norm_folding` before exporting. ``sim.model`` is
    replaced: compile the new one.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel`, calibrated or
            not.

    Returns:
        The ``(layer name, BN name)`` pairs now trained folded.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> sim = QuantizationSimModel(model, config_file="htp")
    >>> sim.compute_encodings(np.random.rand(16, 8, 8, 1).astype("float32"))
    >>> pairs = simulate_batch_norm_folding(sim)
    >>> type(sim.model.get_layer("conv").layer).__name__
    'FoldedBatchNorm'
    """
    prepared = sim._prepared
    pairs = [
        (layer, bn)
        for layer, bn, direction in fold_lib.find_bn_pairs(prepared)
        if direction == "backward"
        and op_types.keras_class_name(
            prepared.get_layer(layer), fold_lib.LINEAR_LAYERS
        )
    ]
    scales = {
        layer: fold_lib._bn_scale_shift(prepared.get_layer(bn))[0]
        for layer, bn in pairs
    }
    rebuilt = fold_lib.fold_batch_norm_pairs(
        prepared,
        [(layer, bn, "backward") for layer, bn in pairs],
        make_layer=lambda layer, bn, _: FoldedBatchNorm(_with_bias(layer), bn),
    )
    fold_lib.rebuild_sim(sim, rebuilt, dict(pairs), scales)
    return pairs


def finalize_batch_norm_folding(sim: QuantizationSimModel) -> list[str]:
    """Turns a sim's :class:`FoldedBatchNorm` layers into plain folded ones.

    Each becomes its linear layer with the folded kernel and bias computed
    from the current moving statistics, with the same quantizers' grids:
    the inference outputs do not change, and the sim can be exported.
    ``sim.model`` is replaced.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel`.

    Returns:
        The names of the layers finalized.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> sim = QuantizationSimModel(model)
    >>> _ = simulate_batch_norm_folding(sim)
    >>> finalize_batch_norm_folding(sim)
    ['conv']
    >>> type(sim.model.get_layer("conv").layer).__name__
    'Conv2D'
    """
    names = [
        w.name
        for w in sim.quant_wrappers()
        if isinstance(w.layer, FoldedBatchNorm)
    ]
    if not names:
        return []
    rebuilt = prepare_lib.rebuild(
        sim._prepared,
        lambda op: op.folded_layer() if isinstance(op, FoldedBatchNorm) else op,
    )
    fold_lib.rebuild_sim(sim, rebuilt, {}, {})
    return names
