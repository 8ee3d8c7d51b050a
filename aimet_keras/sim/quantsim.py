"""QuantizationSimModel: a Keras model that simulates quantized inference.

The simulation is the caller's model cloned with every layer wrapped in a
:class:`~aimet_keras.sim.QuantizationWrapper` whose quantizers follow the
quantsim config (resolved by :func:`~aimet_keras.sim.resolve_layer_specs`).
``sim.model`` is a plain functional Keras model: it predicts, evaluates,
trains and saves like any other. The caller's model is never changed.

Any model shape is first prepared into one flat functional graph
(:func:`~aimet_keras.graph.prepare_model`): nested models are inlined, a
shared layer keeps one wrapper (so one set of quantizers) for all its calls,
and subclassed models are traced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import typing
import warnings

import keras
import numpy as np

from aimet_keras import _progress as progress_lib
from aimet_keras.graph import affine as affine_lib
from aimet_keras.graph import deployment as deployment_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import config as config_lib
from aimet_keras.sim import export as export_lib
from aimet_keras.sim import inputs as inputs_lib
from aimet_keras.sim import quantizer as quantizer_lib
from aimet_keras.sim import rules as rules_lib
from aimet_keras.sim import spec as spec_lib
from aimet_keras.sim import wrapper as wrapper_lib

if typing.TYPE_CHECKING:
    import pathlib

__all__ = ["QuantizationSimModel", "quantize_model"]

_LOG = logging.getLogger("aimet_keras")

_SCHEMES = {
    "tf": ("tf", False),
    "tf_enhanced": ("tf_enhanced", False),
    "percentile": ("percentile", False),
    "mse": ("mse", False),
    "post_training_tf": ("tf", False),
    "post_training_tf_enhanced": ("tf_enhanced", False),
    "post_training_percentile": ("percentile", False),
    "training_range_learning_with_tf_init": ("tf", True),
    "training_range_learning_with_tf_enhanced_init": ("tf_enhanced", True),
}


# Observers report NaN or inf with their name: in an assertion inside a
# traced function, or in a ValueError when run eagerly.
_NON_FINITE = re.compile(
    r"Observer ([\w./-]+?)(?:: NaN or inf| was given a tensor)"
)
_UNCHANGED = "no activation encoding was changed"


def _non_finite_observer(error):
    """The name of the observer whose NaN check ``error`` is, or None."""
    import tensorflow as tf

    if not isinstance(error, (tf.errors.InvalidArgumentError, ValueError)):
        return None
    match = _NON_FINITE.search(str(error))
    return match.group(1) if match else None


class _NonFiniteBatch(Exception):
    """An observer met NaN or inf in calibration batch ``index``."""

    def __init__(self, error, index=None, batch=None):
        super().__init__(str(error))
        self.error = error
        self.index = index
        self.batch = batch


def _grid_state(quantizer, weight_value):
    return (
        quantizer.switches,
        weight_value,
        quantizer.encoding_min.numpy(),
        quantizer.encoding_max.numpy(),
    )


def _same_state(a, b):
    return a[0] == b[0] and all(
        np.array_equal(x, y) for x, y in zip(a[1:], b[1:])
    )


class QuantizationSimModel:
    """Simulates quantized inference of a Keras model, AIMET's way.

    Distributed: to calibrate and train on several devices, load the model,
    build the sim and compile ``sim.model`` inside the ``scope()`` of a
    ``tf.distribute.MirroredStrategy`` (with
    ``MultiWorkerMirroredStrategy`` the same code runs on every worker).
    :meth:`compute_encodings` given data then splits each batch over the
    replicas, a callback's ``predict`` does so through Keras, and so does
    ``fit`` (QAT, range learning included, and
    :meth:`initialize_from_first_batches`). Observers gather every
    replica's shard, so the encodings are those one device computes from
    the same batches.

    Args:
        model: a built ``keras.Model``: Functional, Sequential, with
            nested models or shared layers, or subclassed (traced into a
            functional graph: see :func:`~aimet_keras.graph.prepare_model`);
            or the path (``str`` or ``pathlib.Path``) of a ``.keras`` or
            ``.h5`` file, loaded with ``keras.saving.load_model``.
        quant_scheme: calibration scheme: ``"tf"``, ``"tf_enhanced"``,
            ``"percentile"``, ``"mse"``, AIMET's ``post_training_*`` names,
            or a range-learning scheme
            (``"training_range_learning_with_tf_init"``,
            ``"training_range_learning_with_tf_enhanced_init"``). Defaults to
            ``"tf_enhanced"``.
        rounding_mode: ``"nearest"`` (the only mode so far). Defaults to
            ``"nearest"``.
        default_output_bw: activation bits. Defaults to 8.
        default_param_bw: weight bits. Defaults to 8.
        config_file: a quantsim config (path, shipped name or dict; see
            :func:`~aimet_keras.sim.load_quantsim_config`). Defaults to
            AIMET's default config.
        default_data_type: ``"int"``, ``"float"`` (fp16), or a float
            format every quantizer takes: ``"fp16"``, ``"bf16"``,
            ``"fp8_e4m3"``, ``"fp8_e5m2"`` (8-bit formats are scaled by a
            calibrated maximum; see :mod:`aimet_keras.quant.float_formats`).
            Defaults to ``"int"``.
        in_place: when True the sim runs on the caller's own layers, so
            training ``sim.model`` trains the caller's weights; when False
            (the default) it runs on copies and the caller's model is left
            as is.
        strict: raise, instead of warning, for a layer no quantization rule
            covers (see :func:`~aimet_keras.sim.register_quantization_rule`).
            Defaults to False.
        input_shape: the input shape (with batch dimension) of a subclassed
            model that was never built. Defaults to None.

    Attributes:
        model: the simulated ``keras.Model``.
        specs: ``{layer name: LayerSpec}``, the resolved plan.

    Raises:
        FileNotFoundError: for a path where no file exists, naming it.
        TypeError: for a ``model`` that is neither a ``keras.Model`` nor a
            path, naming what was given.
        ValueError: for a bad setting, naming it; for a SavedModel folder
            (Keras 3 cannot load one as a model) or a file that does not
            load.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
    >>> sim = QuantizationSimModel(model, default_param_bw=8)
    >>> sim.compute_encodings(images[:200])
    >>> sim.model.predict(images[:4], verbose=0).shape
    (4, 10)
    """

    def __init__(
        self,
        model: keras.Model | str | os.PathLike,
        quant_scheme: str = "tf_enhanced",
        rounding_mode: str = "nearest",
        default_output_bw: int = 8,
        default_param_bw: int = 8,
        config_file: str | os.PathLike | dict | None = None,
        default_data_type: str = "int",
        in_place: bool = False,
        strict: bool = False,
        input_shape: tuple | None = None,
    ) -> None:
        if quant_scheme not in _SCHEMES:
            raise ValueError(
                f"quant_scheme={quant_scheme!r} is not supported; use one of "
                f"{sorted(_SCHEMES)}."
            )
        if rounding_mode != "nearest":
            raise ValueError(
                f"rounding_mode={rounding_mode!r} is not supported yet; use "
                "'nearest'."
            )
        spec_lib.resolve_data_type(default_data_type)  # validates
        for argument, bits in (
            ("default_output_bw", default_output_bw),
            ("default_param_bw", default_param_bw),
        ):
            # Float (fp16) simulation ignores the bitwidths.
            if default_data_type == "int" and not (
                isinstance(bits, int) and 2 <= bits <= 32
            ):
                raise ValueError(
                    f"{argument}={bits!r} is out of range: integer grids take "
                    "2 to 32 bits."
                )
        self.quant_scheme = quant_scheme
        self.default_data_type = default_data_type
        self._frozen = set()
        self._args = dict(
            activation_bitwidth=default_output_bw,
            param_bitwidth=default_param_bw,
            # AIMET's quantizer_args name the kind: "int" or "float".
            dtype="int" if default_data_type == "int" else "float",
        )
        self._observer_scheme, self._range_learning = _SCHEMES[quant_scheme]
        model = inputs_lib.resolve_model(model)
        self._prepared = prepare_lib.prepare_model(
            model, input_shape=input_shape, copy=not in_place
        )
        self.config = config_lib.load_quantsim_config(config_file)
        self._prepared = affine_lib.channel_affines_as_depthwise(
            self._prepared, where=self._runs_as_depthwise
        )
        self.specs = spec_lib.resolve_layer_specs(
            self._prepared,
            self.config,
            default_output_bw=default_output_bw,
            default_param_bw=default_param_bw,
            default_data_type=default_data_type,
        )
        unknown = [
            f"{name!r} ({spec.op_type if spec.known else 'custom'})"
            for name, spec in self.specs.items()
            if not spec.known
        ]
        if unknown:
            message = (
                f"No quantization rule for {', '.join(unknown)}: "
                + ("" if strict else "outputs quantized, weights left float. ")
                + "Register one with aimet_keras.sim.register_quantization_"
                "rule(LayerClass, op_type=...)."
            )
            if strict:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
        self.model = prepare_lib.rebuild(self._prepared, self._wrap_layer)
        self._label_quantizers()
        self._tie_grids()

    def _runs_as_depthwise(self, layer):
        """Whether the config has ``layer``'s op type run as a depthwise
        convolution (``as_depthwise_conv``)."""
        kind = rules_lib.rule_for(layer).op_type
        settings = self.config.op_types.get(kind)
        return bool(settings and settings.as_depthwise_conv)

    def _quantizer(self, spec, name, tied=False):
        # QuantizerSpec's fields are TensorQuantizer's arguments.
        return quantizer_lib.TensorQuantizer(
            **dataclasses.asdict(spec),
            quant_scheme=self._observer_scheme,
            # Disabled quantizers get no gradient: nothing to learn. A tied
            # grid (see _tie_grids) learns through the one it follows.
            range_learning=self._range_learning
            and spec.data_type == "int"
            and spec.enabled
            and not tied,
            name=name,
        )

    def _wrap_layer(self, layer):
        # The prepared model's layers are already the sim's own copies.
        spec = self.specs[layer.name]
        name = layer.name
        return wrapper_lib.QuantizationWrapper(
            layer,
            [
                self._quantizer(s, f"{name}_input{i}")
                for i, s in enumerate(spec.inputs)
            ],
            [
                self._quantizer(
                    s,
                    f"{name}_output{i}",
                    tied=i == 0 and spec.output_grid_source is not None,
                )
                for i, s in enumerate(spec.outputs)
            ],
            {
                weight: self._quantizer(
                    s,
                    f"{name}_{weight.replace('/', '_')}",
                    tied=weight == "bias" and spec.bias_grid_source is not None,
                )
                for weight, s in spec.params.items()
            },
            {
                tensor: self._quantizer(s, f"{name}_{tensor}")
                for tensor, s in spec.internals.items()
            },
        )

    def quant_wrappers(self) -> list[wrapper_lib.QuantizationWrapper]:
        """The wrappers of the simulated model, in layer order."""
        return [
            layer
            for layer in self.model.layers
            if isinstance(layer, wrapper_lib.QuantizationWrapper)
        ]

    def _activation_quantizers(self):
        for wrapper in self.quant_wrappers():
            yield from wrapper.input_quantizers
            yield from wrapper.output_quantizers
            yield from wrapper.internal_quantizers.values()

    def compute_encodings(
        self,
        forward_pass_callback: object,
        forward_pass_callback_args: object = None,
        verbose: int | str = "auto",
    ) -> None:
        """Calibrates every enabled quantizer.

        Weights are calibrated from their values; activations from the
        batches the forward pass runs. Activation quantizers that see no
        data are disabled, with a log message naming them (as AIMET does).

        Data is checked against the model's inputs before anything runs:
        a shape or dtype that does not fit raises, naming the input, the
        shapes and the fix. Integer data for a float input is cast, as
        Keras does (with a warning unless a ``Rescaling`` or
        ``Normalization`` layer reads it). NaN or inf never reaches an
        encoding: calibration stops with a ``ValueError`` naming the input
        and sample that hold them, or the first layer whose output holds
        them, and the activation encodings stay as they were before the
        call (none, on a first calibration).

        Args:
            forward_pass_callback: AIMET's form, a function called as
                ``forward_pass_callback(sim.model, forward_pass_callback_args)``
                that runs calibration data through the model; or the data
                itself: a batched ``tf.data.Dataset`` (of inputs or of
                ``(inputs, targets)``), an array, or, for several inputs, a
                list of arrays in input order or a dict keyed by input name.
            forward_pass_callback_args: passed to the callback. Defaults to
                None.
            verbose: 1 shows a progress bar over the calibration batches
                (``keras.utils.Progbar``, as ``fit`` does), 0 nothing;
                ``"auto"`` shows it when standard output is a terminal.
                A forward-pass callback reports its own progress.

        Raises:
            ValueError: for data that does not fit the model's inputs, for
                empty data, or for NaN or inf in the data, in a weight or
                in a layer's output, naming where.
            TypeError: for data of a kind not supported (a generator, say).

        Example:

        >>> inputs = keras.Input((28, 28, 1), name="image")
        >>> outputs = keras.layers.Conv2D(2, 3, name="conv")(inputs)
        >>> sim = QuantizationSimModel(keras.Model(inputs, outputs))
        >>> images = np.random.default_rng(0).random((8, 28, 28, 1))
        >>> sim.compute_encodings(images.astype("float32"))
        >>> images[3, 0, 0, 0] = np.nan
        >>> try:
        ...     sim.compute_encodings(images.astype("float32"))
        ... except ValueError as error:
        ...     print(str(error).split(" (")[0])
        Calibration data for input 'image' holds NaN or inf at sample 3
        """
        data = None
        if not callable(forward_pass_callback):
            # 1. Check the data against the model's inputs; nothing runs.
            data = inputs_lib.CalibrationData(self.model, forward_pass_callback)
            for message in data.warnings:
                warnings.warn(message, stacklevel=2)
        # 2. Weight grids (a weight holding NaN or inf raises first).
        self._compute_param_encodings()
        # 3. Activation statistics.
        active = [
            q
            for q in self._activation_quantizers()
            if q.enabled and (q.data_type == "int" or q.scaled_float)
        ]
        for quantizer in active:
            quantizer.observer.reset()
            quantizer.observing = True
        failure, batches = None, None
        try:
            if data is None:
                self._retrace()
                try:
                    forward_pass_callback(
                        self.model, forward_pass_callback_args
                    )
                except Exception as error:
                    if _non_finite_observer(error) is None:
                        raise
                    failure = _NonFiniteBatch(error)
            else:
                batches = self._observe(data, verbose=verbose)
        except _NonFiniteBatch as error:
            failure = error
        finally:
            for quantizer in active:
                quantizer.observing = False
        if data is None and active and failure is None:
            seen = (int(q.observer.num_updates.numpy()) for q in active)
            batches = None if any(seen) else 0
        if failure is not None or batches == 0:
            # Forget the partial statistics: encodings stay as they were.
            if failure is not None:
                message = self._non_finite_message(failure, data, active)
            elif data is None:
                message = (
                    "forward_pass_callback ran no data through the model it "
                    "was given (no activation quantizer saw a batch); call "
                    "that model, its first argument, on calibration batches "
                    f"({_UNCHANGED})."
                )
            else:
                message = (
                    "The calibration dataset yielded no batches; pass one "
                    f"with at least one batch ({_UNCHANGED})."
                )
            for quantizer in active:
                quantizer.observer.reset()
            self._retrace()
            raise ValueError(message) from None
        # 4. Activation grids.
        for quantizer in active:
            if int(quantizer.observer.num_updates.numpy()) == 0:
                quantizer.enabled = False
                _LOG.info("Quantizer %s saw no data: disabled.", quantizer.name)
            else:
                quantizer.compute_encoding()
        self._tie_grids()
        self._retrace()

    def _tie_grids(self):
        """Ties the grids the target derives from others, then syncs them.

        An op type with ``output_on_input_grid`` (average pooling)
        computes on its input's grid (:meth:`TensorQuantizer.tie_to`), the
        producers of one with ``inputs_on_output_grid`` (concatenation) on
        its output grid; a 32-bit bias on the step input step x weight
        step, as TFLite, QNN and AIMET store it, so it adds to the int32
        accumulator as it is
        (:meth:`TensorQuantizer.tie_to_product`). A bias on a grid of its
        own is rounded again there, and the output differs from the sim's
        by a step wherever that rounding tips it: EfficientNetB0's TFLite
        agreed with its sim on 86% of top-1 over 1,000 images, 93% with
        the product. Ties are evaluated in every call, so they hold
        through range learning. Frozen bias grids (loaded from a file)
        stay as they are.
        """
        wrappers = {w.name: w for w in self.quant_wrappers()}
        tied = []
        for name, spec in self.specs.items():
            if name not in wrappers:
                continue
            wrapper = wrappers[name]
            if spec.output_grid_source is not None:
                follower = wrapper.output_quantizers[0]
                follower.tie_to(self._quantizer_at(spec.output_grid_source))
                tied.append(follower)
            if spec.bias_grid_source is not None:
                quantizers = wrapper.param_quantizers
                bias = quantizers["bias"]
                if id(bias) in self._frozen:
                    bias.untie()
                    continue
                (kernel,) = (q for k, q in quantizers.items() if k != "bias")
                bias.tie_to_product(
                    self._quantizer_at(spec.bias_grid_source), kernel
                )
                tied.append(bias)
        for quantizer in tied:
            quantizer.sync_tied_grid()

    def _quantizer_at(self, location):
        """The quantizer at ``(layer name, "input" or "output", index)``."""
        name, kind, index = location
        return getattr(self.model.get_layer(name), f"{kind}_quantizers")[index]

    def _non_finite_message(self, failure, data, active):
        """One line naming where calibration met NaN or inf.

        With the failing batch at hand: the input and sample holding them,
        else the first layer whose output holds them (a pass over that
        batch alone, run only now). Otherwise the layer whose quantizer
        reported them.
        """
        if failure.batch is not None:
            found = data.non_finite_input(failure.index, failure.batch)
            if found is not None:
                return f"{found} and calibrate again; {_UNCHANGED}."
            found = self._first_non_finite_output(failure.batch, active)
            if found is not None:
                layer, offset, weights = found
                where = (
                    f"calibration batch {failure.index}"
                    if offset is None
                    else data.sample(failure.index, offset)
                )
                if weights:
                    cause = f"; its weight {weights[0]!r} holds NaN or inf"
                    fix = "Fix that weight"
                else:
                    cause = ""
                    fix = (
                        "Check its weights and ops (log or division by zero, "
                        "overflow)"
                    )
                return (
                    f"Layer {layer.name!r} ({inputs_lib.layer_class(layer)}) "
                    f"outputs NaN or inf at {where} from finite inputs"
                    f"{cause}. {fix} and calibrate again; {_UNCHANGED}."
                )
        where = (
            "during forward_pass_callback"
            if data is None
            else f"on calibration batch {failure.index}"
        )
        located = self._observer_owners().get(
            _non_finite_observer(failure.error)
        )
        if located is None:
            seen = f"A quantizer saw NaN or inf {where}"
        else:
            layer, role = located
            seen = (
                f"Layer {layer.name!r} ({inputs_lib.layer_class(layer)}) saw "
                f"NaN or inf at its {role} {where}"
            )
        return (
            f"{seen}. Find where they come from (check the data with "
            "np.isfinite; tf.debugging.enable_check_numerics() names the "
            f"op) and calibrate again; {_UNCHANGED}."
        )

    def _observer_owners(self):
        """``{observer name: (wrapper, which tensor)}`` for every quantizer."""
        return {
            quantizer.observer.name: (wrapper, role)
            for quantizer, wrapper, role in self._quantizer_roles()
        }

    def _label_quantizers(self):
        """Names each quantizer's tensor, for its NaN check's message."""
        for quantizer, wrapper, role in self._quantizer_roles():
            quantizer.label = (
                f"Layer {wrapper.name!r} ({inputs_lib.layer_class(wrapper)}) "
                f"{role}"
            )

    @property
    def check_finite(self) -> bool:
        """Whether training, evaluation and inference stop on NaN or inf.

        On (the default), every enabled quantizer checks the tensor it
        quantizes, since quantizing clamps inf (and, in some kernels, NaN)
        onto the grid and hides it. ``fit``, ``evaluate`` or ``predict``
        then stop with TensorFlow's ``InvalidArgumentError`` naming the
        first layer and tensor that held them. The check costs a read of
        each quantized tensor (the zoo ResNet's evaluation took 23%
        longer on a 2-core CPU); XLA
        (``jit_compile=True``) compiles it away.

        Example:

        >>> inputs = keras.Input((4,), name="features")
        >>> outputs = keras.layers.Dense(2, name="fc")(inputs)
        >>> sim = QuantizationSimModel(keras.Model(inputs, outputs))
        >>> sim.compute_encodings(np.ones((8, 4), "float32"))
        >>> try:
        ...     sim.model.predict(np.full((1, 4), np.nan, "float32"), verbose=0)
        ... except tf.errors.InvalidArgumentError as error:
        ...     print(error.message.split(" was given")[0].splitlines()[-1])
        Layer 'fc' (Dense) input 0
        >>> sim.check_finite = False
        >>> sim.model.predict(np.full((1, 4), np.inf, "float32"), verbose=0)
        array([[..., ...]], dtype=float32)
        """
        return all(q.check_finite for q, _, _ in self._quantizer_roles())

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        for quantizer, _, _ in self._quantizer_roles():
            quantizer.check_finite = bool(value)
        self._retrace()

    def _quantizer_roles(self):
        """``(quantizer, wrapper, which tensor)`` for every quantizer."""
        for wrapper in self.quant_wrappers():
            roles = [
                *(
                    (q, f"input {i}")
                    for i, q in enumerate(wrapper.input_quantizers)
                ),
                *(
                    (q, f"output {i}")
                    for i, q in enumerate(wrapper.output_quantizers)
                ),
                *(
                    (q, f"weight {k!r}")
                    for k, q in wrapper.param_quantizers.items()
                ),
                *(
                    (q, f"tensor {k!r}")
                    for k, q in wrapper.internal_quantizers.items()
                ),
            ]
            for quantizer, role in roles:
                yield quantizer, wrapper, role

    def _first_non_finite_output(self, batch, active):
        """The first layer whose output holds NaN or inf on ``batch``.

        Runs ``batch`` once, eagerly, through the sim with the calibrating
        quantizers passing values through (as while observing). Returns
        ``(layer, first bad sample or None, [its non-finite weights])``,
        or None when no output holds NaN or inf or the pass cannot run.
        """
        layers, outputs = [], []
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            try:
                tensors = keras.tree.flatten(layer.output)
            except (AttributeError, ValueError):
                continue  # not called in this model's graph
            layers.append((layer, len(tensors)))
            outputs.extend(tensors)
        enabled = [q.enabled for q in active]
        try:
            for quantizer in active:
                quantizer.enabled = False
            single = len(self.model.inputs) == 1
            probe = keras.Model(
                self.model.inputs[0] if single else self.model.inputs,
                outputs,
            )
            values = probe(batch[0] if single else list(batch), training=False)
        except Exception:  # a diagnosis only: the caller raises anyway
            return None
        finally:
            for quantizer, flag in zip(active, enabled):
                quantizer.enabled = flag
        values = iter(keras.tree.flatten(values))
        size = len(batch[0])
        for layer, count in layers:
            for _ in range(count):
                value = np.asarray(keras.ops.convert_to_numpy(next(values)))
                if value.dtype.kind != "f" or np.isfinite(value).all():
                    continue
                offset = None
                if value.ndim and len(value) == size:
                    rows = np.isfinite(value.reshape(size, -1)).all(axis=1)
                    offset = int(np.flatnonzero(~rows)[0])
                weights = [
                    weight.name
                    for weight in getattr(
                        getattr(layer, "layer", layer), "weights", []
                    )
                    if not np.isfinite(keras.ops.convert_to_numpy(weight)).all()
                ]
                return layer, offset, weights
        return None

    def _compute_param_encodings(self):
        # A weight grid depends on the weight alone: one whose weight,
        # settings and grid are what they were after it was last computed
        # is kept (calibrating again, the weights unchanged, is cheap).
        # Every weight is checked before any grid changes.
        computed = self.__dict__.setdefault("_param_grids", {})
        pending = []
        for wrapper in self.quant_wrappers():
            values = wrapper.weight_values()
            for key, quantizer in wrapper.param_quantizers.items():
                if id(quantizer) in self._frozen:
                    continue
                calibrated = quantizer.data_type == "int" or (
                    quantizer.scaled_float
                )
                if not quantizer.enabled or not calibrated:
                    continue
                weight = values[key]
                value = keras.ops.convert_to_numpy(weight)
                previous = computed.get(id(quantizer))
                if previous is not None and _same_state(
                    previous, _grid_state(quantizer, value)
                ):
                    continue
                finite = np.isfinite(value)
                if not finite.all():
                    raise ValueError(
                        f"Layer {wrapper.name!r} "
                        f"({inputs_lib.layer_class(wrapper)}): weight {key!r} "
                        f"holds {finite.size - int(finite.sum())} NaN or inf "
                        f"value(s) of {finite.size}, so it has no encoding. "
                        "Fix the weights (reload or retrain the model) and "
                        "calibrate again; no encoding was changed."
                    )
                pending.append((quantizer, weight, value))
        for quantizer, weight, value in pending:
            quantizer.observer.reset()
            quantizer.observer.update(weight)
            quantizer.compute_encoding()
            computed[id(quantizer)] = _grid_state(quantizer, value.copy())

    def initialize_from_first_batches(self, num_batches: int = 1) -> int:
        """Calibrates without a calibration set, as tfmot's quantize_model.

        Weight grids are computed now, from the weights. Each activation
        quantizer takes its range from the min and max of the first
        ``num_batches`` batches the model runs (in ``fit``, ``evaluate`` or
        ``predict``), then keeps it (or learns it, with a range-learning
        scheme). For QAT straight from a float model.

        Args:
            num_batches: batches to take the activation ranges from.
                Defaults to 1.

        Example:

        >>> model = zoo.load_model("resnet", compile=False)
        >>> sim = QuantizationSimModel(model)
        >>> sim.initialize_from_first_batches()
        >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
        >>> _ = sim.model.predict(images[:64], verbose=0)  # sets the ranges
        >>> sim.model.get_layer("stem_relu").output_quantizers[0].is_initialized
        True
        """
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(
                f"num_batches={num_batches!r}; use a whole number >= 1."
            )
        self._compute_param_encodings()
        for quantizer in self._activation_quantizers():
            if quantizer.enabled and quantizer.data_type == "int":
                quantizer.init_batches = num_batches
                quantizer.batches_seen.assign(0)
                quantizer.has_encoding.assign(0)
                quantizer._initialized = False
        self._retrace()

    def _switches(self):
        """Every quantizer's Python-side settings, baked into traced code."""
        return tuple(
            q.switches
            for wrapper in self.quant_wrappers()
            for q in wrapper.quantizers
        )

    def _retrace(self):
        """Drops the model's compiled functions if a quantizer switch changed.

        Grids live in variables, so a new encoding needs no retrace; a
        switch (enabled, observing, bitwidth...) does.
        """
        switches = self._switches()
        if switches == getattr(self, "_traced_switches", None):
            return
        self._traced_switches = switches
        for attribute in (
            "predict_function",
            "test_function",
            "train_function",
        ):
            if hasattr(self.model, attribute):
                setattr(self.model, attribute, None)

    def _observe(self, data, batch_size=32, verbose=0):
        """Runs ``data`` through the observing model, traced once per setup.

        A function of its own (not ``predict``), kept per quantizer setup and
        with an unknown batch size, so calibrating again, or a last smaller
        batch, does not trace again.

        Args:
            data: a :class:`~aimet_keras.sim.inputs.CalibrationData`, or
                data it takes.
            batch_size: batch size for arrays. Defaults to 32.
            verbose: as :meth:`compute_encodings` takes it. Defaults to 0.

        Returns:
            The number of batches run.

        Raises:
            _NonFiniteBatch: when an observer met NaN or inf, with the batch.
        """
        import tensorflow as tf

        if not isinstance(data, inputs_lib.CalibrationData):
            data = inputs_lib.CalibrationData(self.model, data, batch_size)
        strategy = self.model.distribute_strategy
        if strategy.num_replicas_in_sync > 1:
            return self._observe_distributed(strategy, data)
        switches = self._switches()
        cache = self.__dict__.setdefault("_observe_functions", {})
        if switches not in cache:
            model = self.model
            weights = self._constant_quantized_weights()
            signature = [
                tf.TensorSpec((None, *t.shape[1:]), t.dtype)
                for t in model.inputs
            ] + [tf.TensorSpec(w.shape, w.dtype) for _, _, w, _ in weights]
            num_inputs = len(model.inputs)

            def forward(*tensors):
                inputs, values = tensors[:num_inputs], tensors[num_inputs:]
                replacements = {}
                for (wrapper, key, _, _), value in zip(weights, values):
                    replacements.setdefault(wrapper, {})[key] = value
                with contextlib.ExitStack() as stack:
                    for wrapper, replaced in replacements.items():
                        stack.enter_context(wrapper.replaced_weights(replaced))
                    model(
                        inputs[0] if len(inputs) == 1 else list(inputs),
                        training=False,
                    )

            # A concrete function: each sim traces once, and TensorFlow does
            # not count that as a retrace of the shared ``forward`` (a
            # tf.function of it warned of retracing after a few sims).
            # No autograph: nothing branches on tensors, and converting the
            # model's calls took half of calibration on ResNet50.
            function = tf.function(
                forward, input_signature=signature, autograph=False
            ).get_concrete_function()
            cache[switches] = (function, weights)
        forward, weights = cache[switches]
        # Weights do not change while activations are observed: each is
        # quantized once here, not again on every batch, and the traced
        # pass takes the values as arguments (so a cached pass never holds
        # stale weights).
        quantized = [quantizer(weight) for _, _, weight, quantizer in weights]
        progress = progress_lib.progress_bar(
            verbose, data.num_batches, "Calibrating", "batch"
        )
        count = 0
        for batch in data.batches():
            # Checked here, not only by the observers' assertion, which
            # TensorFlow's runtime also logs to stderr.
            if data.non_finite_input(count, batch) is not None:
                raise _NonFiniteBatch("NaN or inf in the inputs", count, batch)
            try:
                forward(*batch, *quantized)
            except tf.errors.InvalidArgumentError as error:
                if _non_finite_observer(error) is None:
                    raise
                raise _NonFiniteBatch(error, count, batch) from None
            count += 1
            if progress is not None:
                progress.update(count, finalize=count == data.num_batches)
        return count

    def _constant_quantized_weights(self):
        """``[(wrapper, weight key, variable, quantizer)]``: weights whose
        quantized value a forward pass may take as given.

        Every enabled param quantizer's weight, except those of layers that
        derive the quantized tensor themselves (a folded batch norm).
        """
        return [
            (wrapper, wrapper_lib.weight_key(wrapper.layer, weight), weight, q)
            for wrapper in self.quant_wrappers()
            if not wrapper.quantizes_own_weights
            for weight, q in wrapper.quantized_weights()
            if q.enabled
        ]

    def _observe_distributed(self, strategy, data):
        """:meth:`_observe` on every replica of the model's strategy.

        Each global batch is split over the replicas, and the observers
        gather the shards back (see :mod:`aimet_keras.quant.observers`), so
        the statistics are those of one device seeing the whole batch.
        """
        import tensorflow as tf

        dataset = data.as_dataset()
        distributed = strategy.experimental_distribute_dataset(dataset)
        # The spec has an unknown batch size: one trace per setup and input.
        key = (self._switches(), distributed.element_spec)
        cache = self.__dict__.setdefault("_observe_functions", {})
        if key not in cache:
            model = self.model

            def replica_forward(*inputs):
                model(
                    inputs[0] if len(inputs) == 1 else list(inputs),
                    training=False,
                )

            def forward(element):
                strategy.run(
                    replica_forward, args=tuple(tf.nest.flatten(element))
                )

            # No autograph, as in Keras' own steps: nothing here branches on
            # tensors, and converting the model's calls costs seconds.
            cache[key] = tf.function(
                forward,
                input_signature=[distributed.element_spec],
                autograph=False,
            )
        forward = cache[key]
        # A batch per call, the loop in Python: replicas meet at each gather,
        # which tf.distribute does not allow inside graph control flow.
        count = 0
        for element in distributed:
            try:
                forward(element)
            except tf.errors.InvalidArgumentError as error:
                if _non_finite_observer(error) is None:
                    raise
                # The batch again, whole, for the diagnosis.
                batch = next(iter(dataset.skip(count).take(1)), None)
                raise _NonFiniteBatch(
                    error, count, None if batch is None else list(batch)
                ) from None
            count += 1
        return count

    def quantizer_args(self) -> dict:
        """AIMET's ``quantizer_args``: the sim's global settings."""
        init_scheme = {"tf": "post_training_tf"}.get(
            self._observer_scheme, f"post_training_{self._observer_scheme}"
        )
        symmetric = self.config.params.get("weight")
        symmetric = getattr(symmetric, "is_symmetric", None)
        if symmetric is None:
            symmetric = bool(self.config.param_defaults.is_symmetric)
        return dict(
            self._args,
            is_symmetric=bool(symmetric),
            per_channel_quantization=bool(self.config.per_channel_quantization),
            quant_scheme=init_scheme,
        )

    def export(
        self,
        path: str | os.PathLike,
        filename_prefix: str,
        encoding_version: str = "0.6.1",
    ) -> dict[str, pathlib.Path]:
        """Writes the FP32 SavedModel, the sim and its encodings.

        Writes ``<path>/<filename_prefix>/`` (a TensorFlow SavedModel of the
        FP32 model: the sim's float weights, no quantizer ops),
        ``<filename_prefix>.keras`` (the simulated model) and
        ``<filename_prefix>.encodings`` (AIMET's format), all or nothing.
        The encodings name tensors of the SavedModel's graph; the naming is
        documented in :mod:`aimet_keras.sim.export`.

        Args:
            path: the output folder (created if missing).
            filename_prefix: the files' stem, e.g. ``"resnet_w8a8"``.
            encoding_version: ``"0.6.1"`` (default), ``"1.0.0"`` or
                ``"2.0.0"``.

        Returns:
            ``{"saved_model": Path, "keras": Path, "encodings": Path}``.

        Raises:
            ValueError: when the sim is not calibrated, naming a quantizer.

        Example:

        >>> import tempfile
        >>> model = zoo.load_model("resnet", compile=False)
        >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
        >>> sim = QuantizationSimModel(model)
        >>> sim.compute_encodings(images[:100])
        >>> paths = sim.export(tempfile.mkdtemp(), "resnet_w8a8")
        >>> paths["encodings"].name
        'resnet_w8a8.encodings'
        """
        return export_lib.export_sim(
            self, path, filename_prefix, encoding_version
        )

    def load_encodings_to_sim(
        self, encoding_file_path: str | os.PathLike
    ) -> None:
        """Sets every quantizer's grid from an encodings file.

        Reads the files :meth:`export` writes and AIMET's 0.6.1, 1.0.0 and
        2.0.0 files with the same tensor names. Quantizers take the file's
        bitwidth and symmetry; enabled quantizers the file does not name are
        disabled, as in AIMET.

        Args:
            encoding_file_path: the ``.encodings`` file.

        Raises:
            ValueError: for a tensor the model does not have, naming it.
        """
        export_lib.load_encodings(self, encoding_file_path)

    def set_and_freeze_param_encodings(
        self, encoding_path: str | os.PathLike
    ) -> None:
        """Sets weight grids from a file and keeps them from then on.

        For AdaRound's output (a flat param file) or any encodings file:
        the param encodings it names are set and frozen, so
        :meth:`compute_encodings` leaves them and range learning does not
        train them. Activation encodings in the file are ignored.

        Args:
            encoding_path: the encodings file.

        Raises:
            ValueError: for a param the model does not have, naming it.
        """
        names = export_lib.load_encodings(self, encoding_path, params_only=True)
        table = export_lib._quantizer_table(self)
        for name in names:
            quantizer = table[name][0]
            self._frozen.add(id(quantizer))
            quantizer.untie()
            if quantizer.data_type == "int":
                quantizer.encoding_min.trainable = False
                quantizer.encoding_max.trainable = False

    def summary(self, print_fn: typing.Callable[[str], object] = print) -> None:
        """Prints which tensors are quantized how, a row per layer."""
        print_fn(
            f"QuantizationSimModel of {self.model.name!r} ({self.quant_scheme})"
        )
        for wrapper in self.quant_wrappers():
            spec = self.specs[wrapper.name]

            def describe(quantizer):
                if not quantizer.enabled:
                    return "-"
                kind = "sym" if quantizer.is_symmetric else "asym"
                axis = (
                    "" if quantizer.axis is None else f" axis={quantizer.axis}"
                )
                if quantizer.data_type == "float":
                    return f"{quantizer.type_name}{axis}"
                return f"{quantizer.type_name} {kind}{axis}"

            ins = ", ".join(describe(q) for q in wrapper.input_quantizers)
            outs = ", ".join(describe(q) for q in wrapper.output_quantizers)
            params = ", ".join(
                f"{n}: {describe(q)}"
                for n, q in wrapper.param_quantizers.items()
            )
            print_fn(
                f"  {wrapper.name} ({spec.op_type}) in [{ins}] out [{outs}]"
                + (f" params {{{params}}}" if params else "")
            )


