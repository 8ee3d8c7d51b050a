"""TensorQuantizer: one tensor's observer plus its fake-quantization grid.

A quantizer has two switches, as in PyTorch's fake-quantize modules and
AIMET's op modes: ``observing`` (gather statistics, pass values through:
AIMET's ``updateStats``) and ``enabled`` (AIMET's ``passThrough`` when off).
After calibration, :meth:`TensorQuantizer.compute_encoding` turns the
observer's statistics into the grid, kept in the ``encoding_min`` /
``encoding_max`` variables so that a change of encoding needs no retracing
and the grid saves with the model; with ``range_learning=True`` they are
trainable (AIMET's range-learning schemes).

The switches are Python attributes read when a function is traced: after
flipping one, rebuild a compiled model's functions (``QuantizationSimModel``
does this for you).
"""

from __future__ import annotations

import contextlib
import contextvars
import typing

import keras
import numpy as np

from aimet_keras.quant import encoding as encoding_lib
from aimet_keras.quant import observers as observers_lib
from aimet_keras.quant import quantize as quantize_lib

if typing.TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

__all__ = ["TensorQuantizer", "call_override"]

# Exporters trace the sim with TF's own fake-quantization ops in place of
# the quantizers' (see call_override).
_CALL_OVERRIDE = contextvars.ContextVar(
    "aimet_keras_call_override", default=None
)


@contextlib.contextmanager
def call_override(
    function: Callable[[TensorQuantizer, object], object],
) -> Iterator[None]:
    """Routes every quantizer call to ``function(quantizer, inputs)``.

    For exporters: a function traced inside the context computes what
    ``function`` returns in place of each quantizer's output (for example
    ``tf.quantization.fake_quant_with_min_max_vars``, which converters read
    as the tensor's grid). Outside the context quantizers are unchanged.

    Args:
        function: ``(TensorQuantizer, tensor) -> tensor``.

    Example:

    >>> q = TensorQuantizer(enabled=False)
    >>> with call_override(lambda quantizer, x: x * 0):
    ...     q(np.ones(2, "float32")).numpy().tolist()
    [0.0, 0.0]
    """
    token = _CALL_OVERRIDE.set(function)
    try:
        yield
    finally:
        _CALL_OVERRIDE.reset(token)


def override_active() -> bool:
    """Whether a :func:`call_override` is in effect."""
    return _CALL_OVERRIDE.get() is not None


