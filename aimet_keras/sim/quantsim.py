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

import dataclasses
import logging
import warnings

import keras
import numpy as np

from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import config as config_lib
from aimet_keras.sim import export as export_lib
from aimet_keras.sim import quantizer as quantizer_lib
from aimet_keras.sim import spec as spec_lib
from aimet_keras.sim import wrapper as wrapper_lib

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
            functional graph: see :func:`~aimet_keras.graph.prepare_model`).
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
        default_data_type: ``"int"`` or ``"float"`` (fp16). Defaults to
            ``"int"``.
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
        model,
        quant_scheme="tf_enhanced",
        rounding_mode="nearest",
        default_output_bw=8,
        default_param_bw=8,
        config_file=None,
        default_data_type="int",
        in_place=False,
        strict=False,
        input_shape=None,
    ):
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
        if default_data_type not in ("int", "float"):
            raise ValueError(
                f"default_data_type={default_data_type!r}; use 'int' or "
                "'float' (fp16)."
            )
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
        self._frozen = set()
        self._args = dict(
            activation_bitwidth=default_output_bw,
            param_bitwidth=default_param_bw,
            dtype=default_data_type,
        )
        self._observer_scheme, self._range_learning = _SCHEMES[quant_scheme]
        self._prepared = prepare_lib.prepare_model(
            model, input_shape=input_shape, copy=not in_place
        )
        self.config = config_lib.load_quantsim_config(config_file)
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

    def _quantizer(self, spec, name):
        # QuantizerSpec's fields are TensorQuantizer's arguments.
        return quantizer_lib.TensorQuantizer(
            **dataclasses.asdict(spec),
            quant_scheme=self._observer_scheme,
            # Disabled quantizers get no gradient: nothing to learn.
            range_learning=self._range_learning
            and spec.data_type == "int"
            and spec.enabled,
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
                self._quantizer(s, f"{name}_output{i}")
                for i, s in enumerate(spec.outputs)
            ],
            {
                weight: self._quantizer(s, f"{name}_{weight.replace('/', '_')}")
                for weight, s in spec.params.items()
            },
            {
                tensor: self._quantizer(s, f"{name}_{tensor}")
                for tensor, s in spec.internals.items()
            },
        )

    def quant_wrappers(self):
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
        self, forward_pass_callback, forward_pass_callback_args=None
    ):
        """Calibrates every enabled quantizer.

        Weights are calibrated from their values; activations from the
        batches the forward pass runs. Activation quantizers that see no
        data are disabled, with a log message naming them (as AIMET does).

        Args:
            forward_pass_callback: AIMET's form, a function called as
                ``forward_pass_callback(sim.model, forward_pass_callback_args)``
                that runs calibration data through the model; or the data
                itself (a ``tf.data.Dataset`` or anything ``predict``
                accepts).
            forward_pass_callback_args: passed to the callback. Defaults to
                None.
        """
        self._compute_param_encodings()
        active = [
            q
            for q in self._activation_quantizers()
            if q.enabled and q.data_type == "int"
        ]
        for quantizer in active:
            quantizer.observer.reset()
            quantizer.observing = True
        try:
            if callable(forward_pass_callback):
                self._retrace()
                forward_pass_callback(self.model, forward_pass_callback_args)
            else:
                self._observe(forward_pass_callback)
        finally:
            for quantizer in active:
                quantizer.observing = False
        for quantizer in active:
            if int(quantizer.observer.num_updates.numpy()) == 0:
                quantizer.enabled = False
                _LOG.info("Quantizer %s saw no data: disabled.", quantizer.name)
            else:
                quantizer.compute_encoding()
        self._retrace()

    def _compute_param_encodings(self):
        # A weight grid depends on the weight alone: one whose weight,
        # settings and grid are what they were after it was last computed
        # is kept (calibrating again, the weights unchanged, is cheap).
        computed = self.__dict__.setdefault("_param_grids", {})
        for wrapper in self.quant_wrappers():
            values = wrapper.weight_values()
            for key, quantizer in wrapper.param_quantizers.items():
                if id(quantizer) in self._frozen:
                    continue
                if not quantizer.enabled or quantizer.data_type != "int":
                    continue
                weight = values[key]
                value = keras.ops.convert_to_numpy(weight)
                previous = computed.get(id(quantizer))
                if previous is not None and _same_state(
                    previous, _grid_state(quantizer, value)
                ):
                    continue
                quantizer.observer.reset()
                quantizer.observer.update(weight)
                quantizer.compute_encoding()
                computed[id(quantizer)] = _grid_state(quantizer, value.copy())

    def initialize_from_first_batches(self, num_batches=1):
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

    def _observe(self, data, batch_size=32):
        """Runs ``data`` through the observing model, traced once per setup.

        A function of its own (not ``predict``), kept per quantizer setup and
        with an unknown batch size, so calibrating again, or a last smaller
        batch, does not trace again.
        """
        import tensorflow as tf

        strategy = self.model.distribute_strategy
        if strategy.num_replicas_in_sync > 1:
            self._observe_distributed(strategy, data, batch_size)
            return
        switches = self._switches()
        cache = self.__dict__.setdefault("_observe_functions", {})
        if switches not in cache:
            model = self.model
            signature = [
                tf.TensorSpec((None, *t.shape[1:]), t.dtype)
                for t in model.inputs
            ]

            def forward(*inputs):
                model(
                    inputs[0] if len(inputs) == 1 else list(inputs),
                    training=False,
                )

            cache[switches] = tf.function(forward, input_signature=signature)
        forward = cache[switches]
        if isinstance(data, tf.data.Dataset):
            for element in data:
                if isinstance(element, tuple):
                    element = element[0]
                forward(*keras.tree.flatten(element))
            return
        arrays = keras.tree.flatten(data)
        for start in range(0, len(arrays[0]), batch_size):
            forward(*[a[start : start + batch_size] for a in arrays])

    def _observe_distributed(self, strategy, data, batch_size):
        """:meth:`_observe` on every replica of the model's strategy.

        Each global batch is split over the replicas, and the observers
        gather the shards back (see :mod:`aimet_keras.quant.observers`), so
        the statistics are those of one device seeing the whole batch.
        """
        import tensorflow as tf

        if isinstance(data, tf.data.Dataset):
            if isinstance(data.element_spec, tuple):
                data = data.map(lambda *element: element[0])
        else:
            arrays = tuple(keras.tree.flatten(data))
            data = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)
        distributed = strategy.experimental_distribute_dataset(data)
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
        for element in distributed:
            forward(element)

    def quantizer_args(self):
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

    def export(self, path, filename_prefix, encoding_version="0.6.1"):
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

    def load_encodings_to_sim(self, encoding_file_path):
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

    def set_and_freeze_param_encodings(self, encoding_path):
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
            if quantizer.data_type == "int":
                quantizer.encoding_min.trainable = False
                quantizer.encoding_max.trainable = False

    def summary(self, print_fn=print):
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
                return f"{quantizer.data_type}{quantizer.bitwidth} {kind}{axis}"

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


