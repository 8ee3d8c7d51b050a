"""QuantizationWrapper: a layer run on quantized inputs and weights.

The wrapper holds one :class:`~aimet_keras.sim.TensorQuantizer` per input
tensor, per output tensor and per weight of the layer it wraps (AIMET's
``QcQuantizeWrapper``). Weights are quantized without touching their
variables: the layer runs inside a ``keras.StatelessScope`` that maps each
weight to its quantized value, so gradients reach the float weights through
the quantizer's straight-through estimator, and state the layer assigns in
the scope (BatchNormalization's moving statistics in training) is written
back afterwards. With every quantizer disabled the wrapper computes exactly
what the layer computes.
"""

from __future__ import annotations

import contextlib
import typing

import keras

from aimet_keras.quant import quantize as quantize_lib
from aimet_keras.sim import integer_accumulation
from aimet_keras.sim import internals as internals_lib
from aimet_keras.sim import quantizer as quantizer_lib

if typing.TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["QuantizationWrapper", "weight_key"]

# Element-wise layers whose inference XLA fuses with their quantizers
# (convolutions stay out: XLA's CPU depthwise kernels are slow).
_ELEMENTWISE = (
    "BatchNormalization",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Activation",
    "Add",
    "Subtract",
    "Multiply",
    "Maximum",
    "Minimum",
    "Average",
)


def weight_key(layer: keras.layers.Layer, variable: keras.Variable) -> str:
    """A weight's name within its layer: ``"kernel"``, ``"query/kernel"``.

    Keras names a variable by its path (``"mha/query/kernel"``); a layer's
    own weights are keyed by their name and a sublayer's by the path below
    the layer, so that MultiHeadAttention's four kernels stay apart.

    Example:

    >>> dense = keras.layers.Dense(2, name="fc")
    >>> dense.build((None, 3))
    >>> weight_key(dense, dense.kernel)
    'kernel'
    """
    path = getattr(variable, "path", variable.name)
    # A sublayer of an inlined composite (aimet_keras.graph.inline) was
    # built, and its variables named, under the composite's path: its own
    # path ("encoder/attention") prefixes them, not its (new) name.
    for owner in (getattr(layer, "path", None), layer.name):
        if owner and path.startswith(f"{owner}/"):
            return path[len(owner) + 1 :]
    return variable.name


def _takes_switch(layer):
    """Whether ``layer.call`` picks its frozen output itself (one pass)."""
    import inspect

    return "statistics_switch" in inspect.signature(layer.call).parameters


def _tensor_leaves(structure):
    """The tensors among ``structure``'s leaves (not Python constants)."""
    return [
        x
        for x in keras.tree.flatten(structure)
        if isinstance(x, keras.KerasTensor) or keras.ops.is_tensor(x)
    ]


def _with_constants(args, constants):
    """``args`` with ``[position, value]`` constants put back in place."""
    if not constants:
        return args
    args = list(args)
    for position, value in sorted(constants, key=lambda pair: pair[0]):
        args.insert(int(position), value)
    return tuple(args)


def _quantize_leaves(structure, quantizers):
    """``structure`` with its tensor leaves passed through ``quantizers``.

    Integer and boolean tensors (indices, masks) have nothing to quantize:
    they pass unchanged, their quantizer unused.
    """
    quantizers = iter(quantizers)

    def quantize(x):
        if not (isinstance(x, keras.KerasTensor) or keras.ops.is_tensor(x)):
            return x
        quantizer = next(quantizers)
        is_float = keras.backend.is_float_dtype(
            keras.backend.standardize_dtype(x.dtype)
        )
        return quantizer(x) if is_float else x

    return keras.tree.map_structure(quantize, structure)