@keras.saving.register_keras_serializable(package="aimet_keras")
class TensorQuantizer(keras.layers.Layer):
    """Observes a tensor, then fake-quantizes it on AIMET's grid.

    Args:
        bitwidth: bits of the grid, 2 to 32 (8, 16 or 32 for
            ``data_type="float"``: fp8, fp16/bf16, float32). Defaults to 8.
        is_symmetric: signed symmetric grid. Defaults to False.
        strict_symmetric: drop one level of a symmetric grid. Defaults to
            False.
        unsigned_symmetric: a symmetric grid over non-negative data is
            unsigned. Defaults to False.
        axis: None per tensor, else the channel axis (an int or a tuple,
            see :func:`~aimet_keras.quant.quantize_dequantize`). Defaults to
            None.
        quant_scheme: the calibration scheme, any name
            :func:`aimet_keras.quant.observers.get` accepts. Defaults to
            ``"tf_enhanced"``.
        data_type: ``"int"`` or ``"float"`` (a float format, see
            :mod:`aimet_keras.quant.float_formats`: 16-bit formats are
            casts, 8-bit ones are scaled by a calibrated maximum). Defaults
            to ``"int"``.
        enabled: quantize (True) or pass values through. Defaults to True.
        range_learning: make ``encoding_min``/``encoding_max`` trainable.
            A ``fixed_range`` grid, which the target fixes, is never
            learned. Defaults to False.
        init_batches: with no encoding set, take the range from the min and
            max of the first ``init_batches`` batches quantized (as tfmot
            does; used by ``quantize_model`` without calibration data).
            Per-tensor quantizers only. Defaults to 0 (off: pass through
            until an encoding is set).
        fixed_range: ``(min, max)``: calibration sets the grid from this
            range, not from the data (AIMET's ``encoding_constraints``, for
            outputs whose grid the target fixes, such as TFLite's softmax
            at 1/256). Defaults to None.
        ties_away_from_zero: round a value exactly between two levels away
            from the zero of the signed integer the target stores (TFLite's
            int8 average pooling), not up a level as AIMET does. Per-tensor
            quantizers only. Defaults to False.
        exponent_bits: a float format's exponent bits: 4 (E4M3) or 5 (E5M2)
            at 8 bits, 5 (fp16) or 8 (bf16) at 16. Defaults to E4M3 and
            fp16; ignored for integer grids.

    Input shape:
        Any float tensor; the channel axes must keep their size.

    Output shape:
        Same as the input.

    Example:

    >>> q = TensorQuantizer(bitwidth=4, is_symmetric=True, quant_scheme="tf")
    >>> x = np.array([-1.0, -0.3, 0.0, 0.5], "float32")
    >>> q.observing = True
    >>> _ = q(x)  # observes, passes x through
    >>> q.compute_encoding()
    >>> q.observing = False
    >>> np.round(q(x).numpy() * 7, 3)  # on the grid of 1/7 steps
    array([-7., -2.,  0.,  4.], dtype=float32)
    """

    def __init__(
        self,
        bitwidth: int = 8,
        is_symmetric: bool = False,
        strict_symmetric: bool = False,
        unsigned_symmetric: bool = False,
        axis: int | None = None,
        quant_scheme: str = "tf_enhanced",
        data_type: str = "int",
        enabled: bool = True,
        range_learning: bool = False,
        init_batches: int = 0,
        fixed_range: tuple[float, float] | None = None,
        ties_away_from_zero: bool = False,
        exponent_bits: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if data_type not in ("int", "float"):
            raise ValueError(
                f"TensorQuantizer {self.name}: data_type={data_type!r}; use "
                "'int' or 'float'."
            )
        if data_type == "float":
            # Validates the format; 32 bits has none.
            exponent_bits = encoding_lib.float_encoding(
                bitwidth, exponent_bits
            ).exponent_bits
        else:
            exponent_bits = None
            encoding_lib._check_bitwidth(bitwidth)
        self.bitwidth = int(bitwidth)
        self.is_symmetric = bool(is_symmetric)
        self.strict_symmetric = bool(strict_symmetric)
        self.unsigned_symmetric = bool(unsigned_symmetric)
        self.axis = tuple(axis) if isinstance(axis, list) else axis
        self.quant_scheme = quant_scheme
        self.data_type = data_type
        self.exponent_bits = exponent_bits
        self.enabled = bool(enabled)
        # The target fixes a fixed_range grid (TFLite's 1/256 for sigmoid
        # and softmax): learning it would move the sim off the target.
        self.range_learning = bool(range_learning) and fixed_range is None
        self.init_batches = int(init_batches)
        self.fixed_range = (
            None
            if fixed_range is None
            else (float(fixed_range[0]), float(fixed_range[1]))
        )
        self.ties_away_from_zero = bool(ties_away_from_zero)
        if (self.init_batches or self.ties_away_from_zero) and (
            self.axis is not None
        ):
            raise ValueError(
                f"TensorQuantizer {self.name}: init_batches and "
                "ties_away_from_zero need a per-tensor quantizer (axis=None); "
                f"got axis={self.axis!r}."
            )
        self.observing = False
        # Set by the sim: what the tensor is, for error messages.
        self.label = None
        self.check_finite = True
        # The statistics (a 512-bin histogram per channel for tf_enhanced)
        # serve calibration only: the saved model holds the grids, not
        # them, and a reloaded sim recalibrates from fresh data.
        self.observer = observers_lib.get(quant_scheme, axis=self.axis)
        self.observer.save_statistics = False
        # Mirrors the has_encoding variable on the Python side: call() reads
        # it while tracing, when variables have no value to read.
        self._initialized = False
        self._tie = None

    def build(self, input_shape: tuple) -> None:
        self.observer.build(input_shape)
        shape = (self.observer.num_channels,) if self.axis is not None else ()
        self.encoding_min = self.add_weight(
            shape=shape,
            initializer="zeros",
            trainable=self.range_learning,
            name="encoding_min",
        )
        self.encoding_max = self.add_weight(
            shape=shape,
            initializer="zeros",
            trainable=self.range_learning,
            name="encoding_max",
        )
        # 1 once an encoding is set; until then the quantizer passes values
        # through, as AIMET does for quantizers that never saw data.
        self.has_encoding = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="has_encoding",
        )
        self.batches_seen = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="batches_seen",
        )

    def compute_output_spec(
        self, inputs: keras.KerasTensor
    ) -> keras.KerasTensor:
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def call(self, inputs: object) -> object:
        override = _CALL_OVERRIDE.get()
        if override is not None:
            return override(self, inputs)
        if not self.enabled:
            return inputs
        if self.data_type == "float" and not self.scaled_float:
            return quantize_lib.quantize_dequantize(
                inputs,
                encoding_lib.float_encoding(self.bitwidth, self.exponent_bits),
            )
        if self.observing:
            self.observer.update(inputs)
            return inputs
        # (a holding tie counts as initialized)
        first_batches = not self.is_initialized
        if first_batches and (not self.init_batches or self.scaled_float):
            return inputs
        if self.check_finite:
            inputs = self._checked_finite(inputs)
        if first_batches:
            lo, hi = self._range_from_first_batches(inputs)
            return quantize_lib.quantize_dequantize_range(
                inputs, lo, hi, *self._grid_settings
            )
        if self.scaled_float:
            return self._fake_float_cast(inputs)
        lo, hi = self._grid_range()
        if self.ties_away_from_zero:
            inputs = self._ties_toward_signed_zero(inputs, lo, hi)
        learned = self._tie.learns if self.tied else self.range_learning
        quantize = (
            quantize_lib.quantize_dequantize_range
            if learned or (self.tied and self._tie.derived)
            # A fixed range: one fused kernel for activations in graphs.
            else quantize_lib.quantize_dequantize_fixed_range
        )
        return quantize(inputs, lo, hi, *self._grid_settings, axis=self.axis)

    def _checked_finite(self, inputs):
        """``inputs``, with an op that stops the step on NaN or inf.

        Quantizing clamps inf (and, in some kernels, NaN) onto the grid,
        so without it a training or evaluation batch holding them could
        give finite, wrong numbers silently. The first quantizer on the
        path reports it (later ones wait on its output). XLA compiles the
        check away.
        """
        import tensorflow as tf

        where = self.label or f"Quantizer {self.name!r}"
        return tf.debugging.check_numerics(
            inputs,
            f"{where} was given NaN or inf (check the data with np.isfinite; "
            "if the data is finite, this layer or one before it made them; "
            "sim.check_finite = False turns this check off)",
        )

    @property
    def scaled_float(self) -> bool:
        """Whether this quantizer casts to an 8-bit float format, whose
        scale calibration sets (see :mod:`aimet_keras.quant.float_formats`)."""
        return self.data_type == "float" and self.bitwidth < 16

    @property
    def type_name(self) -> str:
        """The data type in words: ``"int8"``, ``"fp16"``, ``"fp8_e4m3"``.

        Example:

        >>> TensorQuantizer(16, data_type="float", exponent_bits=8).type_name
        'bf16'
        """
        if self.data_type == "int":
            return f"int{self.bitwidth}"
        if self.bitwidth == 32:
            return "float32"
        return self._float_format.name

    @property
    def _float_format(self):
        from aimet_keras.quant import float_formats

        return float_formats.float_format(self.bitwidth, self.exponent_bits)

    def _fake_float_cast(self, inputs):
        from aimet_keras.quant import float_formats

        fmt = self._float_format
        ops = keras.ops
        scale = ops.stop_gradient(self.encoding_max) / fmt.largest
        if self.axis is not None:
            shape = quantize_lib._broadcast_shape(
                inputs, self.axis, self.observer.num_channels
            )
            scale = ops.reshape(scale, shape)
        return float_formats.float_quantize_dequantize(inputs, fmt, scale)

    def _ties_toward_signed_zero(self, inputs, lo, hi):
        """``inputs``, a thousandth of a step lower where the stored signed
        integer would be negative: a tie there then rounds down a level
        (away from zero), where AIMET's rounding takes it up. Averages of
        integers are at least ``1 / (2 * count)`` of a step from a tie
        unless they are one, so up to 500 values a window are rounded right.
        """
        delta, offset = encoding_lib.grid_from_range(
            lo, hi, *self._grid_settings, bounds=False
        )
        ops = keras.ops
        delta = ops.stop_gradient(ops.cast(delta, inputs.dtype))
        offset = ops.cast(offset, inputs.dtype)
        signed = encoding_lib.signed_level(
            inputs, delta, offset, self.bitwidth, self.is_symmetric
        )
        return inputs - ops.where(signed < 0, 1e-3 * delta, 0.0)

    @property
    def _grid_settings(self):
        """The grid arguments after ``(min, max)``, in the quant functions'
        order."""
        return (
            self.bitwidth,
            self.is_symmetric,
            self.strict_symmetric,
            self.unsigned_symmetric,
        )

    def _grid_range(self):
        """``(min, max)`` tensors of the grid calls compute on."""
        if self.tied:
            return self._tie.range()
        return self.encoding_min, self.encoding_max

    def tie_to(self, source: TensorQuantizer) -> None:
        """Takes ``source``'s grid from now on, in every call.

        For an op whose output the target keeps on its input's grid
        (TFLite's average pooling, ``output_on_input_grid`` in a config):
        under range learning both uses then train one grid, and an export
        never finds them apart. The tie holds while both quantizers are
        enabled integer grids of the same kind and ``source`` has an
        encoding; otherwise this quantizer uses its own grid. Not saved: a
        saved model holds the tied grid in this quantizer's own variables.

        Args:
            source: the :class:`TensorQuantizer` whose grid to take.

        Example:

        >>> source, follower = TensorQuantizer(), TensorQuantizer()
        >>> _ = source(np.zeros(2, "float32")), follower(np.zeros(2, "float32"))
        >>> source.set_encoding(encoding_lib.compute_encoding(-1.0, 1.0, 8))
        >>> follower.tie_to(source)
        >>> follower.tied, round(float(follower.encoding.delta) * 255, 6)
        (True, 2.0)
        """
        self._tie = _SameGrid(self, source)

    def tie_to_product(
        self,
        input_quantizer: TensorQuantizer,
        kernel_quantizer: TensorQuantizer,
    ) -> None:
        """Takes the step ``input step x kernel step`` from now on.

        For a 32-bit bias: integer kernels (TFLite, QNN) add the bias to
        the int32 accumulator as it is, so its step is the product of the
        input's and the kernel's (per channel). The grid is derived in
        every call, so it follows ranges and weights as they train. Holds
        while all three quantizers are enabled, initialized integer grids
        (and this one is per channel where the kernel is); otherwise this
        quantizer uses its own grid.

        Args:
            input_quantizer: the quantizer of the layer's input.
            kernel_quantizer: the quantizer of the layer's kernel.

        Example:

        >>> x, kernel = TensorQuantizer(), TensorQuantizer(is_symmetric=True)
        >>> bias = TensorQuantizer(32, is_symmetric=True)
        >>> for q in (x, kernel, bias):
        ...     _ = q(np.zeros(2, "float32"))
        >>> x.set_encoding(encoding_lib.compute_encoding(0.0, 2.55, 8))
        >>> kernel.set_encoding(
        ...     encoding_lib.compute_encoding(-1.27, 1.27, 8, True))
        >>> bias.tie_to_product(x, kernel)
        >>> round(float(bias.encoding.delta), 8)  # 0.01 x 0.01
        0.0001
        """
        self._tie = _ProductGrid(self, input_quantizer, kernel_quantizer)

    def untie(self) -> None:
        """Uses this quantizer's own grid again (see :meth:`tie_to`)."""
        self._tie = None

    @property
    def tied_to_product(self) -> bool:
        """Whether :meth:`tie_to_product` derives this quantizer's step.

        True from the call on (until :meth:`untie`), even while the tie
        does not hold yet (see :attr:`tied`).

        Example:

        >>> x, kernel = TensorQuantizer(), TensorQuantizer(is_symmetric=True)
        >>> bias = TensorQuantizer(32, is_symmetric=True)
        >>> bias.tie_to_product(x, kernel)
        >>> bias.tied_to_product, bias.tied
        (True, False)
        """
        return self._tie is not None and self._tie.derived

    @property
    def tied(self) -> bool:
        """Whether a tie (:meth:`tie_to`) sets this quantizer's grid now."""
        return self._tie is not None and self._tie.holds()

    def sync_tied_grid(self) -> None:
        """Copies the tied grid into this quantizer's own variables.

        So that a model saved, or read without the tie, holds the grid the
        sim computes with.
        """
        if self.tied:
            self.set_encoding(self._tie.encoding())

    def save_own_variables(self, store: dict) -> None:
        self.sync_tied_grid()
        super().save_own_variables(store)

    def _range_from_first_batches(self, inputs):
        """Widens the range over the first batches; returns it."""
        ops = keras.ops
        values = ops.cast(inputs, self.encoding_min.dtype)
        context = observers_lib._replica_context()
        if context is None:
            batch_lo, batch_hi = ops.min(values), ops.max(values)
        else:
            # Each replica sees a shard: all take the global batch's range,
            # so their copies of the variables stay equal. An empty shard's
            # bounds (+inf, -inf) drop out.
            local = ops.stack(
                [
                    ops.min(values, initial=np.inf),
                    ops.max(values, initial=-np.inf),
                ]
            )
            bounds = context.all_gather(ops.reshape(local, (1, 2)), axis=0)
            batch_lo, batch_hi = ops.min(bounds[:, 0]), ops.max(bounds[:, 1])
        seen = self.batches_seen
        first = ops.equal(seen, 0)
        active = ops.less(seen, self.init_batches)
        lo = ops.where(
            first, batch_lo, ops.minimum(self.encoding_min, batch_lo)
        )
        hi = ops.where(
            first, batch_hi, ops.maximum(self.encoding_max, batch_hi)
        )
        if self.is_symmetric and not self.unsigned_symmetric:
            # Stored as (-max, max), as set_encoding stores symmetric grids.
            hi = ops.maximum(ops.abs(lo), ops.abs(hi))
            lo = -hi
        lo = ops.where(active, lo, self.encoding_min)
        hi = ops.where(active, hi, self.encoding_max)
        self.encoding_min.assign(lo)
        self.encoding_max.assign(hi)
        self.batches_seen.assign(ops.minimum(seen + 1, self.init_batches))
        self.has_encoding.assign(1)
        return lo, hi

    @property
    def switches(self) -> tuple:
        """The Python-side settings that traced code bakes in.

        Functions traced with this quantizer are valid while this tuple is
        unchanged; grids live in variables and need no retrace.
        """
        return (
            self.enabled,
            self.observing,
            self.is_initialized,
            self.data_type,
            self.bitwidth,
            self.exponent_bits,
            self.is_symmetric,
            self.strict_symmetric,
            self.unsigned_symmetric,
            self.range_learning,
            self.init_batches,
            self.check_finite,
            None if self._tie is None else self._tie.switches(),
        )

    @property
    def is_initialized(self) -> bool:
        """Whether an encoding was computed, set, loaded or initialized."""
        import tensorflow as tf

        if self.tied:
            return True
        # Ranges set inside a compiled function: read the flag back. Only
        # possible eagerly; while tracing, the Python flag holds.
        if (
            not self._initialized
            and self.init_batches
            and self.built
            and tf.executing_eagerly()
        ):
            self._initialized = int(self.has_encoding.numpy()) == 1
        return self._initialized

    def load_own_variables(self, store: dict) -> None:
        super().load_own_variables(store)
        self._initialized = int(self.has_encoding.numpy()) == 1

    def compute_encoding(self) -> None:
        """Sets the encoding from the observer's statistics.

        Raises:
            ValueError: if the observer saw no data.
        """
        if self.scaled_float:
            # AIMET's float quantizers take the largest magnitude of the
            # range the scheme picks for an asymmetric grid (unnudged).
            if self.fixed_range is not None:
                lo, hi = self.fixed_range
            else:
                lo, hi = self.observer.propose_range(self.bitwidth)
            largest = np.maximum(np.abs(lo), np.abs(hi))
            largest = np.maximum(largest, encoding_lib.MIN_RANGE)
            self.set_encoding(
                encoding_lib.float_encoding(
                    self.bitwidth,
                    self.exponent_bits,
                    largest / self._float_format.largest,
                )
            )
            return
        if self.fixed_range is not None:
            self.set_encoding(
                encoding_lib.compute_encoding(
                    *self.fixed_range,
                    *self._grid_settings,
                )
            )
            return
        self.set_encoding(
            self.observer.compute_encoding(
                *self._grid_settings,
            )
        )

    def set_encoding(self, encoding: encoding_lib.Encoding) -> None:
        """Uses ``encoding`` from now on (for example one read from a file).

        A tied quantizer (:meth:`tie_to`) keeps computing on the grid it is
        tied to; call :meth:`untie` first to use ``encoding`` instead.

        Args:
            encoding: an :class:`~aimet_keras.quant.Encoding` with this
                quantizer's bitwidth and channel count.

        Raises:
            ValueError: when bitwidth or channel count differ, naming both.
        """
        if not self.built:
            raise ValueError(
                f"TensorQuantizer {self.name} is not built; call it on a "
                "tensor (or build it) before setting an encoding."
            )
        if encoding.is_float and self.data_type == "float":
            self._set_float_encoding(encoding)
            return
        if encoding.is_float or encoding.bitwidth != self.bitwidth:
            raise ValueError(
                f"TensorQuantizer {self.name} quantizes to {self.bitwidth}-bit "
                f"{self.data_type}; got {encoding!r}. Change the quantizer's "
                "bitwidth first."
            )
        expected = self.observer.num_channels if self.axis is not None else 1
        if encoding.num_channels != expected or (
            self.axis is None and encoding.is_per_channel
        ):
            raise ValueError(
                f"TensorQuantizer {self.name} has {expected} channel(s) "
                f"(axis={self.axis!r}); the encoding has "
                f"{encoding.num_channels}."
            )
        lo, hi = np.asarray(encoding.min), np.asarray(encoding.max)
        if encoding.is_symmetric and not encoding.unsigned_symmetric:
            # AIMET re-derives a symmetric grid from max alone; storing
            # (-max, max) makes the stored range map back to the same grid.
            lo = -hi
        self.encoding_min.assign(lo.astype("float32"))
        self.encoding_max.assign(hi.astype("float32"))
        self.has_encoding.assign(1)
        self._initialized = True

    def _set_float_encoding(self, encoding):
        same = (encoding.bitwidth, encoding.exponent_bits) == (
            self.bitwidth,
            self.exponent_bits,
        )
        if not same:
            raise ValueError(
                f"TensorQuantizer {self.name} casts to "
                f"{self.encoding!r}; got {encoding!r}. Change the "
                "quantizer's bitwidth and exponent_bits first."
            )
        if not self.scaled_float:
            return  # a cast has nothing to set
        if encoding.delta is None:
            raise ValueError(
                f"TensorQuantizer {self.name}: {encoding!r} has no scale; an "
                "8-bit float format needs one (calibrate, or pass scale= "
                "to float_encoding)."
            )
        expected = self.observer.num_channels if self.axis is not None else 1
        if np.size(encoding.delta) not in (1, expected):
            raise ValueError(
                f"TensorQuantizer {self.name} has {expected} channel(s); the "
                f"encoding has {np.size(encoding.delta)} scales."
            )
        largest = np.broadcast_to(
            np.asarray(encoding.max, np.float64),
            self.encoding_max.shape,
        )
        self.encoding_min.assign((-largest).astype("float32"))
        self.encoding_max.assign(largest.astype("float32"))
        self.has_encoding.assign(1)
        self._initialized = True

    @property
    def encoding(self) -> encoding_lib.Encoding | None:
        """The current :class:`~aimet_keras.quant.Encoding`, or None."""
        if not self.enabled:
            return None
        if self.data_type == "float":
            if not self.scaled_float:
                return encoding_lib.float_encoding(
                    self.bitwidth, self.exponent_bits
                )
            if not self.is_initialized:
                return None
            largest = self.encoding_max.numpy().astype("float64")
            return encoding_lib.float_encoding(
                self.bitwidth,
                self.exponent_bits,
                largest / self._float_format.largest,
            )
        if not self.is_initialized:
            return None
        if self.tied:
            return self._tie.encoding()
        low = self.encoding_min.numpy().astype("float64")
        high = self.encoding_max.numpy().astype("float64")
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            # Range learning on NaN gradients, say: no file gets this grid.
            bad = ~(np.isfinite(low) & np.isfinite(high))
            where = (
                f"in {int(bad.sum())} of its {bad.size} channels"
                if bad.ndim
                else f"(min {float(low)}, max {float(high)})"
            )
            raise ValueError(
                f"{self.label or f'Quantizer {self.name!r}'} has a NaN or "
                f"infinite range {where}; training diverged or the range "
                "was set from bad data. "
                "Calibrate it again (sim.compute_encodings) before exporting."
            )
        # Range learning can cross min and max; calls compute on the grid
        # of the range widened to hold zero (grid_from_range), which is
        # then a valid range.
        return encoding_lib.compute_encoding(
            np.minimum(low, 0.0), np.maximum(high, 0.0), *self._grid_settings
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            bitwidth=self.bitwidth,
            is_symmetric=self.is_symmetric,
            strict_symmetric=self.strict_symmetric,
            unsigned_symmetric=self.unsigned_symmetric,
            axis=self.axis,
            quant_scheme=self.quant_scheme,
            data_type=self.data_type,
            enabled=self.enabled,
            range_learning=self.range_learning,
            init_batches=self.init_batches,
            fixed_range=self.fixed_range,
            ties_away_from_zero=self.ties_away_from_zero,
            exponent_bits=self.exponent_bits,
        )
        return config


