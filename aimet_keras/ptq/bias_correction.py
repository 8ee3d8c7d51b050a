"""Bias correction (Nagel et al. 2019, DFQ): empirical and analytical.

Quantizing a layer's weights shifts the mean of its output: ``E[W_q x] -
E[W x] = (W_q - W) E[x]``. Bias correction subtracts that shift from the
layer's bias, per output channel.

* **Empirical** (with data): the shift is measured, layer by layer in graph
  order, as the mean over the data of the simulated model's output minus the
  FP32 model's, with the layers before already corrected (AIMET's
  ``b <- b - mean(y_q - y_fp)``).
* **Analytical** (data-free): ``E[x]`` comes from the BatchNormalization that
  produced the layer's input, assuming its output is Gaussian with mean
  ``beta`` and spread ``|gamma|``, passed through the ReLU or ReLU6 between
  (clipped-Gaussian means); the shift is ``sum((W_q - W) * E[x])``.

Both return a new model with BatchNormalizations folded (the correction is
for the weights a deployment quantizes) and leave the caller's model alone.
"""

from __future__ import annotations

import logging
import math
import typing

import keras
import numpy as np

from aimet_keras import _progress as progress_lib
from aimet_keras.graph import connections as connections_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.ptq import batch_norm_fold
from aimet_keras.quant import quantize as quantize_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    import os

__all__ = ["correct_bias"]

_LOG = logging.getLogger("aimet_keras")
# Layers whose bias takes the correction: those a BN can fold forward into.
_CORRECTABLE = batch_norm_fold.LINEAR_LAYERS


def _normal_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _normal_cdf(z):
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def _clipped_gaussian_mean(mean, std, low, high):
    """E[clip(x, low, high)] for x ~ N(mean, std^2), per channel."""
    std = np.maximum(std, 1e-12)
    result = np.zeros_like(mean)
    a = (low - mean) / std if low is not None else np.full_like(mean, -np.inf)
    b = (high - mean) / std if high is not None else np.full_like(mean, np.inf)
    cdf_a, cdf_b = _normal_cdf(a), _normal_cdf(b)
    pdf_a = np.where(
        np.isfinite(a), _normal_pdf(np.where(np.isfinite(a), a, 0)), 0.0
    )
    pdf_b = np.where(
        np.isfinite(b), _normal_pdf(np.where(np.isfinite(b), b, 0)), 0.0
    )
    result = mean * (cdf_b - cdf_a) + std * (pdf_a - pdf_b)
    if low is not None:
        result = result + low * cdf_a
    if high is not None:
        result = result + high * (1.0 - cdf_b)
    return result


def _activation_bounds(layer):
    """``(low, high)`` clip of a ReLU-like layer, or None if not one."""
    kind = type(layer).__name__
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    if kind == "ReLU":
        return 0.0, layer.max_value
    if kind == "Activation" and name in ("relu", "relu6"):
        return 0.0, 6.0 if name == "relu6" else None
    if kind.startswith("ZeroPadding") or kind == "Dropout":
        return None, None
    if op_types.keras_class_name(layer, _CORRECTABLE):
        if name == "relu":
            return 0.0, None
        if name == "relu6":
            return 0.0, 6.0
        if name == "linear":
            return None, None
    return False


def _input_means(model, stats):
    """``{layer: E[input] per channel}`` from the producing layers' BN stats."""
    connections = connections_lib.layer_connections(model)
    layers = {s.operation.name: s.operation for s in prepare_lib.walk(model)}
    means = {}
    for name in layers:
        if op_types.keras_class_name(layers[name], _CORRECTABLE) is None:
            continue
        (source,) = connections.producers[name]
        low, high, path = None, None, []
        while source is not None and source not in stats:
            bounds = _activation_bounds(layers[source])
            if bounds is False or len(connections.producers[source]) != 1:
                source = None
                break
            if bounds[0] is not None:
                low = bounds[0] if low is None else max(low, bounds[0])
            if bounds[1] is not None:
                high = bounds[1] if high is None else min(high, bounds[1])
            path.append(source)
            (source,) = connections.producers[source]
        if source is None:
            continue
        # The producing conv's own fused activation clips too.
        own = _activation_bounds(layers[source])
        if own and own[0] is not None:
            low = own[0] if low is None else max(low, own[0])
        if own and own[1] is not None:
            high = own[1] if high is None else min(high, own[1])
        mean, std = stats[source]
        if low is None and high is None:
            means[name] = mean
        else:
            means[name] = _clipped_gaussian_mean(mean, std, low, high)
    return means


def _weight_error(layer, quantizer):
    """``W_q - W`` of a layer's kernel on its quantizer's grid."""
    kernel = layer.kernel
    quantized = quantize_lib.quantize_dequantize(
        kernel.value, quantizer.encoding, axis=quantizer.axis
    )
    return (np.asarray(quantized) - kernel.numpy()).astype(np.float64)


def _analytical_shift(layer, error, input_mean):
    kind = op_types.keras_class_name(layer, _CORRECTABLE)
    if kind.startswith("Depthwise"):
        channels = error.shape[-2] * error.shape[-1]
        summed = error.reshape(-1, channels).sum(0)
        return summed * np.repeat(input_mean, error.shape[-1])
    summed = error.reshape(-1, error.shape[-2], error.shape[-1]).sum(0)
    return input_mean @ summed


