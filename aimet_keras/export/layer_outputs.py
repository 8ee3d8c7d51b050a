"""Per-layer outputs of the FP32 model, the sim and the TFLite model.

AIMET's ``layer_output_utils`` for Keras: run the same inputs through

* the FP32 model (:func:`fp32_layer_outputs`),
* the simulation (:func:`sim_layer_outputs`),
* the exported integer TFLite model (:func:`tflite_layer_outputs`, using
  the ``layer_tensors`` map :func:`~aimet_keras.export.export_tflite`
  returns),

each as ``{layer name: array}`` keyed by the same layer names, then
:func:`compare_layer_outputs` reports layer by layer, in graph order, how
far the target is from the simulation in steps of the layer's grid, and
names the first layer where it departs. :func:`save_layer_outputs` writes
them as ``.npy`` files, one per layer.

Example:

>>> from aimet_keras.export import layer_outputs as lo
>>> exported = export_tflite(sim, "out/model.tflite")  # doctest: +SKIP
>>> report = lo.compare_layer_outputs(
...     lo.sim_layer_outputs(sim, images),
...     lo.tflite_layer_outputs(exported, images),
...     grid_steps=lo.output_steps(sim))  # doctest: +SKIP
>>> print(report.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import pathlib
import typing
import warnings

import keras
import numpy as np

from aimet_keras.export import staging as staging_lib
from aimet_keras.graph import prepare as prepare_lib

if typing.TYPE_CHECKING:
    import os

    from aimet_keras.export.onnx import OnnxExport
    from aimet_keras.export.tflite import TFLiteExport
    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = [
    "LayerComparison",
    "LayerOutputReport",
    "compare_layer_outputs",
    "fp32_layer_outputs",
    "layer_probe",
    "onnx_layer_outputs",
    "output_steps",
    "save_layer_outputs",
    "sim_layer_outputs",
    "tflite_layer_outputs",
]


def layer_probe(model: keras.Model) -> tuple[list[str], keras.Model]:
    """A model returning every layer's output: ``(names, probe)``.

    ``probe(inputs)`` returns one tensor per name: the first output of the
    layer's first call, in graph order.

    Example:

    >>> inputs = keras.Input((4,), name="x")
    >>> hidden = keras.layers.Dense(3, name="fc1")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(hidden))
    >>> names, probe = layer_probe(model)
    >>> names, [tuple(t.shape) for t in probe(np.zeros((5, 4)))]
    (['fc1', 'fc2'], [(5, 3), (5, 2)])
    """
    names, tensors = [], []
    for site in prepare_lib.walk(model):
        name = site.operation.name
        if name in names or not site.outputs:
            continue
        names.append(name)
        tensors.append(site.outputs[0])
    # A single input stays a tensor: probe(batch) then matches its structure.
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return names, keras.Model(inputs, tensors)


def _site_outputs(model, inputs, batch_size):
    """``{layer: first output of its first call}`` of a functional model."""
    names, probe = layer_probe(model)
    tensors = probe.outputs
    values = probe.predict(inputs, batch_size=batch_size, verbose=0)
    if len(tensors) == 1:
        values = [values]
    return {name: np.asarray(v) for name, v in zip(names, values)}


def fp32_layer_outputs(
    sim: QuantizationSimModel, inputs: object, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Each layer's output in the sim's FP32 model.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel`.
        inputs: model inputs (an array, or a list for several inputs).
        batch_size: batch size of the run. Defaults to 256.

    Returns:
        ``{layer name: array}`` in graph order (a shared layer's first call).

    Example:

    >>> inputs = keras.Input((4,), name="x")
    >>> hidden = keras.layers.Dense(3, activation="relu", name="fc1")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(hidden))
    >>> sim = QuantizationSimModel(model, quant_scheme="tf")
    >>> images = np.random.default_rng(0).random((8, 4)).astype("float32")
    >>> sim.compute_encodings(images)
    >>> {k: v.shape for k, v in fp32_layer_outputs(sim, images).items()}
    {'fc1': (8, 3), 'fc2': (8, 2)}
    """
    return _site_outputs(sim._prepared, inputs, batch_size)