def _same_int_grid_kind(a, b):
    return (
        a.enabled
        and b.enabled
        and a.data_type == b.data_type == "int"
        and a.bitwidth == b.bitwidth
        and a.is_symmetric == b.is_symmetric
        and a.strict_symmetric == b.strict_symmetric
        and a.unsigned_symmetric == b.unsigned_symmetric
    )


class _SameGrid:
    """``follower`` computes on ``source``'s grid (see ``tie_to``)."""

    derived = False

    def __init__(self, follower, source):
        self.follower, self.source = follower, source

    def holds(self):
        return (
            _same_int_grid_kind(self.follower, self.source)
            and self.source.axis is None
            and self.follower.axis is None
            and self.source.built
            and self.source.is_initialized
        )

    @property
    def learns(self):
        source = self.source
        return source.range_learning or (source.tied and source._tie.learns)

    def switches(self):
        return ("same", self.source.name, self.source.switches)

    def range(self):
        return self.source._grid_range()

    def encoding(self):
        return self.source.encoding


class _ProductGrid:
    """A 32-bit bias on the step input step x kernel step (see
    ``tie_to_product``)."""

    derived = True
    learns = False

    def __init__(self, bias, input_quantizer, kernel_quantizer):
        self.bias = bias
        self.input, self.kernel = input_quantizer, kernel_quantizer

    def holds(self):
        quantizers = (self.bias, self.input, self.kernel)
        return (
            all(
                q.enabled and q.data_type == "int" and q.built
                for q in quantizers
            )
            and self.bias.is_symmetric
            and not self.bias.unsigned_symmetric
            and self.input.axis is None
            and (self.kernel.axis is None or self.bias.axis is not None)
            and self.input.is_initialized
            and self.kernel.is_initialized
        )

    def switches(self):
        return (
            "product",
            self.input.name,
            self.input.switches,
            self.kernel.name,
            self.kernel.switches,
        )

    def _largest_level(self):
        # A signed symmetric grid spans -M..M with M = (N // 2) steps.
        steps = encoding_lib.num_steps(
            self.bias.bitwidth, True, self.bias.strict_symmetric
        )
        return steps // 2

    def range(self):
        import tensorflow as tf

        def step(quantizer):
            lo, hi = quantizer._grid_range()
            lo, hi = tf.cast(lo, tf.float64), tf.cast(hi, tf.float64)
            delta, _ = encoding_lib.grid_from_range(
                lo,
                hi,
                quantizer.bitwidth,
                quantizer.is_symmetric,
                quantizer.strict_symmetric,
                quantizer.unsigned_symmetric,
                bounds=False,
            )
            return delta

        # The bias grid follows the others; it is not learned itself.
        hi = tf.stop_gradient(
            step(self.input) * step(self.kernel) * self._largest_level()
        )
        return -hi, hi

    def encoding(self):
        step = np.asarray(self.input.encoding.delta, np.float64) * np.asarray(
            self.kernel.encoding.delta, np.float64
        )
        if self.bias.axis is not None:
            step = np.broadcast_to(step, (self.bias.observer.num_channels,))
        largest = self._largest_level()
        return encoding_lib.compute_encoding(
            -largest * step,
            largest * step,
            self.bias.bitwidth,
            True,
            self.bias.strict_symmetric,
            False,
        )