def _targets(sim):
    targets = []
    calls = {}
    for site in prepare_lib.walk(sim._prepared):
        calls[site.operation.name] = calls.get(site.operation.name, 0) + 1
    for wrapper in sim.quant_wrappers():
        layer = wrapper.layer
        kernel = wrapper.param_quantizers.get("kernel")
        if (
            op_types.keras_class_name(layer, _CORRECTABLE)
            and getattr(layer, "use_bias", False)
            and kernel is not None
            and kernel.enabled
            and calls[wrapper.name] == 1
        ):
            targets.append(wrapper)
    return targets


def _channel_means(probe, data, batch_size):
    """Per-channel means of each of ``probe``'s outputs over ``data``."""
    results = probe.predict(data, batch_size=batch_size, verbose=0)
    if not isinstance(results, (list, tuple)):
        results = [results]
    return [
        r.reshape(-1, r.shape[-1]).astype(np.float64).mean(0) for r in results
    ]


def correct_bias(
    model: keras.Model,
    data: object = None,
    quant_scheme: str = "tf_enhanced",
    default_param_bw: int = 8,
    default_output_bw: int = 8,
    config_file: str | os.PathLike | None = None,
    batch_size: int = 64,
    bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    verbose: int | str = "auto",
) -> tuple[keras.Model, dict]:
    """Corrects the biases for the mean shift weight quantization causes.

    With ``data``, empirical; without, analytical from BatchNormalization
    statistics. BatchNormalizations are folded first; the returned float
    model is what to quantize next (for example with
    :class:`~aimet_keras.sim.QuantizationSimModel` on the same settings).

    Args:
        model: a built ``keras.Model``.
        data: unlabelled model inputs (an array, or anything ``predict``
            takes) for empirical correction; None for analytical. Defaults
            to None.
        quant_scheme: the sim's scheme. Defaults to ``"tf_enhanced"``.
        default_param_bw: weight bits. Defaults to 8.
        default_output_bw: activation bits. Defaults to 8.
        config_file: the quantsim config. Defaults to AIMET's default.
        batch_size: batch size for the data passes. Defaults to 64.
        bn_stats: for a model whose batch norms are already folded (for
            example by :func:`~aimet_keras.ptq.equalize_model`), the
            ``{layer: (mean, std)}`` of their outputs from
            :func:`~aimet_keras.ptq.bn_output_stats` (scaled as CLE scaled
            them). Defaults to None (read from the model's own batch
            norms).
        verbose: a progress bar over the corrected layers: 1 always, 0
            never, ``"auto"`` in a terminal. Defaults to ``"auto"``.

    Returns:
        ``(corrected_model, corrections)``: the new float model and
        ``{layer name: per-channel bias change}``.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> corrected, changes = correct_bias(model, default_param_bw=4)
    >>> "stage1_b_conv" in changes
    True
    """
    from aimet_keras.sim import QuantizationSimModel

    stats = (
        dict(bn_stats)
        if bn_stats is not None
        else batch_norm_fold.bn_output_stats(model)
    )
    folded, _ = batch_norm_fold.fold_all_batch_norms(model)
    sim = QuantizationSimModel(
        folded,
        quant_scheme=quant_scheme,
        default_param_bw=default_param_bw,
        default_output_bw=default_output_bw,
        config_file=config_file,
    )
    corrections = {}
    targets = _targets(sim)
    if data is None:
        sim._compute_param_encodings()
        means = _input_means(sim._prepared, stats)
        for wrapper in targets:
            if wrapper.name not in means:
                _LOG.info(
                    "Bias correction: no input statistics for %s; skipped.",
                    wrapper.name,
                )
                continue
            error = _weight_error(
                wrapper.layer, wrapper.param_quantizers["kernel"]
            )
            shift = _analytical_shift(wrapper.layer, error, means[wrapper.name])
            corrections[wrapper.name] = _shift_bias(wrapper.layer, -shift)
        return sim._prepared, corrections
    sim.compute_encodings(data, verbose=verbose)
    outputs = {s.operation.name: s.outputs[0] for s in prepare_lib.walk(folded)}
    fp32_means = _channel_means(
        keras.Model(folded.inputs, [outputs[w.name] for w in targets]),
        data,
        batch_size,
    )
    # In graph order, each layer measured with the ones before corrected;
    # one probe of every target output, compiled once, run per layer.
    probe = keras.Model(sim.model.inputs, [w.output for w in targets])
    progress = progress_lib.progress_bar(
        verbose, len(targets), "Correcting biases", "layer"
    )
    for index, (wrapper, fp32_mean) in enumerate(zip(targets, fp32_means)):
        sim_mean = _channel_means(probe, data, batch_size)[index]
        corrections[wrapper.name] = _shift_bias(
            wrapper.layer, fp32_mean - sim_mean
        )
        if progress is not None:
            progress.update(index + 1)
    return sim._prepared, corrections


def _shift_bias(layer, delta):
    layer.bias.assign((layer.bias.numpy() + delta).astype(layer.bias.dtype))
    return delta
