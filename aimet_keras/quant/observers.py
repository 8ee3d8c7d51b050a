"""Calibration observers: they watch tensors and propose an encoding.

An observer only gathers statistics (``update``) and turns them into an
:class:`~aimet_keras.quant.Encoding` (``compute_encoding``); applying the
grid is :func:`~aimet_keras.quant.quantize_dequantize`'s job. Statistics
live in non-trainable variables, so observers run inside ``tf.function``,
stream over any number of batches and save with the model. All of them work
per tensor (``axis=None``) or per channel (``axis=-1``, or a tuple such as
``(-2, -1)`` for a DepthwiseConv2D kernel), vectorised over channels.

| scheme (AIMET's)  | class              | range chosen                      |
|-------------------|--------------------|-----------------------------------|
| ``tf``            | MinMaxObserver     | running min and max               |
| ``tf_enhanced``   | SqnrObserver       | search, clipping error weighted 3x |
| ``percentile``    | PercentileObserver | histogram percentiles             |
| ``mse``           | MseObserver        | search, least expected MSE        |

The histogram observers keep 512 bins per channel. Unlike AIMET, whose
histogram range is fixed by the first batch (later values outside it are
dropped), the range here grows to cover every value seen: it widens by whole
multiples of the bin width, so the re-binned counts stay exact.

Under a ``tf.distribute`` strategy each replica gathers every replica's
shard of the batch and adds the whole of it, so the statistics (and the
encodings) are those one device computes from the same batches.
"""

from __future__ import annotations

import typing

import keras
import numpy as np
import tensorflow as tf

from aimet_keras.quant import encoding as encoding_lib
from aimet_keras.quant import quantize as quantize_lib

if typing.TYPE_CHECKING:
    from aimet_keras.quant.encoding import Encoding

__all__ = [
    "MinMaxObserver",
    "MseObserver",
    "Observer",
    "PercentileObserver",
    "SqnrObserver",
    "deserialize",
    "get",
    "serialize",
]

NUM_BINS = 512
# Cost weight of clipped mass in the SQNR search (AIMET's GAMMA).
SQNR_CLIPPING_WEIGHT = 3.0
# Channels searched at once, bounding the (channels, candidates, bins) cost
# tensor to about 8M float64 values.
_SEARCH_ELEMENTS = 8_000_000


def _flatten_channels(x, axis):
    """Reshapes ``x`` to (values, channels), or to (values,) per tensor.

    Per tensor stays 1-d: reductions over an (N, 1) matrix are several times
    slower than over a flat vector.
    """
    if axis is None:
        return tf.reshape(x, [-1])
    rank = x.shape.rank
    axes = quantize_lib.channel_axes(axis, rank)
    others = [a for a in range(rank) if a not in axes]
    num_channels = int(np.prod([x.shape[a] for a in axes]))
    return tf.reshape(tf.transpose(x, others + list(axes)), [-1, num_channels])


