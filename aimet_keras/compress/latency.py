"""Measured latency: what a layer's shape costs on the target runtime.

MACs are a proxy for time, and on small layers a poor one: a CPU computes
channels in SIMD blocks (8 or 16 floats), so 13 output channels cost what
16 do, and a spatial SVD's two thin convolutions can take longer than the
one they replace. :class:`LatencyTable` times single layers (or short
chains, such as an SVD's two pieces) converted alone to FP32 TFLite, at the
batch size and thread count of the deployment, once per distinct shape;
``compress_model(..., cost_metric="latency")`` then picks per-layer ratios
by time saved instead of MACs saved (as NetAdapt and AMC do with their
latency tables).

The estimate is the weighted layers' times, each timed alone, summed: it
leaves out what the whole model runs besides them (adds, pooling,
activations that do not fuse) and how layers behave next to each other.
On the reference ResNet's compressed models its ratio came within 0.01
(0.652 estimated, 0.642 measured) to 0.07 (0.621, 0.688) of the whole
model's; time the compressed model itself before relying on a ratio.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import statistics
import time
import typing

import keras
import numpy as np
import tensorflow as tf

from aimet_keras.export import staging
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LatencyTable", "ModelTimes", "layer_latencies"]

_INTERPRETERS = 3  # interpreters timed per shape ...
_PAUSE = 0.05  # ... this many seconds apart
# Timed alongside every shape: one mid-sized convolution, (specs, shape).
_REFERENCE = (
    [("Conv2D", {"filters": 32, "kernel_size": (3, 3), "padding": "same"})],
    (16, 16, 32),
)


def _layer_spec(layer, **changes):
    """``(class name, config)`` of ``layer`` with ``changes`` applied."""
    config = dict(layer.get_config(), **changes)
    config.pop("name", None)
    return type(layer).__name__, config


class LatencyTable:
    """TFLite FP32 time of single layers, measured once per shape.

    Each distinct ``(layers, input shape)`` is converted alone with
    ``TFLiteConverter.from_keras_model`` and timed with the interpreter
    (XNNPACK, TFLite's default CPU delegate): the fastest of ``rounds``
    rounds of ``invokes`` invokes on each of three interpreters, after a
    warm-up (the least disturbed round: other work on the cores only ever
    adds time), scaled by a reference convolution timed in alternating
    rounds (a machine whose speed drifts during a search must not make one
    shape look cheaper than another timed a minute earlier). Times are kept in
    memory and, given ``path``, in a JSON file that later tables reuse.
    Measure on a quiet machine: other processes on the same cores distort
    the times and so the choices made from them.

    Args:
        batch_size: the batch of the deployment. Defaults to 32.
        num_threads: interpreter threads. Defaults to 2.
        path: a JSON file to read and extend. Defaults to None.
        rounds: timing rounds per shape. Defaults to 7.
        invokes: invokes per round. Defaults to 10.

    Example:

    >>> table = LatencyTable(batch_size=4, num_threads=1, rounds=3)
    >>> conv = keras.layers.Conv2D(16, 3, padding="same")
    >>> conv.build((None, 14, 14, 8))
    >>> wide = table.seconds([conv], (14, 14, 8))
    >>> thin = table.seconds([conv], (14, 14, 8), filters=[4])
    >>> wide > 0 and thin > 0
    True
    """

    def __init__(
        self,
        batch_size: int = 32,
        num_threads: int = 2,
        path: str | os.PathLike | None = None,
        rounds: int = 7,
        invokes: int = 10,
    ) -> None:
        for what, value in (
            ("batch_size", batch_size),
            ("num_threads", num_threads),
            ("rounds", rounds),
            ("invokes", invokes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"LatencyTable {what}={value!r}; use an int >= 1."
                )
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.rounds = rounds
        self.invokes = invokes
        self.path = path
        self.measured = 0  # shapes timed by this table (not read from path)
        self._times = {}
        self._reference = None  # the reference convolution's TFLite model
        self._reference_seconds = None
        if path is not None and os.path.exists(path):
            try:
                with open(path) as f:
                    saved = json.load(f)
                self._times = dict(saved["seconds"])
                self._reference_seconds = saved["reference_seconds"]
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(
                    f"Latency table {path!r} is not one LatencyTable wrote "
                    f"({error}); delete it or pass another path."
                ) from error

    def key(self) -> dict:
        """What the times depend on besides the shapes."""
        return {"batch_size": self.batch_size, "num_threads": self.num_threads}

    def seconds(
        self,
        layers: Sequence[keras.layers.Layer],
        input_shape: tuple[int, ...],
        filters: Sequence[int | None] | None = None,
    ) -> float:
        """Seconds per batch of ``layers`` chained, on ``input_shape``.

        Args:
            layers: Keras layers (templates: only their configs are used;
                a fresh copy of each is timed with random weights).
            input_shape: the first layer's input shape, without the batch.
            filters: per layer, an output channel count to use instead of
                the layer's own (``filters`` or ``units``), or None.

        Returns:
            Seconds of one invoke on a batch of ``batch_size``.
        """
        filters = filters or [None] * len(layers)
        specs = []
        for layer, count in zip(layers, filters):
            changes = {}
            if count is not None:
                dense = isinstance(layer, keras.layers.Dense)
                changes["units" if dense else "filters"] = int(count)
            specs.append(_layer_spec(layer, **changes))
        shape = [int(d) for d in input_shape]
        text = json.dumps(
            {"layers": specs, "input": shape, **self.key()},
            sort_keys=True,
            default=str,
        )
        key = hashlib.sha1(text.encode()).hexdigest()
        if key not in self._times:
            self._times[key] = self._measure(specs, shape)
            self.measured += 1
            self._save()
        return self._times[key]

    def model_seconds(self, models: Sequence[keras.Model]) -> list[float]:
        """Seconds per batch of each whole model, timed interleaved.

        Each model is converted to FP32 TFLite as it is (not cached: a
        search times the models it builds), its input resized to
        ``batch_size``, and timed in rounds as the table's layers are, the
        models' rounds alternating so that they are compared under the
        same load. Unlike a layer's time, a model's is the median round,
        not the fastest: a landing is judged by the typical time, and the
        fastest rounds flatter a smaller model (measured on MobileNetV2
        pruned by time: 0.493 of the original by the fastest rounds, 0.518
        by the median of a separate timing).

        Args:
            models: built ``keras.Model`` objects with one fixed-size input.

        Returns:
            Seconds of one invoke per model, in order.

        Example:

        >>> inputs = keras.Input((8, 8, 3))
        >>> wide = keras.Model(inputs, keras.layers.Conv2D(32, 3)(inputs))
        >>> thin = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
        >>> table = LatencyTable(batch_size=2, num_threads=1, rounds=2)
        >>> len(table.model_seconds([wide, thin]))
        2
        """
        contents = []
        for model in models:
            with contextlib.redirect_stdout(io.StringIO()):
                contents.append(
                    tf.lite.TFLiteConverter.from_keras_model(model).convert()
                )
        return [statistics.median(t) for t in self._rounds(contents)]

    def _convert(self, specs, shape):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape, batch_size=self.batch_size)
        x = inputs
        for class_name, config in specs:
            x = getattr(keras.layers, class_name).from_config(config)(x)
        model = keras.Model(inputs, x)
        with contextlib.redirect_stdout(io.StringIO()):  # converter chatter
            return tf.lite.TFLiteConverter.from_keras_model(model).convert()

    def _interpreter(self, content):
        from aimet_keras.export import tflite as tflite_lib

        interpreter = tflite_lib.load_interpreter(
            model_content=content, num_threads=self.num_threads
        )
        detail = interpreter.get_input_details()[0]
        shape = [self.batch_size, *detail["shape"][1:]]
        if list(detail["shape"]) != shape:  # a whole model's batch of 1
            interpreter.resize_tensor_input(detail["index"], shape)
        interpreter.allocate_tensors()
        sample = np.random.default_rng(0).random(shape, np.float32)
        interpreter.set_tensor(detail["index"], sample)
        for _ in range(3):
            interpreter.invoke()
        return interpreter

    def _round(self, interpreter):
        start = time.perf_counter()
        for _ in range(self.invokes):
            interpreter.invoke()
        return (time.perf_counter() - start) / self.invokes

    def _rounds(self, contents):
        """Every round's seconds per invoke of each model, interleaved.

        Right after a conversion an interpreter can run at one thread's
        speed for a while (its worker sharing a core with the converter's
        threads): a few interpreters are timed, spread over a fraction of
        a second.
        """
        times = [[] for _ in contents]
        for _ in range(_INTERPRETERS):
            time.sleep(_PAUSE)
            interpreters = [self._interpreter(c) for c in contents]
            for _ in range(self.rounds):
                for found, interpreter in zip(times, interpreters):
                    found.append(self._round(interpreter))
        return times

    def _fastest(self, contents):
        """The fastest round of each model, their rounds interleaved."""
        return [min(found) for found in self._rounds(contents)]

    def _measure(self, specs, shape):
        """Seconds of the model, scaled by a fixed reference convolution
        timed alongside: a machine that slows down or speeds up between
        the shapes of one search (a shared host, another process) changes
        both alike, so the table's times stay comparable."""
        if self._reference is None:
            self._reference = self._convert(*_REFERENCE)
        if self._reference_seconds is None:
            (self._reference_seconds,) = self._fastest([self._reference])
        model, reference = self._fastest(
            [self._convert(specs, shape), self._reference]
        )
        return model / reference * self._reference_seconds

    def _save(self):
        if self.path is None:
            return
        staging.write_atomically(
            self.path,
            json.dumps(
                {
                    "reference_seconds": self._reference_seconds,
                    "seconds": self._times,
                },
                indent=0,
            ),
        )


def _weighted_calls(model):
    """``[(layer, input shape without the batch, output channels)]`` for
    each call of a weighted layer of the prepared ``model``, in graph
    order."""
    calls = []
    for site in prepare_lib.walk(model):
        layer = site.operation
        if op_types.keras_class_name(layer, op_types.KERNEL_LAYERS) is None:
            continue
        shape = tuple(site.inputs[0].shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                f"Layer {layer.name!r}: input shape {shape} has an unknown "
                "size; build the model with a fixed input size to time its "
                "layers."
            )
        calls.append((layer, shape, int(site.outputs[0].shape[-1])))
    return calls


def layer_latencies(
    model: keras.Model, table: LatencyTable
) -> dict[str, float]:
    """Seconds per batch of each weighted layer of ``model``, timed alone.

    A layer called several times costs the sum of its calls. Layers doing
    no weight arithmetic (batch norms fold into convolutions in TFLite,
    activations fuse into them) are left out.

    Args:
        model: a built ``keras.Model`` with fixed input sizes.
        table: the :class:`LatencyTable` to time with.

    Returns:
        ``{layer name: seconds}`` in graph order.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> model = keras.Model(inputs, x)
    >>> times = layer_latencies(model, LatencyTable(4, 1, rounds=2))
    >>> list(times)
    ['conv']
    """
    return dict(ModelTimes(prepare_lib.prepare_model(model), table).whole)


def _count(channels, fraction):
    """The channels a fraction of ``channels`` leaves: rounded, at least
    one (a Concatenate's segment loses its share)."""
    return max(1, round(channels * fraction))


class ModelTimes:
    """A prepared model's weighted layers timed at other channel counts.

    What ``compress_model(cost_metric="latency")`` costs candidates with:
    a layer's time at ``(input channels, output channels)`` is estimated
    from its time with only the inputs changed and with only the outputs
    changed, ``t(i, o) = t(i, O) * t(I, o) / t(I, O)`` (exact where time is
    proportional to each), so each layer is timed at a count or two per
    candidate rather than at every pair.

    Attributes:
        table: the :class:`LatencyTable` timing the layers.
        whole: ``{layer name: seconds}``, each layer as it is (a shared
            layer's calls summed), in graph order.
        input_shapes: ``{layer name: input shape without the batch}``.
    """

    def __init__(self, prepared: keras.Model, table: LatencyTable) -> None:
        self.table = table
        self.whole = {}
        self.input_shapes = {}
        self._layers = {}
        self._output_channels = {}
        self._shrunk = {}  # the search asks for the same layer many times
        for layer, shape, outputs in _weighted_calls(prepared):
            seconds = table.seconds([layer], shape)
            self.whole[layer.name] = self.whole.get(layer.name, 0.0) + seconds
            self.input_shapes.setdefault(layer.name, shape)
            self._output_channels.setdefault(layer.name, outputs)
            self._layers[layer.name] = layer

    def chain(
        self,
        name: str,
        layers: Sequence[keras.layers.Layer],
        filters: Sequence[int | None] | None,
    ) -> float:
        """Seconds of ``layers`` (replacing layer ``name``) on its input."""
        return self.table.seconds(layers, self.input_shapes[name], filters)

    def layer(
        self, name: str, inputs: float = 1.0, outputs: float = 1.0
    ) -> float:
        """Seconds of layer ``name`` with the fractions ``inputs`` of its
        input channels and ``outputs`` of its output channels left (a
        depthwise convolution's outputs follow its inputs)."""
        key = name, inputs, outputs
        if key not in self._shrunk:
            self._shrunk[key] = self._shrunk_seconds(*key)
        return self._shrunk[key]

    def _shrunk_seconds(self, name, inputs, outputs):
        layer = self._layers[name]
        shape = self.input_shapes[name]
        whole = self.table.seconds([layer], shape)
        seconds = whole
        channels = _count(shape[-1], inputs)
        if channels != shape[-1]:
            seconds = self.table.seconds([layer], (*shape[:-1], channels))
        if outputs != 1.0 and not isinstance(
            layer, keras.layers.DepthwiseConv2D
        ):
            count = _count(self._output_channels[name], outputs)
            seconds *= self.table.seconds([layer], shape, [count]) / whole
        return seconds
