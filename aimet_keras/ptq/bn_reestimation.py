"""BatchNormalization statistics re-estimated on a (quantized) model.

After quantization-aware training the BN moving statistics describe the
float network's activations, not the quantized one's. Re-estimation runs
the model in training mode over a few batches, averages each batch's mean
and variance per BN, and makes them the moving statistics (AIMET's
``reestimate_bn_stats``); fold the batch norms afterwards.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

__all__ = ["BnReestimationHandle", "reestimate_bn_stats"]


def _batch_norms(model):
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # a QuantizationWrapper's
        if isinstance(inner, keras.layers.BatchNormalization):
            found.append(inner)
    return found


def _batches(data, num_batches, batch_size):
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        for element in data.take(num_batches):
            yield element[0] if isinstance(element, (tuple, list)) else element
        return
    data = np.asarray(data)
    for start in range(0, min(len(data), num_batches * batch_size), batch_size):
        yield data[start : start + batch_size]


@dataclasses.dataclass
class BnReestimationHandle:
    """Undoes a re-estimation: ``handle.remove()`` restores the statistics."""

    saved: list

    def remove(self) -> None:
        """Puts back the moving statistics from before re-estimation."""
        for bn, mean, variance in self.saved:
            bn.moving_mean.assign(mean)
            bn.moving_variance.assign(variance)


def reestimate_bn_stats(
    model: keras.Model,
    bn_re_estimation_dataset: object,
    bn_num_batches: int = 100,
    batch_size: int = 64,
) -> BnReestimationHandle:
    """Re-estimates every BatchNormalization's moving statistics.

    Args:
        model: a Keras model, for example ``sim.model`` after QAT (wrapped
            batch norms are found too).
        bn_re_estimation_dataset: model inputs: a batched
            ``tf.data.Dataset`` (elements or ``(inputs, labels)`` tuples) or
            an array.
        bn_num_batches: batches to average over. Defaults to 100.
        batch_size: batch size for an array. Defaults to 64.

    Returns:
        A :class:`BnReestimationHandle` whose ``remove()`` restores the old
        statistics.

    Raises:
        ValueError: when the model has no BatchNormalization or the data is
            empty.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
    >>> handle = reestimate_bn_stats(model, images[:256], bn_num_batches=4)
    >>> handle.remove()
    """
    bns = _batch_norms(model)
    if not bns:
        raise ValueError(
            f"Model {model.name!r} has no BatchNormalization to re-estimate."
        )
    saved = [
        (bn, bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in bns
    ]
    momenta = [bn.momentum for bn in bns]
    sums = [
        [np.zeros_like(mean, np.float64), np.zeros_like(var, np.float64)]
        for _, mean, var in saved
    ]
    count = 0
    try:
        # Momentum 0: after each batch the moving statistics are that
        # batch's, which are summed here and averaged at the end.
        for bn in bns:
            bn.momentum = 0.0
        for batch in _batches(
            bn_re_estimation_dataset, bn_num_batches, batch_size
        ):
            model(batch, training=True)
            for total, bn in zip(sums, bns):
                total[0] += bn.moving_mean.numpy()
                total[1] += bn.moving_variance.numpy()
            count += 1
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    if count == 0:
        BnReestimationHandle(saved).remove()
        raise ValueError("bn_re_estimation_dataset gave no batches.")
    for (mean, variance), bn in zip(sums, bns):
        bn.moving_mean.assign((mean / count).astype("float32"))
        bn.moving_variance.assign((variance / count).astype("float32"))
    return BnReestimationHandle(saved)
