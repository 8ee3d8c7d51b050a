"""Keras callbacks for quantization-aware training.

Pass them to ``fit`` on a simulated model (``sim.model``, or what
:func:`~aimet_keras.quantize_model` returns)::

    sim.model.compile(optimizer="adam", loss=..., metrics=["accuracy"])
    sim.model.fit(
        train, epochs=3, validation_data=val,
        callbacks=[
            qat.FreezeBatchNormStatistics(after_epoch=1),
            qat.OscillationDampening(),          # 4-bit and lower weights
            qat.IterativeWeightFreezing(),
            qat.ExportBestEpoch(sim, "out", "resnet_w4a4"),
        ],
    )

The freezing callbacks change what the model trains without a retrace: batch
norm freezing flips a variable the traced step reads, and frozen activation
ranges are put back after every step. One compiled step serves the run.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import pathlib
import typing

import keras
import numpy as np
import tensorflow as tf

from aimet_keras.qat import batch_norm_folding as folding_lib
from aimet_keras.quant import encoding as encoding_lib
from aimet_keras.quant import quantize as quantize_lib
from aimet_keras.sim import wrapper as wrapper_lib

if typing.TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = [
    "ExportBestEpoch",
    "FinalizeEncodings",
    "FreezeActivationEncodings",
    "FreezeBatchNormStatistics",
    "IterativeWeightFreezing",
    "OscillationDampening",
]

_LOG = logging.getLogger("aimet_keras")


def _wrappers(model):
    """Every QuantizationWrapper in ``model``, nested models included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, wrapper_lib.QuantizationWrapper)
    ]


def _rebuild_functions(model):
    """Retraces ``model``'s train, test and predict functions when next run.

    ``fit`` reads ``model.train_function`` at every step, so a new one takes
    effect from the next batch.
    """
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
    model.test_function = None
    model.predict_function = None


def _check_epoch(after_epoch, name):
    if not isinstance(after_epoch, int) or after_epoch < 0:
        raise ValueError(
            f"{name}: after_epoch={after_epoch!r}; use a whole number of "
            "epochs >= 0."
        )


def _low_bit_weights(model, max_bits, name):
    """``[(wrapper, key, quantizer)]`` for integer weights of <= max_bits.

    Kernels only: biases are a handful of values on fine grids.
    """
    if not isinstance(max_bits, int) or max_bits < 2:
        raise ValueError(f"{name}: max_bits={max_bits!r}; use an int >= 2.")
    found = []
    for wrapper in _wrappers(model):
        for key, quantizer in wrapper.param_quantizers.items():
            if (
                quantizer.enabled
                and quantizer.data_type == "int"
                and quantizer.is_initialized
                and quantizer.bitwidth <= max_bits
                and key.endswith("kernel")
            ):
                found.append((wrapper, key, quantizer))
    return found