@keras.saving.register_keras_serializable(package="aimet_keras")
class QuantizationWrapper(keras.layers.Layer):
    """Runs a built layer with quantized inputs, weights and outputs.

    Args:
        layer: the built Keras layer, or ``keras.ops`` operation, to wrap.
            The wrapper takes its name.
        input_quantizers: one :class:`TensorQuantizer` per tensor in the
            layer's positional arguments, flattened in order (constants
            such as the ``1.0`` of ``keras.ops.add(x, 1.0)`` are not
            tensors).
        output_quantizers: one per output tensor, flattened in order.
        param_quantizers: ``{weight name: TensorQuantizer}`` for the layer's
            own weights (``"kernel"``, ``"bias"``, ...; a sublayer's weight
            as ``"query/kernel"``, see :func:`weight_key`); weights not
            named stay float.
        internal_quantizers: ``{tensor name: TensorQuantizer}`` for tensors
            inside the layer; for MultiHeadAttention the names in
            :data:`~aimet_keras.sim.attention.ATTENTION_TENSORS`, for a
            decomposed LayerNormalization those in
            :data:`~aimet_keras.sim.layer_norm.LAYER_NORM_TENSORS`. Defaults
            to none. Per-tensor only.

    Input shape:
        As the wrapped layer.

    Output shape:
        As the wrapped layer.

    Example:

    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 3))
    >>> wrapped = QuantizationWrapper(
    ...     dense,
    ...     input_quantizers=[TensorQuantizer(enabled=False)],
    ...     output_quantizers=[TensorQuantizer(enabled=False)],
    ...     param_quantizers={"kernel": TensorQuantizer(enabled=False)},
    ... )
    >>> x = np.ones((1, 3), "float32")
    >>> bool(np.all(wrapped(x).numpy() == dense(x).numpy()))
    True
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        input_quantizers: object = (),
        output_quantizers: object = (),
        param_quantizers: dict | None = None,
        internal_quantizers: dict | None = None,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("name", layer.name)
        super().__init__(**kwargs)
        if not getattr(layer, "built", True):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is not built; "
                "build it (for example by calling it or with "
                "build_from_config) before wrapping it."
            )
        self.layer = layer
        self.input_quantizers = list(input_quantizers)
        self.output_quantizers = list(output_quantizers)
        self.param_quantizers = dict(param_quantizers or {})
        self.internal_quantizers = dict(internal_quantizers or {})
        # QAT switches: see aimet_keras.qat. Not saved: they belong to a
        # training run.
        self.__dict__["_statistics_frozen"] = False
        if self.internal_quantizers:
            known = internals_lib.internal_tensors(layer)
            if not known:
                raise ValueError(
                    f"Layer {layer.name!r} ({type(layer).__name__}) has no "
                    "inner tensors aimet_keras can quantize; only "
                    "MultiHeadAttention, LayerNormalization, an Add of "
                    "three or more inputs and a swish or hard sigmoid "
                    "Activation take internal_quantizers."
                )
            unknown = set(self.internal_quantizers) - set(known)
            if unknown:
                raise ValueError(
                    f"Layer {layer.name!r}: unknown internal tensors "
                    f"{sorted(unknown)}; use {known}."
                )
        for quantizer in self.internal_quantizers.values():
            if not quantizer.built:
                quantizer.build((None,))  # per tensor: any shape will do
        weights = {
            weight_key(layer, w): w for w in getattr(layer, "weights", [])
        }
        for name in self.param_quantizers:
            if name not in weights:
                raise ValueError(
                    f"Layer {layer.name!r} has no weight {name!r}; its "
                    f"weights are {sorted(weights)}."
                )
        for name, quantizer in self.param_quantizers.items():
            if not quantizer.built:
                quantizer.build(weights[name].shape)

    def build(self, *args: object, **kwargs: object) -> None:
        """Marks the wrapper built; its parts are built elsewhere.

        The wrapped layer and the param quantizers are built in the
        constructor; input and output quantizers in compute_output_spec,
        where every argument's shape is known.
        """

    def quantized_weights(self) -> list:
        """``[(weight variable, its quantizer)]`` for every param quantizer."""
        weights = {
            weight_key(self.layer, w): w
            for w in getattr(self.layer, "weights", [])
        }
        return [
            (weights[name], quantizer)
            for name, quantizer in self.param_quantizers.items()
        ]

    @property
    def quantizes_own_weights(self) -> bool:
        """Whether the wrapped layer applies its weight quantizers itself.

        A layer whose quantized tensor is computed from its variables (such
        as :class:`~aimet_keras.qat.FoldedBatchNorm`, which quantizes the
        kernel with batch norm folded in) sets ``quantizes_own_weights =
        True``, takes a ``weight_quantizers`` argument and defines
        ``quantized_weight_values()``.
        """
        return bool(getattr(self.layer, "quantizes_own_weights", False))

    def weight_values(self) -> dict:
        """``{weight key: tensor}``: what each param quantizer quantizes.

        The weight variable itself, unless the layer quantizes its own
        weights (then the tensor it derives, such as a folded kernel).
        """
        if self.quantizes_own_weights:
            return dict(self.layer.quantized_weight_values())
        return {
            weight_key(self.layer, w): w for w, _ in self.quantized_weights()
        }

    def _check_count(self, kind, quantizers, tensors):
        if len(quantizers) != len(tensors):
            raise ValueError(
                f"QuantizationWrapper {self.name}: the layer has "
                f"{len(tensors)} {kind} tensor(s) but {len(quantizers)} "
                f"{kind} quantizer(s) were given."
            )

    def __call__(self, *args, **kwargs):
        # Keras layers take tensors positionally, but a wrapped keras.ops
        # call takes what the op took (``x + 3.0`` in a functional model is
        # an Add of a tensor and 3.0): Python constants travel as
        # [position, value] pairs and are put back in call.
        constants = [
            [i, a] for i, a in enumerate(args) if not _tensor_leaves(a)
        ]
        if constants and len(constants) < len(args):
            args = tuple(a for a in args if _tensor_leaves(a))
            kwargs["positional_constants"] = constants
        return super().__call__(*args, **kwargs)

    def compute_output_spec(self, *args, positional_constants=None, **kwargs):
        args = _with_constants(args, positional_constants)
        kwargs.pop("training", None)
        inputs = _tensor_leaves((args, kwargs))
        self._check_count("input", self.input_quantizers, inputs)
        for quantizer, tensor in zip(self.input_quantizers, inputs):
            if not quantizer.built:
                quantizer.build(tensor.shape)
        spec = self.layer.compute_output_spec(*args, **kwargs)
        outputs = keras.tree.flatten(spec)
        self._check_count("output", self.output_quantizers, outputs)
        for quantizer, tensor in zip(self.output_quantizers, outputs):
            if not quantizer.built:
                quantizer.build(tensor.shape)
        return spec

    @property
    def statistics_frozen(self) -> bool:
        """Whether a batch norm in training normalizes with its moving
        statistics and leaves them as they are (QAT's BN freezing)."""
        return self.__dict__["_statistics_frozen"]

    @statistics_frozen.setter
    def statistics_frozen(self, frozen: bool) -> None:
        self.__dict__["_statistics_frozen"] = bool(frozen)
        switch = self.__dict__.get("_statistics_switch")
        if switch is not None:
            switch.assign(bool(frozen))

    def use_statistics_switch(self) -> None:
        """Makes :attr:`statistics_frozen` a variable the traced step reads.

        After this, a training call computes both the batch-statistics and
        the frozen output (a batch norm is cheap next to the layers around
        it) and picks one by the variable, so flipping
        :attr:`statistics_frozen` during ``fit`` needs no retrace. Returns
        True where the switch is new (a step traced before does not read
        it).
        """
        if "_statistics_switch" in self.__dict__:
            return False
        import tensorflow as tf

        self.__dict__["_statistics_switch"] = tf.Variable(
            self.statistics_frozen, trainable=False, name="statistics_frozen"
        )
        return True

    def call(self, *args, training=None, positional_constants=None, **kwargs):
        args = _with_constants(args, positional_constants)
        fused = self._fused_inference(training, args, kwargs)
        if fused is not None:
            return fused(*args, **kwargs)
        integer = self._integer_inference(training, args, kwargs)
        if integer is not None:
            return integer
        return self._quantized_call(args, kwargs, training)

    def _integer_inference(self, training, args, kwargs):
        """Inference on integer levels for a convolution or Dense, as the
        integer kernels of an export compute it (see
        :mod:`aimet_keras.sim.integer_accumulation`); None where that does
        not apply."""
        if (
            training
            or kwargs
            or len(args) != 1
            or self.internal_quantizers
            or quantizer_lib.override_active()
            or self.__dict__.get("_replaced_weights")
            or len(self.input_quantizers) != 1
        ):
            return None
        (inputs,) = _quantize_leaves(args, self.input_quantizers)
        outputs = integer_accumulation.integer_call(self, inputs)
        if outputs is None:
            return None
        return self.output_quantizers[0](outputs)

    def _fused_inference(self, training, args, kwargs):
        """One XLA kernel for an element-wise layer and its quantizers.

        In inference inside a graph, an element-wise layer (ReLU, Add,
        BatchNormalization...) and its calibrated quantizers compile
        together, so the simulation reads and writes the tensor once, as the
        float layer does, where its tensors are large enough to pay for the
        compile (:func:`~aimet_keras.quant.quantize.fusion_pays_off`).
        Returns None where that does not apply. The function is kept per
        quantizer setup, since traced code bakes the switches in.
        """
        import tensorflow as tf

        if (
            training
            or tf.executing_eagerly()
            or not isinstance(self.layer, keras.layers.Layer)
            or type(self.layer).__name__ not in _ELEMENTWISE
            or self.internal_quantizers
            or quantizer_lib.override_active()
            # Replaced weights are tensors of the caller's trace: a kept
            # function would hold them past it.
            or self.__dict__.get("_replaced_weights")
        ):
            return None
        if not all(
            quantize_lib.fusion_pays_off(tensor.shape)
            for tensor in _tensor_leaves((args, kwargs))
        ):
            return None
        quantizers = self.quantizers
        if any(
            q.observing
            or q.range_learning
            or (q.init_batches and not q.is_initialized)
            for q in quantizers
        ):
            return None
        key = tuple(q.switches for q in quantizers)
        cache = self.__dict__.setdefault("_fused_functions", {})
        if key not in cache:
            cache[key] = tf.function(
                lambda *args, **kwargs: self._quantized_call(
                    args, kwargs, False
                ),
                jit_compile=True,
                reduce_retracing=True,
                autograph=False,
            )
        return cache[key]

    def _quantized_call(self, args, kwargs, training):
        inputs = _tensor_leaves((args, kwargs))
        self._check_count("input", self.input_quantizers, inputs)
        args, kwargs = _quantize_leaves((args, kwargs), self.input_quantizers)
        # Only weights whose quantizer is on are mapped: a mapped variable's
        # assignments stay in the scope (see the write-back below).
        replaced = self.__dict__.get("_replaced_weights") or {}
        if self.quantizes_own_weights:
            if replaced:
                raise ValueError(
                    f"QuantizationWrapper {self.name}: "
                    f"{type(self.layer).__name__} quantizes its own weights "
                    "and cannot take replaced weights; finalize it first "
                    "(aimet_keras.qat.finalize_batch_norm_folding)."
                )
            kwargs["weight_quantizers"] = {
                key: q for key, q in self.param_quantizers.items() if q.enabled
            }
            mapping = []
        else:
            mapping = [
                (w, replaced[id(w)] if id(w) in replaced else q(w))
                for w, q in self.quantized_weights()
                if q.enabled
            ]
        mapped = {id(w) for w, _ in mapping}
        if training:
            for regularizer in self.__dict__.get("_training_losses", ()):
                self.add_loss(regularizer(self))
        switch = self.__dict__.get("_statistics_switch") if training else None
        if isinstance(self.layer, keras.layers.Layer):
            # Frozen statistics: the layer normalizes with its moving
            # statistics and leaves them as they are (QAT's BN freezing).
            kwargs["training"] = training and (
                switch is not None or not self.statistics_frozen
            )
            if switch is not None and _takes_switch(self.layer):
                kwargs["statistics_switch"] = switch
        hooks, observed = contextlib.nullcontext(), []
        if self.internal_quantizers:

            def hook(name, tensor):
                quantizer = self.internal_quantizers[name]
                if quantizer.observing:
                    # Observers assign: they run after the stateless scope.
                    observed.append((quantizer, tensor))
                    return tensor
                return quantizer(tensor)

            hooks = internals_lib.internal_hooks(self.layer, hook)
        with hooks, keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = self.layer(*args, **kwargs)
            if switch is not None and "statistics_switch" not in kwargs:
                frozen = self.layer(*args, **{**kwargs, "training": False})
                outputs = keras.tree.map_structure(
                    lambda a, b: keras.ops.where(switch, a, b),
                    frozen,
                    outputs,
                )
        # State the layer assigned inside the scope (moving statistics) is
        # only recorded there: apply it to the real variables.
        for variable in getattr(self.layer, "variables", []):
            if id(variable) in mapped:
                continue
            value = scope.get_current_value(variable)
            if value is not None:
                if switch is not None:
                    value = keras.ops.where(switch, variable, value)
                variable.assign(value)
        for quantizer, tensor in observed:
            quantizer(tensor)
        flat = keras.tree.flatten(outputs)
        self._check_count("output", self.output_quantizers, flat)
        return _quantize_leaves(outputs, self.output_quantizers)

    @contextlib.contextmanager
    def replaced_weights(self, values: dict) -> Iterator[None]:
        """Runs the layer with given tensors for its quantized weights.

        For optimisers of the rounding (AdaRound, block reconstruction):
        inside the context, a call uses ``values[key]`` where it would use
        the quantized weight ``key`` (a :func:`weight_key`), so gradients
        reach whatever computed the tensor. Calls traced inside the context
        keep the replacement.

        Args:
            values: ``{weight key: tensor}`` for weights whose quantizer is
                enabled.

        Example:

        >>> dense = keras.layers.Dense(2, use_bias=False)
        >>> dense.build((None, 3))
        >>> wrapped = QuantizationWrapper(
        ...     dense, [TensorQuantizer(enabled=False)],
        ...     [TensorQuantizer(enabled=False)],
        ...     {"kernel": TensorQuantizer(quant_scheme="tf")})
        >>> with wrapped.replaced_weights({"kernel": np.ones((3, 2))}):
        ...     y = wrapped(np.ones((1, 3), "float32"))
        >>> y.numpy().tolist()
        [[3.0, 3.0]]
        """
        weights = dict(
            (weight_key(self.layer, w), w) for w, _ in self.quantized_weights()
        )
        unknown = set(values) - set(weights)
        if unknown:
            raise ValueError(
                f"QuantizationWrapper {self.name}: no quantized weights "
                f"{sorted(unknown)}; it has {sorted(weights)}."
            )
        replaced = {id(weights[key]): value for key, value in values.items()}
        # Not a tracked attribute: it holds tensors only while the context
        # lasts.
        self.__dict__["_replaced_weights"] = replaced
        try:
            yield
        finally:
            self.__dict__.pop("_replaced_weights", None)

    def add_training_loss(self, regularizer: object) -> None:
        """Adds ``regularizer(wrapper)`` to the loss of every training step.

        For QAT regularizers on this layer's quantized weights, such as
        oscillation dampening (:class:`~aimet_keras.qat.OscillationDampening`).
        Rebuild a compiled model's train function afterwards.

        Args:
            regularizer: ``QuantizationWrapper -> scalar tensor``.

        Example:

        >>> dense = keras.layers.Dense(1)
        >>> dense.build((None, 2))
        >>> wrapped = QuantizationWrapper(
        ...     dense, [TensorQuantizer(enabled=False)],
        ...     [TensorQuantizer(enabled=False)])
        >>> wrapped.add_training_loss(lambda w: keras.ops.sum(w.layer.kernel))
        >>> _ = wrapped(np.ones((1, 2), "float32"), training=True)
        >>> len(wrapped.losses)
        1
        """
        losses = self.__dict__.setdefault("_training_losses", [])
        losses.append(regularizer)

    def remove_training_loss(self, regularizer: object) -> None:
        """Removes a regularizer :meth:`add_training_loss` added."""
        losses = self.__dict__.get("_training_losses", [])
        if regularizer in losses:
            losses.remove(regularizer)

    @property
    def quantizers(self) -> list[quantizer_lib.TensorQuantizer]:
        """Every quantizer: inputs, outputs, params, then internal ones."""
        return [
            *self.input_quantizers,
            *self.output_quantizers,
            *self.param_quantizers.values(),
            *self.internal_quantizers.values(),
        ]

    def get_config(self) -> dict:
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            layer=serialize(self.layer),
            input_quantizers=[serialize(q) for q in self.input_quantizers],
            output_quantizers=[serialize(q) for q in self.output_quantizers],
            param_quantizers={
                name: serialize(q) for name, q in self.param_quantizers.items()
            },
            internal_quantizers={
                name: serialize(q)
                for name, q in self.internal_quantizers.items()
            },
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> QuantizationWrapper:
        deserialize = keras.saving.deserialize_keras_object
        config = dict(config)
        config["layer"] = deserialize(config["layer"])
        for key in ("input_quantizers", "output_quantizers"):
            config[key] = [deserialize(q) for q in config[key]]
        for key in ("param_quantizers", "internal_quantizers"):
            config[key] = {
                name: deserialize(q) for name, q in config.get(key, {}).items()
            }
        return cls(**config)