def quantize_model(model, calibration_data=None, **options):
    """Returns a Keras model that simulates quantized inference of ``model``.

    The one-liner over :class:`QuantizationSimModel`: builds the
    simulation, calibrates it on ``calibration_data`` and returns
    ``sim.model``, a plain Keras model (predict, evaluate, fit, save). The
    caller's model is left unchanged. Without calibration data, like
    tfmot's ``quantize_model(model)``, weight grids come from the weights
    and activation ranges from the first batch the model runs (see
    :meth:`QuantizationSimModel.initialize_from_first_batches`): ready for
    quantization-aware training with ``fit``.

    Args:
        model: a built Functional or Sequential ``keras.Model``.
        calibration_data: a ``tf.data.Dataset`` or anything ``predict``
            accepts, used to calibrate. Defaults to None (ranges from the
            first batch).
        **options: :class:`QuantizationSimModel` arguments
            (``quant_scheme``, ``default_output_bw``, ``default_param_bw``,
            ``config_file``, ``default_data_type``).

    Returns:
        The simulated ``keras.Model`` (not compiled: compile it for
        ``evaluate`` or ``fit``).

    Example:

    >>> model = zoo.load_model("resnet")
    >>> images, labels = zoo.load_fashion_mnist_slice("calibration")
    >>> quantized = quantize_model(model, images[:200])
    >>> quantized.predict(images[:2], verbose=0).shape
    (2, 10)
    """
    sim = QuantizationSimModel(model, **options)
    if calibration_data is None:
        sim.initialize_from_first_batches()
    else:
        sim.compute_encodings(calibration_data)
    return sim.model