class FreezeBatchNormStatistics(keras.callbacks.Callback):
    """Stops batch norms using and tracking batch statistics after an epoch.

    From epoch ``after_epoch`` (0-based: ``after_epoch=1`` freezes after the
    first epoch) every batch normalization in a quantization wrapper
    normalizes with its moving statistics and no longer updates them, while
    its scale and offset keep training. This is the usual late phase of QAT
    (Jacob et al. 2018; PyTorch's ``freeze_bn_stats``): the network then
    trains exactly what inference computes. A
    :class:`~aimet_keras.qat.FoldedBatchNorm` then runs as the folded layer
    deployment uses. A BatchNormalization outside any wrapper is frozen the
    Keras way (``trainable = False``), which also stops its scale and offset
    training.

    Args:
        after_epoch: the epoch from which statistics are frozen. Defaults to
            1.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> images = np.random.rand(32, 8, 8, 1).astype("float32")
    >>> labels = np.arange(32) % 3
    >>> qmodel = quantize_model(model, fold_batch_norms=False)  # QAT keeps BN
    >>> qmodel.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> freeze = FreezeBatchNormStatistics(after_epoch=0)
    >>> _ = qmodel.fit(images, labels, epochs=1, verbose=0, callbacks=[freeze])
    >>> [w.name for w in qmodel.layers if getattr(w, "statistics_frozen", 0)]
    ['bn']
    """

    def __init__(self, after_epoch: int = 1) -> None:
        super().__init__()
        _check_epoch(after_epoch, "FreezeBatchNormStatistics")
        self.after_epoch = after_epoch
        self.frozen = False

    def _statistics_wrappers(self):
        statistics = (
            keras.layers.BatchNormalization,
            folding_lib.FoldedBatchNorm,
        )
        return [
            wrapper
            for wrapper in _wrappers(self.model)
            if isinstance(wrapper.layer, statistics)
        ]

    def on_train_begin(self, logs: dict | None = None) -> None:
        # The switch is a variable the train step reads: flipping it later
        # needs no retrace. A step traced before the switch existed does not
        # read it, so it is rebuilt now, before its first trace in this fit.
        added = [w.use_statistics_switch() for w in self._statistics_wrappers()]
        if any(added):
            _rebuild_functions(self.model)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.frozen or epoch < self.after_epoch:
            return
        self.frozen = True
        frozen = []
        # Layers inside a wrapper (a FoldedBatchNorm's batch norm) follow
        # the wrapper's switch.
        wrapped = {
            id(layer)
            for wrapper in _wrappers(self.model)
            for layer in wrapper._flatten_layers(recursive=True)
        }
        for wrapper in self._statistics_wrappers():
            wrapper.statistics_frozen = True
            frozen.append(wrapper.name)
        unwrapped = [
            layer
            for layer in self.model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)
            and id(layer) not in wrapped
        ]
        for layer in unwrapped:
            layer.trainable = False
            frozen.append(layer.name)
        _LOG.info(
            "Epoch %d: batch norm statistics frozen in %d layer(s).",
            epoch,
            len(frozen),
        )
        if unwrapped:
            # A plain layer's trainable flag is read while tracing.
            _rebuild_functions(self.model)


class FreezeActivationEncodings(keras.callbacks.Callback):
    """Stops training the activation grids after an epoch.

    With a range-learning scheme, activation ranges train with the weights;
    freezing them for the last epochs lets the weights settle on fixed
    grids. From epoch ``after_epoch`` (0-based) the ``encoding_min`` and
    ``encoding_max`` of every input, output and internal quantizer stop
    being trainable (weight grids keep training).

    Args:
        after_epoch: the epoch from which activation grids are frozen.
            Defaults to 1.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> images = np.random.rand(32, 8, 8, 1).astype("float32")
    >>> labels = np.arange(32) % 3
    >>> sim = QuantizationSimModel(
    ...     model, quant_scheme="training_range_learning_with_tf_init")
    >>> sim.compute_encodings(images)
    >>> sim.model.compile(optimizer="adam",
    ...                   loss="sparse_categorical_crossentropy")
    >>> relu = sim.model.layers[3].output_quantizers[0]
    >>> before = relu.encoding_max.numpy()
    >>> _ = sim.model.fit(images, labels, epochs=1, verbose=0,
    ...                   callbacks=[FreezeActivationEncodings(after_epoch=0)])
    >>> bool(relu.encoding_max.numpy() == before)
    True
    """

    def __init__(self, after_epoch: int = 1) -> None:
        super().__init__()
        _check_epoch(after_epoch, "FreezeActivationEncodings")
        self.after_epoch = after_epoch
        self.frozen = False
        self._held = []

    def _learned_grids(self):
        return [
            quantizer
            for wrapper in _wrappers(self.model)
            for quantizer in (
                *wrapper.input_quantizers,
                *wrapper.output_quantizers,
                *wrapper.internal_quantizers.values(),
            )
            if quantizer.built and quantizer.encoding_min.trainable
        ]

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.frozen or epoch < self.after_epoch:
            return
        self.frozen = True
        grids = self._learned_grids()
        _LOG.info("Epoch %d: %d activation grid(s) frozen.", epoch, len(grids))
        if getattr(self.model, "steps_per_execution", 1) == 1:
            # The traced step keeps training the ranges; putting them back
            # after every step freezes them exactly, with no retrace.
            self._held = [
                (variable, variable.numpy())
                for quantizer in grids
                for variable in (quantizer.encoding_min, quantizer.encoding_max)
            ]
            return
        # Several steps run per call: stop the optimizer updating them.
        self._stop_training(grids)
        _rebuild_functions(self.model)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for variable, value in self._held:
            variable.assign(value)

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self._held:
            return
        self.on_train_batch_end(None)
        self._held = []
        # Frozen from here on, for a later fit as well (it traces anew).
        self._stop_training(self._learned_grids())
        _rebuild_functions(self.model)

    @staticmethod
    def _stop_training(grids):
        for quantizer in grids:
            quantizer.encoding_min.trainable = False
            quantizer.encoding_max.trainable = False