class Observer(keras.layers.Layer):
    """Base class: streams batches into statistics, proposes an encoding.

    Subclasses define ``_create_statistics``, ``_statistics()`` (the
    statistic variables, in the order their ``_step`` takes them), ``_step``
    (a module-level function
    ``step(num_channels, values, num_updates, *statistics)``
    that adds a batch of values shaped (N, channels) or (N,), float32, to
    the statistics unless it holds NaN or inf, and returns whether it was
    finite) and ``_propose_range(...)``. One traced ``_step`` serves every
    observer of a kind, so a model with many observers traces it once.

    Args:
        axis: None for per-tensor statistics, else the channel axis (an int
            or a tuple flattened in order). Defaults to None.
        save_statistics: save the statistics with the model (a reloaded
            observer goes on from them); False saves none, and a reloaded
            observer starts empty. Defaults to True.
        name: the layer name. Defaults to a unique name.

    Example:

    >>> obs = MinMaxObserver()
    >>> obs.update(np.array([-1.0, 3.0], np.float32))
    >>> enc = obs.compute_encoding(8)  # zero nudged onto the grid
    >>> round(float(enc.min), 4), round(float(enc.max), 4)
    (-1.0039, 2.9961)
    """

    def __init__(
        self,
        axis: int | tuple[int, ...] | None = None,
        save_statistics: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, list):
            axis = tuple(axis)
        self.axis = axis
        self.save_statistics = bool(save_statistics)
        self.num_channels = None
        self.channel_shape = None

    def _channel_shape_of(self, shape):
        """Sizes of the channel axes of ``shape``; () per tensor."""
        if self.axis is None:
            return ()
        axes = quantize_lib.channel_axes(self.axis, shape.rank)
        return tuple(shape[a] for a in axes)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = tf.TensorShape(input_shape)
        self.channel_shape = self._channel_shape_of(shape)
        if any(d is None for d in self.channel_shape):
            raise ValueError(
                f"Observer {self.name}: axis={self.axis!r} of input shape "
                f"{shape} has an unknown size; per-channel statistics need a "
                "static channel size."
            )
        self.num_channels = int(np.prod(self.channel_shape))
        self.num_updates = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            name="num_updates",
        )
        self._create_statistics()
        super().build(input_shape)

    def _channel_weight(self, name, dtype="float64", initializer="zeros"):
        return self.add_weight(
            shape=(self.num_channels,),
            initializer=initializer,
            dtype=dtype,
            trainable=False,
            name=name,
        )

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """Updates the statistics and returns ``inputs`` unchanged."""
        self.update(inputs)
        return inputs

    def compute_output_spec(
        self, inputs: keras.KerasTensor
    ) -> keras.KerasTensor:
        # The output is the input. Without this, Keras traces call() on
        # symbolic inputs (functional model construction) in a stateless
        # scope, where the statistics' updates fail.
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def update(self, x: tf.Tensor) -> None:
        """Adds a batch to the statistics.

        Args:
            x: a float tensor; the same shape on every call, except along
                non-channel axes.

        Raises:
            ValueError: for a non-float tensor, or (eagerly) NaN or inf in
                ``x``. Inside a traced function the check is an assertion.
        """
        x = quantize_lib._check_float_input(x)
        if not self.built:
            self.build(x.shape)
        channel_shape = self._channel_shape_of(x.shape)
        if channel_shape != self.channel_shape:
            raise ValueError(
                f"Observer {self.name} was built for channel axes of size "
                f"{self.channel_shape} but got a tensor of shape "
                f"{tuple(x.shape)} with {channel_shape} along "
                f"axis={self.axis!r}."
            )
        values = _flatten_channels(tf.cast(x, tf.float32), self.axis)
        context = _replica_context()
        if context is not None:
            # Every replica adds the global batch (statistics do not depend
            # on the order of values), so its copy of the statistics equals
            # one device's; replica-context assigns (aggregation "none")
            # write each replica's own copy.
            values = context.all_gather(values, axis=0)
        variables = [v.value for v in (self.num_updates, *self._statistics())]
        if tf.executing_eagerly() and int(self.num_updates.numpy()) == 0:
            # A first batch (a weight is calibrated in one) runs op by op:
            # tracing would cost more than it saves.
            step = self._step
        elif isinstance(variables[0], tf.distribute.DistributedValues):
            # Inlined: a traced step given distributed variables (built in a
            # strategy's scope) as arguments updates those of its first
            # trace, whichever observer calls it.
            step = self._step
        else:
            step = _traced(self._step)
        finite = step(self.num_channels, values, *variables)
        if tf.executing_eagerly():
            if not bool(finite):
                raise ValueError(
                    f"Observer {self.name} was given a tensor of shape "
                    f"{tuple(x.shape)} holding NaN or inf; its statistics "
                    "are unchanged. Find the op that produces them "
                    "(tf.debugging.enable_check_numerics() names it) and fix "
                    "it before calibrating."
                )
        else:
            tf.debugging.Assert(
                finite, [f"Observer {self.name}: NaN or inf in the tensor"]
            )

    def reset(self) -> None:
        """Forgets every batch seen so far."""
        for variable in self.non_trainable_variables:
            variable.assign(tf.zeros_like(variable))

    def _check_seen(self):
        if not self.built or int(self.num_updates.numpy()) == 0:
            raise ValueError(
                f"Observer {self.name} has seen no data; call update() with "
                "calibration batches before compute_encoding()."
            )

    def compute_encoding(
        self,
        bitwidth: int,
        is_symmetric: bool = False,
        strict_symmetric: bool = False,
        unsigned_symmetric: bool = False,
    ) -> Encoding:
        """Proposes an encoding from the statistics gathered so far.

        Args:
            bitwidth: bits of the integer grid, 2 to 32.
            is_symmetric: signed symmetric grid. Defaults to False.
            strict_symmetric: drop one level of a symmetric grid. Defaults
                to False.
            unsigned_symmetric: a symmetric grid over non-negative data
                becomes unsigned. Defaults to False.

        Returns:
            An :class:`~aimet_keras.quant.Encoding`, per channel when the
            observer has an ``axis``.

        Raises:
            ValueError: if no data was seen.
        """
        lo, hi = self.propose_range(
            bitwidth, is_symmetric, strict_symmetric, unsigned_symmetric
        )
        return encoding_lib.compute_encoding(
            lo, hi, bitwidth, is_symmetric, strict_symmetric, unsigned_symmetric
        )

    def propose_range(
        self,
        bitwidth: int,
        is_symmetric: bool = False,
        strict_symmetric: bool = False,
        unsigned_symmetric: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``(min, max)`` the scheme picks for such a grid, before
        AIMET's grid rules nudge it (what 8-bit float formats scale by).

        Arguments as :meth:`compute_encoding`; per channel arrays when the
        observer has an ``axis``, else scalars.

        Example:

        >>> observer = get("tf")
        >>> observer.update(tf.constant([-0.5, 1.3]))
        >>> [round(float(v), 2) for v in observer.propose_range(8)]
        [-0.5, 1.3]
        """
        encoding_lib._check_bitwidth(bitwidth)
        self._check_seen()
        lo, hi = self._propose_range(
            bitwidth, is_symmetric, strict_symmetric, unsigned_symmetric
        )
        if self.axis is None:
            lo, hi = lo[0], hi[0]
        return lo, hi

    def save_own_variables(self, store: dict) -> None:
        if self.save_statistics:
            super().save_own_variables(store)

    def load_own_variables(self, store: dict) -> None:
        # A file saved without statistics (or an older file saved with
        # them, by a quantizer that now saves none) leaves them empty.
        if self.save_statistics:
            super().load_own_variables(store)

    def get_config(self) -> dict:
        config = super().get_config()
        config["axis"] = self.axis
        config["save_statistics"] = self.save_statistics
        return config


def _replica_context():
    """The replica context when several replicas run in sync, else None.

    Under ``tf.distribute`` each replica sees only its shard of a batch.
    Without a strategy this is one Python check and adds no op.

    Example:

    >>> _replica_context() is None
    True
    """
    if not tf.distribute.has_strategy():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None  # cross-replica context, or a single replica
    return context


def _batch_stats(values):
    """Per-channel min and max of a batch, and whether all were finite.

    TensorFlow's min/max kernels propagate NaN, so finite bounds mean a
    finite batch without a separate pass over the data. (XLA's do not:
    under an enclosing ``jit_compile=True`` only inf is caught.)
    """
    batch_min = tf.reshape(tf.reduce_min(values, 0), [-1])
    batch_max = tf.reshape(tf.reduce_max(values, 0), [-1])
    finite = tf.reduce_all(
        tf.logical_and(
            tf.math.is_finite(batch_min), tf.math.is_finite(batch_max)
        )
    )
    return batch_min, batch_max, finite


@keras.saving.register_keras_serializable(package="aimet_keras")
class MinMaxObserver(Observer):
    """AIMET's ``tf`` scheme: the running minimum and maximum.

    Args:
        axis: None per tensor, else the channel axis. Defaults to None.

    Example:

    >>> obs = MinMaxObserver(axis=-1)
    >>> obs.update(np.array([[0.0, -2.0], [1.0, 4.0]], np.float32))
    >>> obs.observed_range()
    (array([ 0., -2.]), array([1., 4.]))
    """

    scheme = "tf"

    def _create_statistics(self):
        self.min = self._channel_weight("min")
        self.max = self._channel_weight("max")

    def _statistics(self):
        return [self.min, self.max]

    _step = staticmethod(lambda *args: _min_max_update(*args))

    def observed_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The (min, max) seen so far, one value per channel."""
        self._check_seen()
        return self.min.numpy(), self.max.numpy()

    def _propose_range(self, bitwidth, is_symmetric, strict, unsigned):
        return self.observed_range()


class _HistogramObserver(MinMaxObserver):
    """512 bins per channel over a range that grows to fit all data."""

    def _create_statistics(self):
        super()._create_statistics()
        self.histogram = self.add_weight(
            shape=(self.num_channels, NUM_BINS),
            initializer="zeros",
            dtype="float64",
            trainable=False,
            name="histogram",
        )
        self.histogram_min = self._channel_weight("histogram_min")
        self.bin_width = self._channel_weight("bin_width")
        # Exact zeros quantize without error on every grid, so they are
        # counted apart from the histogram (ReLU outputs are often mostly 0).
        self.zero_count = self._channel_weight("zero_count")

    def _statistics(self):
        return [
            self.min,
            self.max,
            self.histogram_min,
            self.bin_width,
            self.histogram,
            self.zero_count,
        ]

    _step = staticmethod(lambda *args: _histogram_update(*args))

    def histogram_numpy(self, include_zeros=True):
        """Returns ``(bin_edges, counts)``: (C, 513) and (C, 512) arrays.

        Args:
            include_zeros: add the exact zeros back into the bin holding
                0.0. Defaults to True.
        """
        self._check_seen()
        lo, width = self.histogram_min.numpy(), self.bin_width.numpy()
        edges = lo[:, None] + width[:, None] * np.arange(NUM_BINS + 1)[None, :]
        counts = self.histogram.numpy()
        if include_zeros:
            zero_bin = np.clip(np.floor(-lo / width), 0, NUM_BINS - 1)
            counts[np.arange(self.num_channels), zero_bin.astype(int)] += (
                self.zero_count.numpy()
            )
        return edges, counts


_TRACED = {}


def _traced(step):
    """The traced (``tf.function``) version of an observer step function.

    One per step function, shared by every observer of its kind (variables
    are arguments), and kept as a call in the caller's graph instead of
    being inlined: graph optimisation, which runs on every trace of the
    caller, then sees one node per observer instead of dozens.
    """
    if step not in _TRACED:
        _TRACED[step] = tf.function(
            step,
            reduce_retracing=True,
            autograph=False,
            experimental_attributes={"_noinline": True},
        )
    return _TRACED[step]


def _min_max_update(num_channels, values, num_updates, vmin, vmax):
    """MinMaxObserver's step: see :class:`Observer`."""
    batch_min, batch_max, finite = _batch_stats(values)
    if tf.executing_eagerly() and not bool(finite):
        return finite  # op by op, a bad batch is simply skipped
    first = tf.equal(num_updates, 0)
    new_min, new_max = _min_max_step(
        first,
        finite,
        batch_min,
        batch_max,
        vmin.read_value(),
        vmax.read_value(),
    )
    vmin.assign(new_min)
    vmax.assign(new_max)
    num_updates.assign_add(tf.cast(finite, num_updates.dtype))
    return finite


def _histogram_update(
    num_channels,
    values,
    num_updates,
    vmin,
    vmax,
    histogram_min,
    bin_width,
    histogram,
    zeros,
):
    """The histogram observers' step: see :class:`Observer`.

    Branch-free: the new statistics are computed either way and kept only
    for a finite batch. Inside a graph the small per-channel steps run as
    XLA kernels compiled once per channel count, and the binning of the
    batch as one per shape; eagerly everything runs op by op.
    """
    batch_min, batch_max, finite = _batch_stats(values)
    eager = tf.executing_eagerly()
    if eager and not bool(finite):
        return finite  # op by op, a bad batch is simply skipped
    first = tf.equal(num_updates, 0)
    range_step = _range_step if eager else _range_step_fused
    count_step = _count_step if eager else _count_step_fused
    old_histogram = histogram.read_value()
    new_min, new_max, lo, width, moved, lo32, inverse_width32 = range_step(
        num_channels,
        first,
        finite,
        batch_min,
        batch_max,
        vmin.read_value(),
        vmax.read_value(),
        histogram_min.read_value(),
        bin_width.read_value(),
        old_histogram,
    )
    bins = _bin_indices(values, lo32, inverse_width32)
    # The Bincount kernel with int32 counts is the fastest TF histogram on
    # CPU (about 15% faster than tf.math.bincount's DenseBincount).
    counts = tf.raw_ops.Bincount(
        arr=bins,
        size=num_channels * (NUM_BINS + 1),
        weights=tf.constant([], tf.int32),
    )
    new_histogram, new_zeros = count_step(
        num_channels, finite, counts, moved, old_histogram, zeros.read_value()
    )
    for variable, value in (
        (vmin, new_min),
        (vmax, new_max),
        (histogram_min, lo),
        (bin_width, width),
        (histogram, new_histogram),
        (zeros, new_zeros),
    ):
        variable.assign(value)
    num_updates.assign_add(tf.cast(finite, num_updates.dtype))
    return finite


def _min_max_step(first, finite, batch_min, batch_max, old_min, old_max):
    """The running min and max after a batch (kept only if finite)."""
    batch_min = tf.cast(batch_min, tf.float64)
    batch_max = tf.cast(batch_max, tf.float64)
    new_min = tf.where(first, batch_min, tf.minimum(old_min, batch_min))
    new_max = tf.where(first, batch_max, tf.maximum(old_max, batch_max))
    return (
        tf.where(finite, new_min, old_min),
        tf.where(finite, new_max, old_max),
    )


def _start_range(batch_min, batch_max):
    """Bins over the first batch's range, extended to contain zero."""
    lo = tf.minimum(batch_min, 0.0)
    hi = tf.maximum(tf.maximum(batch_max, 0.0), lo + encoding_lib.MIN_RANGE)
    return lo, (hi - lo) / NUM_BINS


def _grow_range(num_channels, batch_min, batch_max, lo, width, histogram):
    """Widens the bins by whole multiples so old counts move exactly.

    The new range starts ``below`` old bin widths lower and its bins are
    ``factor`` old bins wide, so old bin ``i`` falls wholly into new bin
    ``floor((i + below) / factor)``. Channels that need no growth get
    ``below = 0``, ``factor = 1``: the identity.
    """
    below = tf.where(
        batch_min < lo, tf.math.ceil((lo - batch_min) / width), 0.0
    )
    new_lo = lo - below * width
    factor = tf.maximum(
        tf.math.ceil((batch_max - new_lo) / (NUM_BINS * width)),
        tf.math.ceil((NUM_BINS + below) / NUM_BINS),
    )
    factor = tf.maximum(factor, 1.0)
    old_bins = tf.range(NUM_BINS, dtype=tf.float64)[tf.newaxis, :]
    new_bins = tf.clip_by_value(
        tf.floor((old_bins + below[:, tf.newaxis]) / factor[:, tf.newaxis]),
        0.0,
        NUM_BINS - 1.0,
    )
    channel_base = tf.range(num_channels, dtype=tf.float64)[:, None]
    segment = tf.cast(channel_base * NUM_BINS + new_bins, tf.int32)
    moved = tf.math.unsorted_segment_sum(
        tf.reshape(histogram, [-1]),
        tf.reshape(segment, [-1]),
        num_channels * NUM_BINS,
    )
    moved = tf.reshape(moved, [num_channels, NUM_BINS])
    return new_lo, width * factor, moved


def _range_step(
    num_channels,
    first,
    finite,
    batch_min,
    batch_max,
    old_min,
    old_max,
    histogram_min,
    bin_width,
    histogram,
):
    """A histogram observer's range after a batch, before its counts.

    Returns the new min and max, the histogram's new lower edge and bin
    width (all kept only for a finite batch), the old counts moved onto the
    new bins (zeros for the first batch), and the edge and inverse width in
    float32 for binning the batch.
    """
    new_min, new_max = _min_max_step(
        first, finite, batch_min, batch_max, old_min, old_max
    )
    batch_min = tf.cast(batch_min, tf.float64)
    batch_max = tf.cast(batch_max, tf.float64)
    start_lo, start_width = _start_range(batch_min, batch_max)
    # Before the first batch the grown range is unused; a unit width keeps
    # it finite.
    grown_lo, grown_width, moved = _grow_range(
        num_channels,
        batch_min,
        batch_max,
        histogram_min,
        tf.where(first, tf.ones_like(bin_width), bin_width),
        histogram,
    )
    lo = tf.where(first, start_lo, grown_lo)
    width = tf.where(first, start_width, grown_width)
    moved = tf.where(first, tf.zeros_like(moved), moved)
    return (
        new_min,
        new_max,
        tf.where(finite, lo, histogram_min),
        tf.where(finite, width, bin_width),
        moved,
        tf.cast(lo, tf.float32),
        tf.cast(1.0 / width, tf.float32),
    )


def _count_step(num_channels, finite, counts, moved, histogram, zero_count):
    """Adds a batch's bincount (``NUM_BINS + 1`` slots per channel)."""
    counts = tf.reshape(
        tf.cast(counts, tf.float64), [num_channels, NUM_BINS + 1]
    )
    return (
        tf.where(finite, moved + counts[:, :NUM_BINS], histogram),
        tf.where(finite, zero_count + counts[:, NUM_BINS], zero_count),
    )


_range_step_fused = tf.function(_range_step, jit_compile=True, autograph=False)
_count_step_fused = tf.function(_count_step, jit_compile=True, autograph=False)


def _bin_indices(values, lo, inverse_width):
    """Flat bincount slots: ``NUM_BINS + 1`` per channel, the last for 0.0.

    Inside a graph the element-wise work runs as one XLA-fused kernel
    (compiled once per shape); eagerly, op by op.
    """
    if tf.executing_eagerly():
        return _bin_indices_ops(values, lo, inverse_width)
    return _bin_indices_fused(values, lo, inverse_width)


def _bin_indices_ops(values, lo, inverse_width):
    bins = tf.clip_by_value((values - lo) * inverse_width, 0.0, NUM_BINS - 1.0)
    bins = tf.where(tf.equal(values, 0.0), NUM_BINS, tf.cast(bins, tf.int32))
    if values.shape.rank == 2:
        channels = tf.range(tf.shape(values)[1], dtype=tf.int32)
        bins = tf.reshape(bins + channels * (NUM_BINS + 1), [-1])
    return bins


_bin_indices_fused = tf.function(
    _bin_indices_ops, jit_compile=True, autograph=False
)


def _sawtooth_integral(x, delta):
    """Integral from 0 to x of (t - delta * round(t / delta))**2 dt."""
    periods = x / delta + 0.5
    whole = tf.floor(periods)
    frac = periods - whole
    return delta**3 * (whole / 12.0 + ((frac - 0.5) ** 3 + 0.125) / 3.0)


def _expected_errors(
    edges_lo, edges_hi, delta, grid_min, grid_max, clip_weight
):
    """Expected squared error per unit mass for values uniform in each bin.

    Rounding error inside ``[grid_min, grid_max]``; ``clip_weight`` times the
    clipping error outside. Shapes broadcast: bins (C, 1, B), grids (C, K, 1).
    """
    width = edges_hi - edges_lo
    # Part of each bin below, inside and above the grid.
    below_hi = tf.minimum(edges_hi, grid_min)
    inside_lo = tf.minimum(tf.maximum(edges_lo, grid_min), grid_max)
    inside_hi = tf.minimum(tf.maximum(edges_hi, grid_min), grid_max)
    above_lo = tf.maximum(edges_lo, grid_max)
    clipped_below = tf.where(
        edges_lo < grid_min,
        ((below_hi - grid_min) ** 3 - (edges_lo - grid_min) ** 3) / 3.0,
        0.0,
    )
    clipped_above = tf.where(
        edges_hi > grid_max,
        ((edges_hi - grid_max) ** 3 - (above_lo - grid_max) ** 3) / 3.0,
        0.0,
    )
    rounding = _sawtooth_integral(inside_hi, delta) - _sawtooth_integral(
        inside_lo, delta
    )
    return (clip_weight * (clipped_below + clipped_above) + rounding) / width


# One fused XLA kernel: op by op, each of the cost's ~40 element-wise steps
# wrote a (C, K, B) float64 temporary, and a per-channel weight took a second
# (16x slower). Callers pad the channel count to a power of two so that a
# handful of shapes are compiled per process; one trace with relaxed shapes
# serves them all (XLA compiles per shape underneath).
@tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
def _best_candidate(
    edges,
    counts,
    cand_lo,
    cand_hi,
    clip_weight,
    bitwidth,
    is_symmetric,
    strict,
    unsigned,
):
    """Index of the least-cost candidate range per channel.

    Args: bin edges (C, B+1), counts (C, B), candidate ranges (C, K), the
    clipping weight and the grid settings.
    """
    delta, _, grid_min, grid_max = encoding_lib.grid_from_range(
        cand_lo, cand_hi, bitwidth, is_symmetric, strict, unsigned
    )
    errors = _expected_errors(
        edges[:, None, :-1],
        edges[:, None, 1:],
        delta[..., None],
        grid_min[..., None],
        grid_max[..., None],
        clip_weight,
    )
    cost = tf.reduce_sum(errors * counts[:, None, :], axis=-1)
    return tf.argmin(cost, axis=-1)


def _pad_rows(array, rows):
    """``array`` with its last row repeated up to ``rows`` rows."""
    missing = rows - len(array)
    return np.concatenate([array, np.repeat(array[-1:], missing, 0)])


class _SearchObserver(_HistogramObserver):
    """Picks the candidate range with the least histogram-weighted error."""

    clip_weight = 1.0
    num_fractions = 20

    def _candidates(self, lo, hi, is_symmetric, unsigned):
        """Candidate (min, max) per channel: arrays shaped (C, K)."""
        fractions = np.arange(1, self.num_fractions + 1) / self.num_fractions
        if is_symmetric:
            # AIMET tries 101 symmetric ranges up to 1.01x the absolute max.
            fractions = np.arange(1, 102) / 100.0
            absmax = np.maximum(np.abs(lo), np.abs(hi))[:, None]
            cand_hi = absmax * fractions[None, :]
            cand_lo = -cand_hi
            if unsigned:
                nonnegative = (lo >= 0)[:, None]
                cand_hi = np.where(
                    nonnegative, hi[:, None] * fractions, cand_hi
                )
                cand_lo = np.where(nonnegative, 0.0, cand_lo)
            return cand_lo, cand_hi
        grid_lo, grid_hi = np.meshgrid(fractions, fractions, indexing="ij")
        cand_lo = lo[:, None] * grid_lo.reshape(1, -1)
        cand_hi = hi[:, None] * grid_hi.reshape(1, -1)
        return cand_lo, cand_hi

    def _propose_range(self, bitwidth, is_symmetric, strict, unsigned):
        lo, hi = self.observed_range()
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        cand_lo, cand_hi = self._candidates(lo, hi, is_symmetric, unsigned)
        # Exact zeros have no error on any grid: left out of the cost.
        edges, counts = self.histogram_numpy(include_zeros=False)
        best = np.empty(self.num_channels, dtype=int)
        step = max(1, _SEARCH_ELEMENTS // (cand_lo.shape[1] * NUM_BINS))
        for start in range(0, self.num_channels, step):
            chunk = slice(start, start + step)
            count = len(edges[chunk])
            padded = min(step, 1 << (count - 1).bit_length())
            best[chunk] = _best_candidate(
                *(
                    _pad_rows(array[chunk], padded)
                    for array in (edges, counts, cand_lo, cand_hi)
                ),
                self.clip_weight,
                bitwidth,
                is_symmetric,
                strict,
                unsigned,
            ).numpy()[:count]
        rows = np.arange(self.num_channels)
        return cand_lo[rows, best], cand_hi[rows, best]


@keras.saving.register_keras_serializable(package="aimet_keras")
class SqnrObserver(_SearchObserver):
    """AIMET's ``tf_enhanced`` scheme: the range that maximises SQNR.

    A grid search over candidate ranges (20 x 20 fractions of the observed
    min and max; 101 fractions of the absolute max for symmetric grids) on a
    512-bin histogram. Each candidate is turned into its real grid and
    costed by the expected squared rounding error of the histogram's mass
    plus three times (AIMET's gamma) the squared clipping error, values
    taken as uniform within each bin; exact zeros cost nothing. The
    histogram grows to cover values outside the first batch's range instead
    of dropping them.

    Args:
        axis: None per tensor, else the channel axis. Defaults to None.

    Example:

    >>> obs = SqnrObserver()
    >>> obs.update(np.random.default_rng(0).standard_normal(10000).astype("f"))
    >>> enc = obs.compute_encoding(4, is_symmetric=True)
    >>> bool(enc.max < 3.5)  # clips the tails at 4 bits
    True
    """

    scheme = "tf_enhanced"
    clip_weight = SQNR_CLIPPING_WEIGHT


@keras.saving.register_keras_serializable(package="aimet_keras")
class MseObserver(_SearchObserver):
    """The range with the least expected quantization MSE.

    Like :class:`SqnrObserver` with clipping weighted 1x and a finer search
    (32 x 32 fractions of the observed min and max).

    Args:
        axis: None per tensor, else the channel axis. Defaults to None.

    Example:

    >>> obs = MseObserver()
    >>> obs.update(np.linspace(-1, 1, 1000).astype("f"))
    >>> float(obs.compute_encoding(8).max) > 0.95
    True
    """

    scheme = "mse"
    num_fractions = 32


@keras.saving.register_keras_serializable(package="aimet_keras")
class PercentileObserver(_HistogramObserver):
    """AIMET's ``percentile`` scheme: clip the histogram's outer tails.

    The minimum is the left edge of the first bin whose cumulative mass
    reaches ``1 - p/100``; the maximum is the right edge of the first bin
    whose cumulative mass reaches ``p/100``; both stay within the observed
    range, and ``percentile=100`` gives the exact observed min and max.

    Args:
        percentile: ``p``, from 90 to 100 as in AIMET. Defaults to 99.99.
        axis: None per tensor, else the channel axis. Defaults to None.

    Example:

    >>> obs = PercentileObserver(percentile=99.0)
    >>> obs.update(np.arange(1000, dtype="f"))
    >>> 985 < float(obs.compute_encoding(8).max) < 1000
    True
    """

    scheme = "percentile"

    def __init__(
        self,
        percentile: float = 99.99,
        axis: int | tuple[int, ...] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(axis=axis, **kwargs)
        if not 90.0 <= float(percentile) <= 100.0:
            raise ValueError(
                f"percentile={percentile!r} is outside AIMET's allowed range "
                "[90, 100]."
            )
        self.percentile = float(percentile)

    def _propose_range(self, bitwidth, is_symmetric, strict, unsigned):
        observed_lo, observed_hi = self.observed_range()
        if self.percentile == 100.0:
            return observed_lo, observed_hi
        edges, counts = self.histogram_numpy()
        cdf = np.cumsum(counts, axis=1) / counts.sum(axis=1, keepdims=True)
        rows = np.arange(self.num_channels)
        first_lo = np.argmax(cdf >= 1.0 - self.percentile / 100.0, axis=1)
        first_hi = np.argmax(cdf >= self.percentile / 100.0 - 1e-12, axis=1)
        lo = np.maximum(edges[rows, first_lo], observed_lo)
        hi = np.minimum(edges[rows, first_hi + 1], observed_hi)
        return lo, hi

    def get_config(self) -> dict:
        config = super().get_config()
        config["percentile"] = self.percentile
        return config


_OBSERVERS = {
    cls.scheme: cls
    for cls in (MinMaxObserver, SqnrObserver, PercentileObserver, MseObserver)
}
# AIMET's quant_scheme names, including the range-learning ones whose
# initialisation is a calibration scheme.
_ALIASES = {
    "post_training_tf": "tf",
    "post_training_tf_enhanced": "tf_enhanced",
    "post_training_percentile": "percentile",
    "training_range_learning_with_tf_init": "tf",
    "training_range_learning_with_tf_enhanced_init": "tf_enhanced",
    "min_max": "tf",
    "minmax": "tf",
    "sqnr": "tf_enhanced",
}


def get(identifier: Observer | dict | str, **kwargs: object) -> Observer:
    """Returns an observer for a scheme name, a config dict or an observer.

    Args:
        identifier: an :class:`Observer` (returned as is), a scheme name
            (``"tf"``, ``"tf_enhanced"``, ``"percentile"``, ``"mse"`` or an
            AIMET ``quant_scheme`` such as ``"post_training_tf_enhanced"``),
            or a dict from :func:`serialize`.
        **kwargs: constructor arguments (``axis``, ``percentile``) for a
            name.

    Returns:
        An :class:`Observer`.

    Raises:
        ValueError: for an unknown scheme, listing the known ones.

    Example:

    >>> type(get("post_training_tf_enhanced", axis=-1)).__name__
    'SqnrObserver'
    """
    if isinstance(identifier, Observer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        key = identifier.lower()
        key = _ALIASES.get(key, key)
        if key in _OBSERVERS:
            return _OBSERVERS[key](**kwargs)
    raise ValueError(
        f"quant_scheme={identifier!r} is not a known calibration scheme; use "
        f"one of {sorted(_OBSERVERS)} or AIMET's {sorted(_ALIASES)}."
    )


def serialize(observer: Observer) -> dict:
    """Serializes an observer to a Keras config dict."""
    return keras.saving.serialize_keras_object(observer)


def deserialize(config: dict) -> Observer:
    """Rebuilds an observer from :func:`serialize`'s dict."""
    return keras.saving.deserialize_keras_object(config)
