"""QuantizationSimModel: a Keras model that simulates quantized inference.

The simulation is the caller's model cloned with every layer wrapped in a
:class:`~aimet_keras.sim.QuantizationWrapper` whose quantizers follow the
quantsim config (resolved by :func:`~aimet_keras.sim.resolve_layer_specs`).
``sim.model`` is a plain functional Keras model: it predicts, evaluates,
trains and saves like any other. The caller's model is never changed.

Status: functional and sequential models of built-in layers; export to the
encodings file, nested and subclassed models and quantize_model() follow.
"""

import dataclasses
import logging

import keras

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


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model; got {type(model).__name__}."
        )
    # Subclassed models never called symbolically have no inputs (or raise).
    try:
        model_inputs = model.inputs
    except (AttributeError, ValueError):
        model_inputs = None
    if not model_inputs:
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) has no symbolic "
            "inputs: QuantizationSimModel needs a built Functional or "
            "Sequential model. Build it with keras.Input, or rebuild a "
            "subclassed model as a functional one."
        )


class QuantizationSimModel:
    """Simulates quantized inference of a Keras model, AIMET's way.

    Args:
        model: a built Functional or Sequential ``keras.Model``; left as is.
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
    ):
        _check_model(model)
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
        self.quant_scheme = quant_scheme
        self._observer_scheme, self._range_learning = _SCHEMES[quant_scheme]
        self.specs = spec_lib.resolve_layer_specs(
            model,
            config_file,
            default_output_bw=default_output_bw,
            default_param_bw=default_param_bw,
            default_data_type=default_data_type,
        )
        self.model = keras.models.clone_model(
            model, clone_function=self._wrap_layer
        )
        for original, wrapped in zip(model.layers, self.model.layers):
            if isinstance(wrapped, wrapper_lib.QuantizationWrapper):
                wrapped.layer.set_weights(original.get_weights())

    def _quantizer(self, spec, name):
        # QuantizerSpec's fields are TensorQuantizer's arguments.
        return quantizer_lib.TensorQuantizer(
            **dataclasses.asdict(spec),
            quant_scheme=self._observer_scheme,
            range_learning=self._range_learning and spec.data_type == "int",
            name=name,
        )

    def _wrap_layer(self, layer):
        copy = layer.__class__.from_config(layer.get_config())
        copy.build_from_config(layer.get_build_config())
        spec = self.specs[layer.name]
        name = layer.name
        return wrapper_lib.QuantizationWrapper(
            copy,
            [
                self._quantizer(s, f"{name}_input{i}")
                for i, s in enumerate(spec.inputs)
            ],
            [
                self._quantizer(s, f"{name}_output{i}")
                for i, s in enumerate(spec.outputs)
            ],
            {
                weight: self._quantizer(s, f"{name}_{weight}")
                for weight, s in spec.params.items()
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
        for wrapper in self.quant_wrappers():
            weights = {w.name: w for w in wrapper.layer.weights}
            for name, quantizer in wrapper.param_quantizers.items():
                if quantizer.enabled and quantizer.data_type == "int":
                    quantizer.observer.reset()
                    quantizer.observer.update(weights[name])
                    quantizer.compute_encoding()
        active = [
            q
            for q in self._activation_quantizers()
            if q.enabled and q.data_type == "int"
        ]
        for quantizer in active:
            quantizer.observer.reset()
            quantizer.observing = True
        self._retrace()
        try:
            if callable(forward_pass_callback):
                forward_pass_callback(self.model, forward_pass_callback_args)
            else:
                self.model.predict(forward_pass_callback, verbose=0)
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

    def _retrace(self):
        """Drops compiled functions so the quantizer switches take effect."""
        for attribute in (
            "predict_function",
            "test_function",
            "train_function",
        ):
            if hasattr(self.model, attribute):
                setattr(self.model, attribute, None)

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
    caller's model is left unchanged.

    Args:
        model: a built Functional or Sequential ``keras.Model``.
        calibration_data: a ``tf.data.Dataset`` or anything ``predict``
            accepts, used to calibrate. Required for now: initialising
            ranges from the first ``fit`` batches comes with the QAT
            callbacks.
        **options: :class:`QuantizationSimModel` arguments
            (``quant_scheme``, ``default_output_bw``, ``default_param_bw``,
            ``config_file``, ``default_data_type``).

    Returns:
        The simulated ``keras.Model`` (not compiled: compile it for
        ``evaluate`` or ``fit``).

    Raises:
        ValueError: without calibration data, saying what to pass.

    Example:

    >>> model = zoo.load_model("resnet")
    >>> images, labels = zoo.load_fashion_mnist_slice("calibration")
    >>> quantized = quantize_model(model, images[:200])
    >>> quantized.predict(images[:2], verbose=0).shape
    (2, 10)
    """
    if calibration_data is None:
        raise ValueError(
            "quantize_model needs calibration_data (a tf.data.Dataset or an "
            "array of model inputs) to set the quantization ranges; a few "
            "hundred representative samples are enough."
        )
    sim = QuantizationSimModel(model, **options)
    sim.compute_encodings(calibration_data)
    return sim.model