def _grid_integers(quantizer, weight):
    """The grid points ``weight`` rounds to under ``quantizer``, and steps."""
    return quantize_lib.grid_integers(
        weight,
        quantizer.encoding_min,
        quantizer.encoding_max,
        quantizer.bitwidth,
        quantizer.is_symmetric,
        quantizer.strict_symmetric,
        quantizer.unsigned_symmetric,
        axis=quantizer.axis,
    )


def _dampening_loss(targets):
    """The regularizer for one wrapper's low-bit weights (Nagel et al.).

    ``sum((w - bin_centre(w))**2)`` over the weights inside the grid's range:
    it pulls each latent weight towards the centre of its bin, where small
    updates no longer flip it to the neighbouring grid point. The centre is
    a constant (no gradient), and clipped weights are left alone.
    """

    def loss(wrapper):
        values = wrapper.weight_values()
        total = 0.0
        for key, quantizer in targets:
            weight = tf.cast(values[key], tf.float32)
            integers, delta = _grid_integers(quantizer, weight)
            centre = tf.stop_gradient(integers * delta)
            distance = weight - centre
            inside = tf.abs(distance) <= 0.5001 * tf.stop_gradient(delta)
            total += tf.reduce_sum(tf.where(inside, distance**2, 0.0))
        return total

    return loss