def quantize_model(
    model: keras.Model | str | os.PathLike,
    calibration_data: object = None,
    fold_batch_norms: bool = True,
    **options: object,
) -> keras.Model:
    """Returns a Keras model that simulates quantized inference of ``model``.

    The one-liner over :class:`QuantizationSimModel`: rewrites the model
    into the layers integer runtimes compute
    (:func:`~aimet_keras.graph.split_for_deployment`, exact), folds batch
    norms into the layers before them, builds the simulation, calibrates
    it on ``calibration_data`` and returns ``sim.model``, a plain Keras
    model (predict, evaluate, fit, save) that
    :func:`~aimet_keras.export_tflite` and :func:`~aimet_keras.export_onnx`
    take as it is. The caller's model is left unchanged. Without
    calibration data, like tfmot's ``quantize_model(model)``, weight grids
    come from the weights and activation ranges from the first batch the
    model runs (see
    :meth:`QuantizationSimModel.initialize_from_first_batches`): ready
    for quantization-aware training with ``fit``.

    Args:
        model: a built Functional or Sequential ``keras.Model``, or the
            path of a ``.keras`` or ``.h5`` file.
        calibration_data: a batched ``tf.data.Dataset``, an array, or a
            list or dict of arrays for several inputs (see
            :meth:`QuantizationSimModel.compute_encodings`), used to
            calibrate. Defaults to None (ranges from the first batch).
        fold_batch_norms: fold each foldable ``BatchNormalization`` first
            (:func:`~aimet_keras.ptq.fold_all_batch_norms`). A batch norm
            left unfolded is simulated as a layer of its own, which the
            exporters refuse. Defaults to True; False keeps them, for
            quantization-aware training that folds them later
            (:func:`~aimet_keras.ptq.fold_all_batch_norms_to_scale`).
        **options: :class:`QuantizationSimModel` arguments
            (``quant_scheme``, ``default_output_bw``, ``default_param_bw``,
            ``config_file``, ``default_data_type``).

    Returns:
        The simulated ``keras.Model`` (not compiled: compile it for
        ``evaluate`` or ``fit``).

    Raises:
        FileNotFoundError, TypeError, ValueError: as
            :class:`QuantizationSimModel` and
            :meth:`QuantizationSimModel.compute_encodings` raise them: for a
            missing model file, something that is not a model, calibration
            data of the wrong shape or dtype, or NaN or inf in it.

    Example:

    >>> model = zoo.load_model("resnet")
    >>> images, labels = zoo.load_fashion_mnist_slice("calibration")
    >>> quantized = quantize_model(model, images[:200])
    >>> quantized.predict(images[:2], verbose=0).shape
    (2, 10)
    >>> any(isinstance(layer.layer, keras.layers.BatchNormalization)
    ...     for layer in quantized.layers if hasattr(layer, "layer"))
    False
    """
    # Here: the ptq package imports this module.
    from aimet_keras.ptq import batch_norm_fold

    model = deployment_lib.split_for_deployment(
        prepare_lib.prepare_model(
            inputs_lib.resolve_model(model),
            input_shape=options.pop("input_shape", None),
        )
    )
    if fold_batch_norms:
        model, _ = batch_norm_fold.fold_all_batch_norms(model)
    options.setdefault("in_place", True)  # already a copy
    sim = QuantizationSimModel(model, **options)
    if calibration_data is None:
        sim.initialize_from_first_batches()
    else:
        sim.compute_encodings(calibration_data)
    # So that the exporters take the model as they take its sim.
    sim.model._aimet_simulation = sim
    return sim.model


def as_simulation(
    sim: QuantizationSimModel | keras.Model,
) -> QuantizationSimModel:
    """The :class:`QuantizationSimModel` that ``sim`` is or came from.

    The exporters take a sim, or the Keras model :func:`quantize_model`
    returned (which keeps its sim).

    Raises:
        TypeError: for anything else, naming what was given and the fix.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> quantized = quantize_model(model, np.ones((4, 3), "float32"))
    >>> isinstance(as_simulation(quantized), QuantizationSimModel)
    True
    """
    if isinstance(sim, QuantizationSimModel):
        return sim
    found = getattr(sim, "_aimet_simulation", None)
    if isinstance(found, QuantizationSimModel) and found.model is sim:
        return found
    raise TypeError(
        f"Expected a QuantizationSimModel or the model quantize_model "
        f"returned, got {type(sim).__name__} "
        f"{getattr(sim, 'name', '')!r}. A simulated model loaded from a file "
        "has lost its sim: export the QuantizationSimModel (or the "
        "quantize_model result) before saving, or build the sim again "
        "and load its encodings (load_encodings_to_sim)."
    )
