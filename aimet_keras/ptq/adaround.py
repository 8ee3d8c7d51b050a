"""AdaRound (Nagel et al. 2020): learn whether each weight rounds up or down.

Nearest rounding is not the best rounding for a layer's output. AdaRound
learns, per weight, a continuous variable ``alpha`` whose rectified sigmoid
``h(alpha) = clip(sigmoid(alpha) * (zeta - gamma) + gamma, 0, 1)``
(``zeta = 1.1``, ``gamma = -0.1``) picks between the grid points below and
above the weight::

    w_soft = delta * (clip(floor(w / delta) + h(alpha) - offset, 0, 2^b - 1)
                      + offset)

It minimises the layer's output error ``mean((f(x_q W_soft) - f(x W))^2)``
plus ``reg_param * sum(1 - |2 h(alpha) - 1|^beta)``, which pushes every
``h`` to 0 or 1 as ``beta`` is cosine-annealed from 20 to 2 after a warm
start (the first 20% of iterations, regularisation off). Adam, learning rate
1e-3, on ``alpha`` only. Layers are optimised one at a time in graph order;
each sees inputs from the preceding layers with their final (hard-rounded)
weights, and targets from the FP32 model.

``f`` is the layer's own activation and a standalone activation that
follows it (ReLU, ReLU6, PReLU...), applied to both sides: AIMET's Keras
port compares a post-activation target with a pre-activation output for
layers with a fused activation; here the layer runs whole on both sides.

The weight grids are computed once from the FP32 weights, by the quantsim
config (per-tensor or per-channel, any bitwidth 2 to 8 and more), and written
as AIMET's AdaRound parameter file for
:meth:`~aimet_keras.sim.QuantizationSimModel.set_and_freeze_param_encodings`.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import pathlib
import time
import typing

import keras
import numpy as np
import tensorflow as tf

from aimet_keras.export import encodings as encodings_lib
from aimet_keras.graph import connections as connections_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.ptq import mixed_precision as mixed_lib
from aimet_keras.ptq import sample_cache as cache_lib
from aimet_keras.quant import encoding as encoding_lib
from aimet_keras.sim import inputs as inputs_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Adaround", "AdaroundParameters"]

_LOG = logging.getLogger("aimet_keras")
ZETA, GAMMA = 1.1, -0.1
_ROUNDABLE = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Dense",
)
_ACTIVATIONS = (
    "ReLU",
    "PReLU",
    "ELU",
    "LeakyReLU",
    "Softmax",
    "Activation",
)


@dataclasses.dataclass
class AdaroundParameters:
    """AdaRound's data and optimisation settings (AIMET's names).

    Attributes:
        data_set: unlabelled model inputs: a batched ``tf.data.Dataset``
            (its elements, or the first of each tuple, are inputs) or an
            array of samples.
        num_batches: batches of ``data_set`` to use (for an array, batches
            of ``batch_size``).
        default_num_iterations: optimisation steps per layer. Defaults to
            10000.
        default_reg_param: ``reg_param`` (lambda). Defaults to 0.01.
        default_beta_range: ``(start, end)`` of the annealed beta. Defaults
            to ``(20, 2)``.
        default_warm_start: fraction of iterations without regularisation.
            Defaults to 0.2.
        batch_size: samples per step, drawn at random from the cached data
            each step. Defaults to 32.
        learning_rate: Adam's. Defaults to 1e-3.
        seed: for the batch draws. Defaults to 0.
        cache_limit_bytes: the most memory each cached array takes (the
            model inputs, and the optimised layer's inputs and targets):
            a larger one is kept in a memory-mapped file instead, read back
            a batch at a time. Defaults to 1 GiB; None keeps every array in
            memory.
        cache_folder: where such files go (deleted after use). Defaults to
            the system's temporary folder.
    """

    data_set: object
    num_batches: int
    default_num_iterations: int = 10000
    default_reg_param: float = 0.01
    default_beta_range: tuple = (20, 2)
    default_warm_start: float = 0.2
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    cache_limit_bytes: int | None = cache_lib.DEFAULT_LIMIT_BYTES
    cache_folder: str | os.PathLike | None = None

    def samples(self) -> np.ndarray:
        """The input samples, as one array (memory mapped past the cache
        limit, for a dataset)."""
        if isinstance(self.data_set, tf.data.Dataset):

            def batches():
                for element in self.data_set.take(self.num_batches):
                    if isinstance(element, (tuple, list)):
                        element = element[0]
                    yield np.asarray(element)

            samples = cache_lib.collect(
                batches(), self.cache_limit_bytes, self.cache_folder
            )
            if samples is None:
                raise ValueError("AdaroundParameters.data_set is empty.")
            return _finite(samples)
        data = np.asarray(self.data_set)[: self.num_batches * self.batch_size]
        if not len(data):
            raise ValueError(
                f"AdaroundParameters.data_set holds no samples (an array of "
                f"shape {np.shape(self.data_set)}, num_batches="
                f"{self.num_batches}); pass calibration samples."
            )
        return _finite(data)

    def cache(self, count: int, row_shape: tuple) -> cache_lib.SampleCache:
        """An empty float32 cache of ``count`` rows, within the limit."""
        return cache_lib.SampleCache(
            count,
            row_shape,
            "float32",
            self.cache_limit_bytes,
            self.cache_folder,
        )


def _finite(samples):
    """``samples``, refused when any holds NaN or inf: AdaRound would
    otherwise optimise on NaN losses and round blindly, silently."""
    if samples.dtype.kind != "f":
        return samples
    # A chunk at a time: a memory-mapped set is never read whole.
    bad = []
    for start in range(0, len(samples), 256):
        chunk = np.asarray(samples[start : start + 256])
        rows = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        bad.extend(start + np.flatnonzero(rows))
    if bad:
        raise ValueError(
            f"AdaroundParameters.data_set holds NaN or inf in {len(bad)} "
            f"of its {len(samples)} samples (first: sample {bad[0]}). Drop "
            "or fix them (np.isfinite finds them); nothing was rounded or "
            "written."
        )
    return samples


def _broadcast(values, kernel_shape, axis):
    """Per-channel ``values`` shaped to broadcast against the kernel."""
    values = np.asarray(values, np.float32)
    if axis is None or values.size == 1:
        return values.reshape(())
    rank = len(kernel_shape)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = sorted(a % rank for a in axes)
    shape = [1] * rank
    for a in axes:
        shape[a] = kernel_shape[a]
    return values.reshape(shape)


def _rectified_sigmoid(alpha):
    return tf.clip_by_value(tf.sigmoid(alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _beta_at(iteration, iterations, warm_start, beta_range):
    start, end = beta_range
    warm = warm_start * iterations
    progress = (iteration - warm) / max(iterations - warm, 1)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def call_counts(sites):
    """``{operation name: calls}``; a shared layer, called more than once,
    has one kernel for several inputs and is left to nearest rounding."""
    calls = {}
    for site in sites:
        calls[site.operation.name] = calls.get(site.operation.name, 0) + 1
    return calls


def annealing_schedule(params):
    """``(beta, regularisation weight)`` for each of AdaRound's iterations.

    No regularisation during the warm start, then ``beta`` cosine-annealed
    from ``beta_range[0]`` to ``beta_range[1]`` (Nagel et al. 2020).
    """
    iterations = params.default_num_iterations
    for iteration in range(iterations):
        warm = iteration < params.default_warm_start * iterations
        beta = _beta_at(
            iteration,
            iterations,
            params.default_warm_start,
            params.default_beta_range,
        )
        yield beta, 0.0 if warm else params.default_reg_param


class SoftRounding:
    """One kernel's AdaRound variables on its fixed weight grid.

    Args:
        kernel: the FP32 weight (numpy).
        encoding: its grid (:class:`~aimet_keras.quant.Encoding`).
        axis: the grid's channel axis, None per tensor.
        name: for the ``alpha`` variable.
    """

    def __init__(self, kernel, encoding, axis, name):
        kernel = np.asarray(kernel, np.float32)
        shape = kernel.shape
        self.delta = _broadcast(encoding.delta, shape, axis)
        self.offset = _broadcast(encoding.offset, shape, axis)
        self.steps = float(encoding_lib.num_steps(encoding.bitwidth))
        scaled = kernel / self.delta
        self.floor = np.floor(scaled)
        fraction = np.clip(scaled - self.floor, 0.0, 1.0)
        self.rounds_up = (fraction >= 0.5).astype(np.float32)
        # h(alpha) starts at the weight's fractional part.
        self.alpha = tf.Variable(
            -np.log((ZETA - GAMMA) / (fraction - GAMMA) - 1.0).astype(
                np.float32
            ),
            name=f"{name}_alpha",
        )

    def weights(self, rounding):
        """The weight with ``rounding`` (0 down, 1 up, or in between)."""
        level = tf.clip_by_value(
            self.floor + rounding - self.offset, 0.0, self.steps
        )
        return self.delta * (level + self.offset)

    def soft(self):
        return self.weights(_rectified_sigmoid(self.alpha))

    def nearest(self):
        return self.weights(self.rounds_up)

    def hard(self):
        return self.weights(tf.cast(self.alpha > 0, tf.float32))

    def regularizer(self, beta):
        h = _rectified_sigmoid(self.alpha)
        return tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))


def reconstruction_error(output, target):
    """AdaRound's loss: squared error summed over channels, then averaged."""
    return tf.reduce_mean(tf.reduce_sum(tf.square(output - target), axis=-1))


class _LayerRounding:
    """One layer's AdaRound problem: its rounding and compiled step."""

    def __init__(self, layer, follower, encoding, axis, params):
        self.layer, self.follower, self.params = layer, follower, params
        self.rounding = SoftRounding(
            layer.kernel.numpy(), encoding, axis, layer.name
        )
        self.optimizer = keras.optimizers.Adam(params.learning_rate)
        self.step = tf.function(self._step, reduce_retracing=True)

    def output(self, x, kernel):
        with keras.StatelessScope(state_mapping=[(self.layer.kernel, kernel)]):
            y = self.layer(x, training=False)
        return self.follower(y) if self.follower is not None else y

    def reconstruction_error(self, x, target, kernel):
        return reconstruction_error(self.output(x, kernel), target)

    def _step(self, x, target, beta, reg_weight):
        alpha = self.rounding.alpha
        with tf.GradientTape() as tape:
            rec = self.reconstruction_error(x, target, self.rounding.soft())
            loss = rec + reg_weight * self.rounding.regularizer(beta)
        self.optimizer.apply([tape.gradient(loss, alpha)], [alpha])
        return rec

    def optimize(self, inputs, targets, rng):
        """Learns the rounding on random batches of two SampleCaches."""
        n, size = len(inputs), min(self.params.batch_size, len(inputs))
        for beta, reg_weight in annealing_schedule(self.params):
            index = rng.choice(n, size=size, replace=False)
            self.step(
                tf.constant(inputs.rows(index)),
                tf.constant(targets.rows(index)),
                tf.constant(beta, tf.float32),
                tf.constant(reg_weight, tf.float32),
            )

    def mean_error(self, inputs, targets, kernel, batch_size=32):
        """The reconstruction error over every cached sample, computed a
        batch at a time (a batch's mean, weighted by its size)."""
        total = 0.0
        for start, x in inputs.batches(batch_size):
            y = targets.rows(slice(start, start + len(x)))
            error = self.reconstruction_error(x, y, kernel)
            total += float(error) * len(x)
        return total / len(inputs)


def _outputs(model, samples, params, batch_size=32):
    """``model``'s outputs on ``samples``, in a SampleCache filled a batch
    at a time (``predict`` would hold them all, twice, in memory). Batches
    of 32, as ``predict``'s: a batch's tensors are what is held beside the
    caches (0.4 GB a tensor for 64 channels at 224x224)."""
    cache = None
    for start in range(0, len(samples), batch_size):
        batch = np.asarray(samples[start : start + batch_size])
        out = np.asarray(model.predict_on_batch(batch), np.float32)
        if cache is None:
            cache = params.cache(len(samples), out.shape[1:])
        cache.write(start, out)
    return cache


class Adaround:
    """AIMET's AdaRound entry point: ``Adaround.apply_adaround``."""

    @staticmethod
    def apply_adaround(
        model: keras.Model,
        params: AdaroundParameters,
        path: str | os.PathLike,
        filename_prefix: str,
        default_param_bw: int = 4,
        default_quant_scheme: str = "tf_enhanced",
        config_file: str | os.PathLike | None = None,
        verbose: bool = True,
        param_bw_override_list: Sequence[tuple[object, int]] = (),
    ) -> keras.Model:
        """AdaRounds every Conv/Depthwise/ConvTranspose/Dense kernel.

        Args:
            model: a built ``keras.Model`` (fold batch norms first for the
                weights a deployment uses; AIMET's flow is BN fold, CLE,
                AdaRound).
            params: :class:`AdaroundParameters`.
            path: folder for the encodings file (created if missing).
            filename_prefix: the file is ``<prefix>.encodings``.
            default_param_bw: weight bits, 2 to 8 (and up). Defaults to 4.
            default_quant_scheme: grid scheme, ``"tf"`` or
                ``"tf_enhanced"`` (or ``"mse"``, ``"percentile"``).
                Defaults to ``"tf_enhanced"``.
            config_file: the quantsim config (per-channel or not, which
                weights). Defaults to AIMET's default.
            verbose: print one progress line per layer. Defaults to True.
            param_bw_override_list: ``[(layer or layer name, bits)]``:
                layers whose weights take other bits than
                ``default_param_bw`` (AIMET's argument of that name), for
                example the weight bits mixed precision chose.

        Returns:
            A new functional model whose kernels are the AdaRounded
            (hard-rounded) weights; the caller's model is unchanged. Build
            the sim with the same ``default_param_bw`` (and overrides, see
            :func:`~aimet_keras.ptq.set_precision`) and call
            ``set_and_freeze_param_encodings`` with the written file.

        Example:

        >>> import tempfile
        >>> model = zoo.load_model("resnet", compile=False)
        >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
        >>> params = AdaroundParameters(images[:64], num_batches=2,
        ...                             default_num_iterations=20)
        >>> rounded = Adaround.apply_adaround(
        ...     model, params, tempfile.mkdtemp(), "resnet", verbose=False)
        >>> rounded.count_params() == model.count_params()
        True
        """
        from aimet_keras.sim import QuantizationSimModel

        samples = params.samples()
        # Shape and dtype checked as calibration data is, before any work.
        inputs_lib.CalibrationData(model, np.asarray(samples[:1]))
        reference = prepare_lib.prepare_model(model)
        working = prepare_lib.prepare_model(model)
        sim = QuantizationSimModel(
            working,
            quant_scheme=default_quant_scheme,
            default_param_bw=default_param_bw,
            config_file=config_file,
        )
        for layer, bits in param_bw_override_list:
            name = layer if isinstance(layer, str) else layer.name
            mixed_lib.set_precision(sim, name, param=bits)
        sim._compute_param_encodings()
        connections = connections_lib.layer_connections(working)
        sites = {s.operation.name: s for s in prepare_lib.walk(working)}
        reference_sites = {
            s.operation.name: s for s in prepare_lib.walk(reference)
        }
        calls = call_counts(prepare_lib.walk(working))
        targets = [
            w
            for w in sim.quant_wrappers()
            if op_types.keras_class_name(w.layer, _ROUNDABLE)
            and "kernel" in w.param_quantizers
            and w.param_quantizers["kernel"].enabled
            and calls[w.name] == 1
        ]
        rng = np.random.default_rng(params.seed)
        encodings = {}
        for index, wrapper in enumerate(targets, 1):
            started = time.perf_counter()
            name = wrapper.name
            layer = working.get_layer(name)
            follower_name = connections.sole_consumer(name)
            follower = None
            if follower_name is not None and op_types.keras_class_name(
                sites[follower_name].operation, _ACTIVATIONS
            ):
                follower = sites[follower_name].operation
            target_site = reference_sites[follower_name if follower else name]
            quantizer = wrapper.param_quantizers["kernel"]
            rounding = _LayerRounding(
                layer, follower, quantizer.encoding, quantizer.axis, params
            )
            soft = rounding.rounding
            with (
                _outputs(
                    keras.Model(working.inputs, sites[name].inputs[0]),
                    samples,
                    params,
                ) as inputs,
                _outputs(
                    keras.Model(reference.inputs, target_site.outputs[0]),
                    samples,
                    params,
                ) as targets_out,
            ):
                before = rounding.mean_error(
                    inputs, targets_out, soft.nearest()
                )
                rounding.optimize(inputs, targets_out, rng)
                hard = soft.hard().numpy()
                after = rounding.mean_error(inputs, targets_out, hard)
            layer.kernel.assign(hard)
            # The layer's sub-models, traced steps and optimizer refer to
            # each other: freed now, not when Python's collector next runs
            # (ResNet50 at 64x64, 32 samples: a 2.9 GB peak without, 2.6
            # with).
            del rounding
            gc.collect()
            encodings[f"{name}/kernel:0"] = quantizer.encoding
            message = (
                f"AdaRound [{index}/{len(targets)}] {name}: output MSE "
                f"{before:.3g} (nearest) -> {after:.3g} "
                f"({time.perf_counter() - started:.1f} s)"
            )
            _LOG.info(message)
            if verbose:
                print(message)
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        flat = encodings_lib.encodings_to_dict(encodings, {})["param_encodings"]
        encodings_lib.write_encodings(
            path / f"{filename_prefix}.encodings", flat
        )
        return working