class OscillationDampening(keras.callbacks.Callback):
    """Oscillation dampening for low-bit weights (Nagel et al., ICML 2022).

    At 4 bits and below, latent weights near a bin boundary flip between two
    grid points from step to step; the flips corrupt batch norm statistics
    and leave the final rounding to chance. Dampening adds
    ``strength * sum((w - bin_centre(w))**2)`` over those weights to the
    training loss, with the strength ramped from 0 to ``strength`` over the
    training run by a cosine schedule, so early training is free and late
    training settles weights inside their bins.

    Args:
        strength: the final weight of the regularizer. Defaults to 0.01.
        max_bits: weights on grids of at most this many bits are dampened.
            Defaults to 4.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> images = np.random.rand(32, 8, 8, 1).astype("float32")
    >>> labels = np.arange(32) % 3
    >>> sim = QuantizationSimModel(model, default_param_bw=4,
    ...                            config_file="htp")
    >>> sim.compute_encodings(images)
    >>> sim.model.compile(optimizer="adam",
    ...                   loss="sparse_categorical_crossentropy")
    >>> dampening = OscillationDampening(strength=0.01)
    >>> _ = sim.model.fit(images, labels, epochs=1, verbose=0,
    ...                   callbacks=[dampening])
    >>> len(dampening.layers) > 0, float(dampening.current_strength) > 0
    (True, True)
    """

    def __init__(self, strength: float = 0.01, max_bits: int = 4) -> None:
        super().__init__()
        if not strength >= 0:
            raise ValueError(
                f"OscillationDampening: strength={strength!r}; use a "
                "number >= 0."
            )
        self.strength = float(strength)
        self.max_bits = max_bits
        self.layers = []
        self._installed = []
        self._variable = None

    @property
    def current_strength(self) -> float:
        """The regularizer's weight at this point of training."""
        return 0.0 if self._variable is None else self._variable.numpy()

    def on_train_begin(self, logs: dict | None = None) -> None:
        targets = {}
        for wrapper, key, quantizer in _low_bit_weights(
            self.model, self.max_bits, "OscillationDampening"
        ):
            targets.setdefault(wrapper, []).append((key, quantizer))
        if not targets:
            _LOG.warning(
                "OscillationDampening: no weights of %d bits or fewer; "
                "nothing to dampen.",
                self.max_bits,
            )
            return
        strategy = getattr(
            self.model, "distribute_strategy", tf.distribute.get_strategy()
        )
        with strategy.scope():
            self._variable = tf.Variable(
                0.0, trainable=False, name="oscillation_dampening"
            )
        self._total_steps = max(
            1,
            (self.params.get("epochs") or 1) * (self.params.get("steps") or 1),
        )
        self._step = 0
        variable = self._variable
        for wrapper, pairs in targets.items():
            loss = _dampening_loss(pairs)

            def regularizer(w, loss=loss):
                return variable * loss(w)

            wrapper.add_training_loss(regularizer)
            self._installed.append((wrapper, regularizer))
        self.layers = [w.name for w in targets]
        _rebuild_functions(self.model)

    def on_train_batch_begin(
        self, batch: int, logs: dict | None = None
    ) -> None:
        if self._variable is None:
            return
        progress = min(1.0, (self._step + 1) / self._total_steps)
        self._variable.assign(
            self.strength * 0.5 * (1.0 - math.cos(math.pi * progress))
        )
        self._step += 1

    def on_train_end(self, logs: dict | None = None) -> None:
        for wrapper, regularizer in self._installed:
            wrapper.remove_training_loss(regularizer)
        if self._installed:
            _rebuild_functions(self.model)
        self._installed = []