def sim_layer_outputs(
    sim: QuantizationSimModel, inputs: object, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Each layer's output in the simulation (after its output quantizer).

    Args:
        sim: a calibrated :class:`~aimet_keras.sim.QuantizationSimModel`.
        inputs: model inputs.
        batch_size: batch size of the run. Defaults to 256.

    Returns:
        ``{layer name: array}`` in graph order.

    Example:

    >>> inputs = keras.Input((4,), name="x")
    >>> hidden = keras.layers.Dense(3, activation="relu", name="fc1")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(hidden))
    >>> sim = QuantizationSimModel(model, quant_scheme="tf")
    >>> images = np.random.default_rng(0).random((8, 4)).astype("float32")
    >>> sim.compute_encodings(images)
    >>> outputs = sim_layer_outputs(sim, images)
    >>> step = output_steps(sim)["fc2"]
    >>> levels = outputs["fc2"] / step  # on fc2's grid: whole steps apart
    >>> levels -= levels.min()
    >>> bool(np.allclose(levels, np.round(levels), atol=1e-3))
    True
    """
    return _site_outputs(sim.model, inputs, batch_size)


def output_steps(sim: QuantizationSimModel) -> dict[str, float]:
    """``{layer name: its output grid's step}`` for quantized outputs.

    Example:

    >>> inputs = keras.Input((4,), name="x")
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    >>> sim = QuantizationSimModel(model, quant_scheme="tf")
    >>> sim.compute_encodings(np.linspace(-1, 1, 32).reshape(8, 4))
    >>> sorted(output_steps(sim))
    ['fc']
    """
    steps = {}
    for wrapper in sim.quant_wrappers():
        quantizer = wrapper.output_quantizers[:1]
        if quantizer and quantizer[0].enabled:
            encoding = quantizer[0].encoding
            if encoding is not None and not encoding.is_float:
                steps[wrapper.name] = float(np.max(encoding.delta))
    return steps


def _dequantize(values, details):
    params = details["quantization_parameters"]
    scales, zeros = params["scales"], params["zero_points"]
    if not np.issubdtype(values.dtype, np.integer) or scales.size == 0:
        return values.astype(np.float32)
    if scales.size > 1:
        shape = [1] * values.ndim
        shape[params["quantized_dimension"]] = scales.size
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return ((values.astype(np.float64) - zeros) * scales).astype(np.float32)


def _quantize_input(values, details):
    dtype = details["dtype"]
    if dtype == np.float32:
        return np.asarray(values, np.float32)
    scale, zero = details["quantization"]
    if not scale:
        # An integer input the model reads as it is (token ids, a mask).
        return np.asarray(values, dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero), info.min, info.max).astype(
        dtype
    )


def tflite_layer_outputs(
    exported: TFLiteExport, inputs: object, num_threads: int = 2
) -> dict[str, np.ndarray]:
    """Each layer's output in an exported TFLite model, dequantized.

    Args:
        exported: the :class:`~aimet_keras.export.tflite.TFLiteExport`
            :func:`~aimet_keras.export.export_tflite` returned.
        inputs: model inputs (float; quantized here for an integer-input
            model), one array per model input, or a dict keyed by input
            name.
        num_threads: interpreter threads. Defaults to 2.

    Returns:
        ``{layer name: array}`` for the layers TFLite keeps a tensor of
        (a layer fused into the next op has none).

    Example:

    >>> import tempfile
    >>> inputs = keras.Input((4,), name="x")
    >>> hidden = keras.layers.Dense(3, activation="relu", name="fc1")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(hidden))
    >>> sim = QuantizationSimModel(model, config_file="tflite_int8")
    >>> images = np.random.default_rng(0).random((8, 4)).astype("float32")
    >>> sim.compute_encodings(images)
    >>> exported = export_tflite(sim, f"{tempfile.mkdtemp()}/m.tflite")
    >>> {k: v.shape for k, v in tflite_layer_outputs(exported, images).items()}
    {'fc1': (8, 3), 'fc2': (8, 2)}
    """
    from aimet_keras.export import tflite as tflite_lib

    with warnings.catch_warnings():
        # Keeping every tensor is this function's purpose, not a mistake.
        warnings.filterwarnings(
            "ignore", message=".*experimental_preserve_all_tensors"
        )
        interpreter = tflite_lib.load_interpreter(
            model_path=str(exported.path),
            num_threads=num_threads,
            experimental_preserve_all_tensors=True,
        )
    details = interpreter.get_input_details()
    if isinstance(inputs, dict):
        inputs = [inputs[detail["name"]] for detail in details]
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for detail, values in zip(details, inputs):
        interpreter.resize_tensor_input(detail["index"], np.shape(values))
    interpreter.allocate_tensors()
    for detail, values in zip(details, inputs):
        interpreter.set_tensor(detail["index"], _quantize_input(values, detail))
    interpreter.invoke()
    by_name = {t["name"]: t for t in interpreter.get_tensor_details()}
    return {
        layer: _dequantize(
            interpreter.get_tensor(by_name[name]["index"]), by_name[name]
        )
        for layer, name in exported.layer_tensors.items()
        if name in by_name
    }


def onnx_layer_outputs(
    exported: OnnxExport, inputs: object
) -> dict[str, np.ndarray]:
    """Each layer's quantized output in an exported QDQ ONNX model.

    Runs the QDQ model in onnxruntime with the layers' dequantized outputs
    (:attr:`~aimet_keras.export.onnx.OnnxExport.layer_tensors`) added as
    graph outputs.

    Args:
        exported: the :class:`~aimet_keras.export.onnx.OnnxExport`
            :func:`~aimet_keras.export.export_onnx` returned.
        inputs: float model inputs, one array per model input, or a dict
            keyed by input name.

    Returns:
        ``{layer name: array}`` for the layers whose output the sim
        quantizes.

    Example:

    >>> import tempfile
    >>> from aimet_keras import export_onnx
    >>> inputs = keras.Input((4,), name="x")
    >>> hidden = keras.layers.Dense(3, activation="relu", name="fc1")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc2")(hidden))
    >>> sim = QuantizationSimModel(model, config_file="tflite_int8")
    >>> images = np.random.default_rng(0).random((8, 4)).astype("float32")
    >>> sim.compute_encodings(images)
    >>> exported = export_onnx(sim, f"{tempfile.mkdtemp()}/m.onnx")
    >>> {k: v.shape for k, v in onnx_layer_outputs(exported, images).items()}
    {'fc1': (8, 3), 'fc2': (8, 2)}
    """
    import onnx
    import onnxruntime

    model = onnx.load(str(exported.qdq_path))
    present = {o.name for o in model.graph.output}
    wanted = {
        layer: name
        for layer, name in exported.layer_tensors.items()
        if name not in present
    }
    for name in wanted.values():
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, None
            )
        )
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    if isinstance(inputs, dict):
        feed = {name: np.asarray(inputs[name]) for name in names}
    else:
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        feed = {
            name: np.asarray(values, np.float32)
            for name, values in zip(names, inputs)
        }
    outputs = [o.name for o in session.get_outputs()]
    values = dict(zip(outputs, session.run(outputs, feed)))
    return {
        layer: _keras_layout(values[name], exported.layer_shapes.get(layer))
        for layer, name in exported.layer_tensors.items()
        if name in values
    }


def _keras_layout(values, shape):
    """``values`` channels-last where tf2onnx left them channels-first."""
    if shape is None or values.ndim < 3 or values.shape[1:] == shape[1:]:
        return values
    moved = np.moveaxis(values, 1, -1)
    return moved if moved.shape[1:] == tuple(shape[1:]) else values


@dataclasses.dataclass(frozen=True)
class LayerComparison:
    """One layer's target output against the reference.

    Attributes:
        layer: the layer name.
        step: the layer's output grid step (None where not quantized).
        max_abs_diff: the largest absolute difference.
        mean_abs_diff: the mean absolute difference.
        max_steps: ``max_abs_diff / step`` (None without a step).
        off_fraction: the fraction of values more than one step apart
            (more than 1e-5 relative to the range without a step).
    """

    layer: str
    step: float
    max_abs_diff: float
    mean_abs_diff: float
    max_steps: float
    off_fraction: float


@dataclasses.dataclass(frozen=True)
class LayerOutputReport:
    """Layer-by-layer comparison, in graph order.

    Attributes:
        rows: a :class:`LayerComparison` per layer both sides have.
        missing: layers the reference has and the target does not (fused
            into a later op in TFLite, for example).
        first_departure: the first layer whose ``off_fraction`` exceeds the
            tolerance, or None.
        tolerance: that tolerance.
    """

    rows: tuple
    missing: tuple
    first_departure: str
    tolerance: float

    def to_markdown(self) -> str:
        """The rows as a Markdown table, the first departure marked."""
        lines = [
            "| layer | step | max abs diff | max (steps) | mean abs diff "
            "| > 1 step |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            mark = (
                " **<- first departure**"
                if row.layer == (self.first_departure)
                else ""
            )
            step = "—" if row.step is None else f"{row.step:.4g}"
            steps = "—" if row.max_steps is None else f"{row.max_steps:.2f}"
            lines.append(
                f"| {row.layer}{mark} | {step} | {row.max_abs_diff:.4g} | "
                f"{steps} | {row.mean_abs_diff:.3g} | "
                f"{row.off_fraction:.2%} |"
            )
        if self.missing:
            lines.append("")
            lines.append(
                "Not in the target (fused into the next op): "
                + ", ".join(self.missing)
            )
        return "\n".join(lines)


def compare_layer_outputs(
    reference: dict[str, np.ndarray],
    target: dict[str, np.ndarray],
    grid_steps: dict[str, float] | None = None,
    tolerance: float = 0.01,
) -> LayerOutputReport:
    """Reports, layer by layer, where ``target`` departs from ``reference``.

    Args:
        reference: ``{layer: array}``, usually :func:`sim_layer_outputs`.
        target: ``{layer: array}``, usually :func:`tflite_layer_outputs`.
        grid_steps: ``{layer: step}`` (:func:`output_steps`): differences
            are counted in steps of the layer's grid (a layer without one,
            such as max pooling, in the previous layer's); a target on the
            same grid may differ by one step where the integer kernel
            rounds differently. Defaults to None (no steps).
        tolerance: the fraction of values more than one step apart that
            marks a departure. Defaults to 0.01.

    Returns:
        A :class:`LayerOutputReport`.

    Example:

    >>> ref = {"a": np.array([0.0, 0.1, 0.2]), "b": np.array([1.0, 2.0])}
    >>> got = {"a": np.array([0.0, 0.1, 0.2]), "b": np.array([1.0, 2.5])}
    >>> report = compare_layer_outputs(ref, got, {"a": 0.1, "b": 0.1})
    >>> report.first_departure, report.rows[1].max_steps
    ('b', 5.0)
    """
    grid_steps = grid_steps or {}
    rows, missing, first, last_step = [], [], None, None
    for layer, expected in reference.items():
        if layer not in target:
            missing.append(layer)
            continue
        got = np.asarray(target[layer], np.float64)
        expected = np.asarray(expected, np.float64)
        if got.shape != expected.shape:
            if got.size != expected.size:
                raise ValueError(
                    f"Layer {layer!r}: the target's output has shape "
                    f"{got.shape}, the reference's {expected.shape}."
                )
            got = got.reshape(expected.shape)
        diff = np.abs(got - expected)
        # A layer without a grid of its own (max pooling, reshape) keeps
        # the grid of the layer before it in an integer model.
        step = grid_steps.get(layer, last_step)
        last_step = step
        if step:
            off = float(np.mean(diff > step * 1.001))
        else:
            span = float(np.ptp(expected)) or 1.0
            off = float(np.mean(diff > 1e-5 * span))
        row = LayerComparison(
            layer=layer,
            step=step,
            max_abs_diff=float(diff.max(initial=0.0)),
            mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
            max_steps=float(diff.max(initial=0.0) / step) if step else None,
            off_fraction=off,
        )
        rows.append(row)
        if first is None and off > tolerance:
            first = layer
    return LayerOutputReport(tuple(rows), tuple(missing), first, tolerance)


def save_layer_outputs(
    outputs: dict[str, np.ndarray], directory: str | os.PathLike
) -> list[pathlib.Path]:
    """Writes ``{layer: array}`` as ``<directory>/<layer>.npy`` files.

    Args:
        outputs: per-layer outputs, as the functions above return.
        directory: the folder (created).

    Returns:
        The list of written paths.

    Example:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> [p.name for p in save_layer_outputs({"fc": np.zeros(2)}, folder)]
    ['fc.npy']
    """
    directory = pathlib.Path(directory)
    targets = {
        layer: directory / f"{layer.replace('/', '_')}.npy" for layer in outputs
    }
    if not targets:
        directory.mkdir(parents=True, exist_ok=True)
        return []
    # All files or none: a failure midway leaves the folder as it was.
    with staging_lib.staged_files(targets) as staged:
        for layer, values in outputs.items():
            np.save(staged[layer], values)
    return list(targets.values())
