"""Compression inside a training script: an evaluator and a Keras callback.

:func:`accuracy_evaluator` turns labelled data into the ``eval_callback``
that :func:`~aimet_keras.compress.compress_model` needs;
:class:`CompressAtTrainEnd` runs the greedy search (one scheme, or spatial
SVD then channel pruning) on the trained model when ``fit`` ends, and keeps
the compressed model and its statistics for fine-tuning.
"""

from __future__ import annotations

import os
import typing

import keras
import numpy as np

from aimet_keras.compress import cost as cost_lib
from aimet_keras.compress import greedy as greedy_lib
from aimet_keras.export import staging as staging_lib

if typing.TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Sequence

__all__ = ["CompressAtTrainEnd", "accuracy_evaluator"]


def _labelled_batches(data, batch_size):
    """``(inputs, labels)`` batches from ``(x, y)`` arrays or a ``tf.data``
    set of ``(x, y)`` batches."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        for element in data:
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise ValueError(
                    "The evaluation dataset must yield (inputs, labels)."
                )
            yield np.asarray(element[0]), np.asarray(element[1])
        return
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "Give evaluation data as (inputs, labels) arrays or a "
            "tf.data.Dataset of (inputs, labels) batches."
        )
    inputs, labels = np.asarray(data[0]), np.asarray(data[1])
    if len(inputs) != len(labels):
        raise ValueError(
            f"Evaluation data has {len(inputs)} inputs but {len(labels)} "
            "labels."
        )
    for start in range(0, len(inputs), batch_size):
        end = start + batch_size
        yield inputs[start:end], labels[start:end]


def accuracy_evaluator(
    data: object, batch_size: int = 256
) -> Callable[[keras.Model, int | None], float]:
    """An ``eval_callback`` scoring top-1 accuracy on labelled data.

    ``eval_iterations`` (AIMET's meaning) is the number of batches scored;
    None or a number larger than the data scores all of it.

    Args:
        data: ``(inputs, labels)`` arrays, or a ``tf.data`` set of
            ``(inputs, labels)`` batches. Labels are class indices or
            one-hot rows.
        batch_size: the batch size for arrays. Defaults to 256.

    Returns:
        ``eval_callback(model, eval_iterations) -> accuracy in [0, 1]``.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, labels = zoo.load_fashion_mnist_slice("calibration")
    >>> evaluate = accuracy_evaluator((images, labels), batch_size=100)
    >>> 0.8 < evaluate(model, 2) <= 1.0
    True
    """

    def evaluate(model, eval_iterations=None):
        correct = total = 0
        for number, (inputs, labels) in enumerate(
            _labelled_batches(data, batch_size)
        ):
            if eval_iterations is not None and number >= eval_iterations:
                break
            predictions = np.asarray(model(inputs, training=False))
            if labels.ndim == predictions.ndim:
                labels = labels.argmax(-1)
            labels = labels.reshape(len(labels))
            correct += int(np.sum(predictions.argmax(-1) == labels))
            total += len(labels)
        if total == 0:
            raise ValueError("The evaluation data has no examples.")
        return correct / total

    return evaluate


class CompressAtTrainEnd(keras.callbacks.Callback):
    """Compresses the trained model when ``fit`` ends, greedily.

    Runs :func:`~aimet_keras.compress.compress_model` on the model as
    trained; the model being trained is not changed. With several schemes
    the stages chain, each compressing the previous stage's result (as
    AIMET's spatial SVD then channel pruning), and each target is the cost
    after that stage over the original's.

    Args:
        target_comp_ratio: the cost kept, in (0, 1); one per scheme.
        validation_data: ``(inputs, labels)`` or a ``tf.data`` set of
            batches, scored by :func:`accuracy_evaluator` (not used when
            ``eval_callback`` is given).
        scheme: a scheme, or a sequence of schemes to chain. Defaults to
            ``"spatial_svd"``.
        eval_iterations: batches per evaluation. Defaults to None (all).
        eval_callback: ``(model, eval_iterations) -> float`` in place of
            accuracy on ``validation_data``. Defaults to None.
        save_path: a ``.keras`` file for the compressed model. Defaults
            to None.
        plot_path: an ``.svg`` or ``.png`` file for the sensitivity chart
            (one per stage, numbered, when several; needs matplotlib).
            Defaults to None.
        verbose: 1 prints the cost kept at the end; 0 is silent.
            Defaults to 1.
        **options: more :func:`~aimet_keras.compress.compress_model`
            arguments (``data`` for channel pruning, ``modules_to_ignore``,
            ``cost_metric``, ``num_comp_ratio_candidates``, ...).

    Attributes:
        compressed_model: the result, after training.
        stats: a ``CompressionStats`` per stage.

    Example:

    >>> model = zoo.load_model("resnet")
    >>> images, labels = zoo.load_fashion_mnist_slice("calibration")
    >>> compress = CompressAtTrainEnd(
    ...     0.8, (images[:64], labels[:64]), num_comp_ratio_candidates=3,
    ...     modules_to_ignore=["stem_conv"], verbose=0)
    >>> _ = model.fit(images[:64], labels[:64], epochs=1, verbose=0,
    ...               callbacks=[compress])
    >>> 0.79 < compress.stats[-1].achieved_comp_ratio <= 0.8
    True
    """

    def __init__(
        self,
        target_comp_ratio: float | Sequence[float],
        validation_data: object = None,
        scheme: str | Sequence[str] = "spatial_svd",
        eval_iterations: int | None = None,
        eval_callback: Callable[[keras.Model, int | None], float] | None = None,
        save_path: str | os.PathLike | None = None,
        plot_path: str | os.PathLike | None = None,
        verbose: int = 1,
        **options: object,
    ) -> None:
        super().__init__()
        schemes = (scheme,) if isinstance(scheme, str) else tuple(scheme)
        targets = (
            (target_comp_ratio,)
            if isinstance(target_comp_ratio, (int, float))
            else tuple(target_comp_ratio)
        )
        if len(schemes) != len(targets) or not schemes:
            raise ValueError(
                f"{len(schemes)} schemes and {len(targets)} target ratios; "
                "give one target_comp_ratio per scheme."
            )
        for scheme_name in schemes:
            if scheme_name not in greedy_lib.SCHEMES:
                raise ValueError(
                    f"scheme={scheme_name!r}; use one of "
                    f"{list(greedy_lib.SCHEMES)}."
                )
        if any(not 0 < t < 1 for t in targets) or list(targets) != sorted(
            targets, reverse=True
        ):
            raise ValueError(
                f"target_comp_ratio={target_comp_ratio!r}; use fractions in "
                "(0, 1), falling from stage to stage (each is the cost after "
                "that stage over the original's)."
            )
        if eval_callback is None:
            if validation_data is None:
                raise ValueError(
                    "Give validation_data (inputs, labels) or an "
                    "eval_callback to score the candidates."
                )
            eval_callback = accuracy_evaluator(validation_data)
        self.schemes = schemes
        self.targets = targets
        self.eval_callback = eval_callback
        self.eval_iterations = eval_iterations
        if save_path is not None and not str(save_path).endswith(".keras"):
            # Checked now, not after the search has run for an hour.
            raise ValueError(
                f"save_path={str(save_path)!r}; use a .keras file name."
            )
        self.save_path = save_path
        self.plot_path = plot_path
        self.options = options
        self.verbose = verbose
        self.compressed_model = None
        self.stats = []

    def on_train_end(self, logs: dict | None = None) -> None:
        model = self.model
        original = _cost(model, self.options)
        self.stats = []
        for stage, (scheme, target) in enumerate(
            zip(self.schemes, self.targets)
        ):
            relative = target * original / _cost(model, self.options)
            model, stats = greedy_lib.compress_model(
                model,
                self.eval_callback,
                self.eval_iterations,
                min(relative, 1 - 1e-9),
                scheme=scheme,
                **self.options,
            )
            self.stats.append(stats)
            if self.plot_path is not None:
                stats.plot(_numbered(self.plot_path, stage, len(self.schemes)))
        self.compressed_model = model
        if self.save_path is not None:
            staging_lib.save_model_atomically(model, self.save_path)
        final = _cost(model, self.options) / original
        if self.verbose:
            print(
                f"CompressAtTrainEnd: {' then '.join(self.schemes)} kept "
                f"{final:.1%} of the cost (target {self.targets[-1]:.1%})."
            )


def _cost(model, options):
    metric = options.get("cost_metric", "mac")
    if metric == "latency":
        # Time, as the search measures it: each weighted layer timed alone.
        from aimet_keras.compress import latency as latency_lib
        from aimet_keras.graph import prepare as prepare_lib

        times = latency_lib.ModelTimes(
            prepare_lib.prepare_model(model),
            options.get("latency_table") or latency_lib.LatencyTable(),
        )
        return sum(times.whole.values())
    return cost_lib.model_cost(model).total(metric)


def _numbered(path, stage, stages):
    if stages == 1:
        return path
    root, extension = os.path.splitext(path)
    return f"{root}.{stage + 1}{extension}"