class IterativeWeightFreezing(keras.callbacks.Callback):
    """Freezes oscillating low-bit weights (Nagel et al., ICML 2022).

    After every training step it reads which grid point each low-bit weight
    rounds to and keeps, per weight, an exponential moving average of how
    often that integer flips direction (an oscillation) and of the integer
    itself. A weight whose oscillation frequency exceeds ``threshold`` is
    frozen: its latent value is pinned to the moving average's grid point
    from then on. The weights stay pinned after training.

    Layers that quantize their own weights
    (:class:`~aimet_keras.qat.FoldedBatchNorm`) are skipped: their quantized
    kernel is not a variable to pin; finalize or fold first.

    Args:
        threshold: oscillation frequency above which a weight freezes.
            Defaults to 0.02.
        momentum: the moving averages' update weight per step. Defaults to
            0.01.
        max_bits: weights on grids of at most this many bits are tracked.
            Defaults to 4.

    Attributes:
        frozen_fraction: the fraction of tracked weights frozen so far.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> images = np.random.rand(32, 8, 8, 1).astype("float32")
    >>> labels = np.arange(32) % 3
    >>> sim = QuantizationSimModel(model, default_param_bw=4,
    ...                            config_file="htp")
    >>> sim.compute_encodings(images)
    >>> sim.model.compile(optimizer="adam",
    ...                   loss="sparse_categorical_crossentropy")
    >>> freezing = IterativeWeightFreezing()
    >>> _ = sim.model.fit(images, labels, epochs=1, verbose=0,
    ...                   callbacks=[freezing])
    >>> 0.0 <= freezing.frozen_fraction <= 1.0
    True
    """

    def __init__(
        self, threshold: float = 0.02, momentum: float = 0.01, max_bits: int = 4
    ) -> None:
        super().__init__()
        if not 0 < threshold <= 1 or not 0 < momentum <= 1:
            raise ValueError(
                "IterativeWeightFreezing: threshold and momentum must lie in "
                f"(0, 1]; got threshold={threshold!r}, momentum={momentum!r}."
            )
        self.threshold = float(threshold)
        self.momentum = float(momentum)
        self.max_bits = max_bits
        self.frozen_fraction = 0.0
        self._tracked = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._tracked = []
        for wrapper, key, quantizer in _low_bit_weights(
            self.model, self.max_bits, "IterativeWeightFreezing"
        ):
            if wrapper.quantizes_own_weights:
                _LOG.info(
                    "IterativeWeightFreezing: %s quantizes a derived kernel; "
                    "skipped.",
                    wrapper.name,
                )
                continue
            weight = wrapper.weight_values()[key]
            with tf.init_scope():
                state = {
                    name: tf.Variable(
                        tf.zeros(weight.shape, dtype),
                        trainable=False,
                        name=f"{wrapper.name}_{key}_{name}",
                    )
                    for name, dtype in (
                        ("previous", tf.float32),
                        ("direction", tf.float32),
                        ("frequency", tf.float32),
                        ("average", tf.float32),
                        ("frozen", tf.bool),
                        ("frozen_integer", tf.float32),
                    )
                }
                state["started"] = tf.Variable(False, trainable=False)
            self._tracked.append((weight, quantizer, state))
        self._num_tracked = sum(
            int(np.prod(w.shape)) for w, _, _ in self._tracked
        )
        self._update = tf.function(self._update_all)

    def _update_all(self):
        m = self.momentum
        frozen_count = tf.constant(0.0)
        for weight, quantizer, state in self._tracked:
            integers, delta = _grid_integers(quantizer, weight)
            started = state["started"]
            previous = tf.where(started, state["previous"], integers)
            average = tf.where(started, state["average"], integers)
            change = integers - previous
            sign = tf.sign(change)
            oscillated = tf.logical_and(
                tf.not_equal(change, 0.0),
                tf.equal(sign, -state["direction"]),
            )
            frequency = (1 - m) * state["frequency"] + m * tf.cast(
                oscillated, tf.float32
            )
            average = (1 - m) * average + m * integers
            newly = tf.logical_and(
                frequency > self.threshold, tf.logical_not(state["frozen"])
            )
            frozen = tf.logical_or(state["frozen"], newly)
            frozen_integer = tf.where(
                newly,
                encoding_lib.round_half_away_from_zero(average),
                state["frozen_integer"],
            )
            state["frequency"].assign(frequency)
            state["direction"].assign(
                tf.where(tf.not_equal(change, 0.0), sign, state["direction"])
            )
            state["average"].assign(average)
            state["previous"].assign(integers)
            state["frozen"].assign(frozen)
            state["frozen_integer"].assign(frozen_integer)
            started.assign(True)
            # Pinned to the grid point itself, the latent weight rounds to
            # it whatever the optimizer's momentum did this step.
            pinned = tf.cast(frozen_integer * delta, weight.dtype)
            weight.assign(tf.where(frozen, pinned, weight))
            frozen_count += tf.reduce_sum(tf.cast(frozen, tf.float32))
        return frozen_count

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self._tracked:
            return
        self.frozen_fraction = float(self._update()) / self._num_tracked

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._tracked:
            _LOG.info(
                "Epoch %d: %.2f%% of low-bit weights frozen.",
                epoch,
                100 * self.frozen_fraction,
            )
            if logs is not None:
                logs["frozen_weights"] = self.frozen_fraction


class FinalizeEncodings(keras.callbacks.Callback):
    """Recomputes the sim's encodings from the trained model at the end.

    QAT on fixed (not range-learned) weight grids moves the weights under
    grids computed before training; at the end this callback recalibrates
    those weight grids from the trained weights, and, given calibration
    data, every activation grid too (AIMET's advice after QAT with fixed
    grids). Learned ranges (range-learning schemes) and frozen encodings are
    kept.

    Args:
        sim: the :class:`~aimet_keras.sim.QuantizationSimModel` trained.
        calibration_data: data for
            :meth:`~aimet_keras.sim.QuantizationSimModel.compute_encodings`:
            every fixed grid is recomputed. None keeps the activation grids.
            Defaults to None.
        weights: without calibration data, recompute the fixed weight
            grids. Defaults to True.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> images = np.random.rand(32, 8, 8, 1).astype("float32")
    >>> labels = np.arange(32) % 3
    >>> sim = QuantizationSimModel(model)
    >>> sim.compute_encodings(images)
    >>> sim.model.compile(optimizer="adam",
    ...                   loss="sparse_categorical_crossentropy")
    >>> _ = sim.model.fit(images, labels, epochs=1, verbose=0,
    ...                   callbacks=[FinalizeEncodings(sim)])
    """

    def __init__(
        self,
        sim: QuantizationSimModel,
        calibration_data: object = None,
        weights: bool = True,
    ) -> None:
        super().__init__()
        self.sim = sim
        self.calibration_data = calibration_data
        self.weights = weights

    def on_train_end(self, logs: dict | None = None) -> None:
        finalize_encodings(self.sim, self.calibration_data, self.weights)


def finalize_encodings(sim, calibration_data=None, weights=True):
    """What :class:`FinalizeEncodings` does at the end of training.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> images = np.random.rand(32, 8, 8, 1).astype("float32")
    >>> labels = np.arange(32) % 3
    >>> sim = QuantizationSimModel(model)
    >>> sim.compute_encodings(images)
    >>> finalize_encodings(sim, calibration_data=images)
    """
    learned = [
        (quantizer, quantizer.encoding)
        for wrapper in sim.quant_wrappers()
        for quantizer in wrapper.quantizers
        if quantizer.range_learning
        and quantizer.enabled
        and quantizer.is_initialized
    ]
    if calibration_data is not None:
        sim.compute_encodings(calibration_data)
    elif weights:
        sim._compute_param_encodings()
    for quantizer, encoding in learned:
        quantizer.set_encoding(encoding)


_MODES = {"max": np.greater, "min": np.less}


class ExportBestEpoch(keras.callbacks.Callback):
    """Keeps the best epoch's model and exports it when training ends.

    After each epoch the monitored metric is compared with the best so far;
    the best epoch's state (weights, grids, batch norm statistics) is kept
    in memory. At the end of training the sim is set back to it, any
    :class:`~aimet_keras.qat.FoldedBatchNorm` is finalized into the folded
    layer (``sim.model`` is then replaced), and the sim is exported.

    Args:
        sim: the :class:`~aimet_keras.sim.QuantizationSimModel` trained.
        path: the output folder.
        filename_prefix: the files' stem.
        monitor: the metric in the epoch logs. Defaults to
            ``"val_accuracy"``.
        mode: ``"max"`` or ``"min"``; ``"auto"`` reads ``"loss"`` in the
            name as min. Defaults to ``"auto"``.
        formats: any of ``"aimet"`` (SavedModel, ``.keras`` and
            ``.encodings``: :meth:`~aimet_keras.sim.QuantizationSimModel.
            export`), ``"tflite"`` and ``"onnx"``. Defaults to
            ``("aimet",)``.

    Attributes:
        best_epoch: the 0-based epoch exported (None before training).
        best_value: its monitored value.
        paths: ``{format: written files}`` after training.

    Example:

    >>> import tempfile
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
    ...     keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> images = np.random.rand(32, 8, 8, 1).astype("float32")
    >>> labels = np.arange(32) % 3
    >>> sim = QuantizationSimModel(model)
    >>> sim.compute_encodings(images)
    >>> sim.model.compile(optimizer="adam",
    ...                   loss="sparse_categorical_crossentropy")
    >>> best = ExportBestEpoch(sim, tempfile.mkdtemp(), "qat", monitor="loss")
    >>> _ = sim.model.fit(images, labels, epochs=2, verbose=0,
    ...                   callbacks=[best])
    >>> best.best_epoch in (0, 1), sorted(best.paths)
    (True, ['aimet'])
    """

    def __init__(
        self,
        sim: QuantizationSimModel,
        path: str | os.PathLike,
        filename_prefix: str,
        monitor: str = "val_accuracy",
        mode: str = "auto",
        formats: Sequence[str] = ("aimet",),
    ) -> None:
        super().__init__()
        if mode == "auto":
            mode = "min" if "loss" in monitor else "max"
        if mode not in _MODES:
            raise ValueError(
                f"ExportBestEpoch: mode={mode!r}; use 'max', 'min' or 'auto'."
            )
        unknown = set(formats) - {"aimet", "tflite", "onnx"}
        if unknown or not formats:
            raise ValueError(
                f"ExportBestEpoch: formats={formats!r}; use any of 'aimet', "
                "'tflite', 'onnx'."
            )
        self.sim = sim
        self.path = os.fspath(path)
        self.filename_prefix = filename_prefix
        self.monitor = monitor
        self.mode = mode
        self.formats = tuple(formats)
        self.best_epoch = None
        self.best_value = None
        self.paths = {}
        self._best_weights = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"ExportBestEpoch: the epoch logs have no {self.monitor!r} "
                f"(they have {sorted(logs or {})}); pass validation_data to "
                "fit for 'val_*' metrics, or pick one of those."
            )
        value = float(value)
        if not math.isfinite(value):
            # A NaN never compares better, but as the first value it would
            # be kept as the best and exported.
            _LOG.warning(
                "ExportBestEpoch: %s is %s at epoch %d; that epoch is not a "
                "candidate.",
                self.monitor,
                value,
                epoch,
            )
            return
        if self.best_value is None or _MODES[self.mode](value, self.best_value):
            self.best_epoch, self.best_value = epoch, value
            self._best_weights = copy.deepcopy(self.model.get_weights())

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._best_weights is None:
            return
        self.model.set_weights(self._best_weights)
        folding_lib.finalize_batch_norm_folding(self.sim)
        _LOG.info(
            "ExportBestEpoch: exporting epoch %d (%s = %.4f).",
            self.best_epoch,
            self.monitor,
            self.best_value,
        )
        from aimet_keras.export import onnx as onnx_lib
        from aimet_keras.export import staging as staging_lib
        from aimet_keras.export import tflite as tflite_lib

        # Every format or none: a failure (or a kill) midway leaves the
        # previous run's files as they were.
        paths = {}
        with staging_lib.staged_folder(self.path) as work:
            if "aimet" in self.formats:
                paths["aimet"] = self.sim.export(work, self.filename_prefix)
            if "tflite" in self.formats:
                paths["tflite"] = tflite_lib.export_tflite(
                    self.sim, work / f"{self.filename_prefix}.tflite"
                )
            if "onnx" in self.formats:
                paths["onnx"] = onnx_lib.export_onnx(
                    self.sim, work / f"{self.filename_prefix}.onnx"
                )
        self.paths = _moved(paths, work, pathlib.Path(self.path))


def _moved(value, staged, folder):
    """``value`` (paths, a dict or an export's dataclass of them) with
    every path in ``staged`` pointing at the same name in ``folder``."""
    if isinstance(value, dict):
        return {k: _moved(v, staged, folder) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(
            value,
            **{
                field.name: _moved(getattr(value, field.name), staged, folder)
                for field in dataclasses.fields(value)
                if isinstance(getattr(value, field.name), (str, os.PathLike))
            },
        )
    if isinstance(value, (str, os.PathLike)):
        path = pathlib.Path(value)
        if path.parent == staged:
            moved = folder / path.name
            return str(moved) if isinstance(value, str) else moved
    return value
