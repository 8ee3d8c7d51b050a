"""QuantAnalyzer: which layers break quantization, and why.

AIMET's ``QuantAnalyzer`` for Keras. One calibrated sim of the model is
built; its quantizers are then switched off and on layer by layer (no
recalibration), and the eval callback scores each setting:

* **weights only / activations only**: the accuracy with only the weight
  grids, or only the activation grids, on. Which half costs the accuracy.
* **per-layer sensitivity**: each layer quantized alone (its drop below
  FP32), and each layer left in float with everything else quantized (what
  it gives back). A layer that hurts shows in both.
* **per-layer MSE** (with :meth:`QuantAnalyzer.enable_per_layer_mse_loss`):
  the mean squared error between each layer's FP32 output and its output in
  the fully quantized sim, on unlabelled data.
* **ranges and histograms**: every activation's FP32 range against its
  grid, histograms of activations and weights, and per-channel weight
  ranges before and after cross-layer equalization (the picture in Nagel et
  al. 2019's data-free quantization paper).
* **exports** (``compare_exports=True``): the integer TFLite export and
  the QDQ ONNX export (in onnxruntime) run layer by layer against the sim,
  and the first layer where each departs.

:meth:`QuantAnalyzer.analyze` returns a :class:`QuantAnalysis` and writes
``quant_analysis.json``, the charts, and ``quant_analysis.html``: one
self-contained page (images embedded) with the layers ranked by harm.

Example:

>>> import tempfile
>>> model = zoo.load_model("resnet", compile=False)
>>> images, labels = zoo.load_fashion_mnist_slice("test")
>>> def accuracy(model):
...     predictions = model.predict(images[:200], verbose=0)
...     return float(np.mean(predictions.argmax(-1) == labels[:200]))
>>> analyzer = QuantAnalyzer(model, images[:64], accuracy)
>>> analysis = analyzer.analyze(  # doctest: +SKIP
...     default_param_bw=4, results_dir=tempfile.mkdtemp())
>>> analysis.ranked[0].name  # doctest: +SKIP
'stem_conv'
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import math
import pathlib
import typing

import numpy as np

from aimet_keras import _callbacks
from aimet_keras import _progress

if typing.TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from collections.abc import Sequence

    import keras

__all__ = ["LayerAnalysis", "QuantAnalysis", "QuantAnalyzer"]

HISTOGRAM_BINS = 64
# Layers shown in the histogram and weight-range pictures.
TOP_LAYERS = 8


@dataclasses.dataclass
class LayerAnalysis:
    """What the analyzer found for one layer.

    Attributes:
        name: the layer's name.
        layer_type: its class name.
        quantized_alone: the score with only this layer's quantizers on.
        float_alone: the score with every quantizer on but this layer's.
        mse: mean squared error of its output, quantized sim against FP32
            (None without :meth:`QuantAnalyzer.enable_per_layer_mse_loss`).
        activation_range: ``(min, max)`` of its FP32 output on the data.
        encoding_range: ``(min, max)`` of its output grid, or None.
        weight_range: ``(min, max)`` of its kernel, or None.
    """

    name: str
    layer_type: str
    quantized_alone: float
    float_alone: float
    mse: float | None = None
    activation_range: tuple | None = None
    encoding_range: tuple | None = None
    weight_range: tuple | None = None


@dataclasses.dataclass
class QuantAnalysis:
    """The analyzer's results.

    Attributes:
        fp32: the score of the FP32 model (every quantizer off).
        quantized: the score of the fully quantized sim.
        weights_only: the score with only weight grids on.
        activations_only: the score with only activation grids on.
        layers: a :class:`LayerAnalysis` per layer, in graph order.
        files: ``{name: path}`` of what was written (``json``, ``html``,
            the charts).
        export_comparison: the layer-by-layer TFLite comparison as
            Markdown, or None.
        first_departure: the first layer where TFLite departs from the sim,
            or None.
        onnx_comparison: the layer-by-layer comparison of the QDQ ONNX
            export (run in onnxruntime) as Markdown, or None.
        onnx_first_departure: the first layer where ONNX departs from the
            sim, or None.
        notes: what could not be analyzed, and why.
    """

    fp32: float
    quantized: float
    weights_only: float
    activations_only: float
    layers: list
    files: dict = dataclasses.field(default_factory=dict)
    export_comparison: str | None = None
    first_departure: str | None = None
    onnx_comparison: str | None = None
    onnx_first_departure: str | None = None
    notes: list = dataclasses.field(default_factory=list)

    def harm(self, layer: LayerAnalysis) -> float:
        """How much ``layer`` costs, in score units: the larger of its drop
        when quantized alone and what it gives back when left in float."""
        return max(
            self.fp32 - layer.quantized_alone,
            layer.float_alone - self.quantized,
        )

    @property
    def ranked(self) -> list[LayerAnalysis]:
        """The layers, the most harmful first."""
        return sorted(self.layers, key=self.harm, reverse=True)

    def to_json(self) -> dict:
        """A JSON-able dict of everything but the files' contents."""
        return {
            "fp32": self.fp32,
            "quantized": self.quantized,
            "weights_only": self.weights_only,
            "activations_only": self.activations_only,
            "layers": [
                {**dataclasses.asdict(layer), "harm": self.harm(layer)}
                for layer in self.layers
            ],
            "ranked": [layer.name for layer in self.ranked],
            "first_departure": self.first_departure,
            "export_comparison": self.export_comparison,
            "onnx_first_departure": self.onnx_first_departure,
            "onnx_comparison": self.onnx_comparison,
            "files": {key: str(path) for key, path in self.files.items()},
            "notes": list(self.notes),
        }

    def to_markdown(self, top: int | None = None) -> str:
        """The summary and the ranked layer table as Markdown."""
        lines = [
            "| setting | score |",
            "|---|---|",
            f"| FP32 | {self.fp32:.4f} |",
            f"| quantized | {self.quantized:.4f} |",
            f"| weights only | {self.weights_only:.4f} |",
            f"| activations only | {self.activations_only:.4f} |",
            "",
            "| rank | layer | type | quantized alone | float alone | harm "
            "| MSE |",
            "|---|---|---|---|---|---|---|",
        ]
        for rank, layer in enumerate(self.ranked[:top], 1):
            mse = "—" if layer.mse is None else f"{layer.mse:.3g}"
            lines.append(
                f"| {rank} | {layer.name} | {layer.layer_type} | "
                f"{layer.quantized_alone:.4f} | {layer.float_alone:.4f} | "
                f"{self.harm(layer):+.4f} | {mse} |"
            )
        return "\n".join(lines)


def _activation_quantizers(wrapper):
    return [
        *wrapper.input_quantizers,
        *wrapper.output_quantizers,
        *wrapper.internal_quantizers.values(),
    ]


def _all_quantizers(wrapper):
    return [
        *_activation_quantizers(wrapper),
        *wrapper.param_quantizers.values(),
    ]


class QuantAnalyzer:
    """Per-layer quantization analysis of a Keras model (AIMET's).

    Args:
        model: a built ``keras.Model`` (or a ``.keras``/``.h5`` path). It is
            not changed: the analyzer simulates a copy, split for
            deployment with its batch norms folded (as
            :func:`~aimet_keras.quantize_model` does) unless
            ``fold_batch_norms=False`` is given to :meth:`analyze`.
        forward_pass_callback: calibration: the data (an array or a batched
            ``tf.data.Dataset``), or a function called as ``f(model)``, or
            AIMET's ``(function, args)`` pair called as
            ``function(model, args)``.
        eval_callback: ``f(model) -> float``, higher is better (top-1, say),
            or AIMET's ``(function, args)`` pair. It is called about twice
            per layer: keep its data small.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, labels = zoo.load_fashion_mnist_slice("test")
    >>> analyzer = QuantAnalyzer(
    ...     model, images[:64],
    ...     lambda m: float(np.mean(
    ...         m.predict(images[:100], verbose=0).argmax(-1)
    ...         == labels[:100])))
    >>> analyzer.enable_per_layer_mse_loss(images[:32])
    """

    def __init__(
        self,
        model: keras.Model,
        forward_pass_callback: object,
        eval_callback: Callable[[keras.Model], float],
    ) -> None:
        from aimet_keras.sim import inputs as inputs_lib

        self._model = inputs_lib.resolve_model(model)
        if callable(forward_pass_callback) or isinstance(
            forward_pass_callback, tuple
        ):
            forward = _callbacks.as_model_callback(
                forward_pass_callback, "QuantAnalyzer: forward_pass_callback"
            )
            self._calibration = (lambda model, _: forward(model), None)
        else:
            self._calibration = (forward_pass_callback, None)
        self._evaluate_callback = _callbacks.as_model_callback(
            eval_callback, "QuantAnalyzer: eval_callback"
        )
        self._mse_data = None

    def enable_per_layer_mse_loss(
        self,
        data: np.ndarray,
        num_batches: int | None = None,
        batch_size: int = 32,
    ) -> None:
        """Also measure per-layer MSE, ranges and histograms on ``data``.

        Args:
            data: unlabelled model inputs (an array).
            num_batches: use only this many batches. Defaults to all.
            batch_size: samples a batch. Defaults to 32.
        """
        data = np.asarray(data)
        if num_batches is not None:
            data = data[: num_batches * batch_size]
        if len(data) == 0:
            raise ValueError(
                "enable_per_layer_mse_loss: the data is empty; pass model "
                "inputs, samples first."
            )
        self._mse_data = (data, batch_size)

    def analyze(
        self,
        quant_scheme: str = "tf_enhanced",
        default_param_bw: int = 8,
        default_output_bw: int = 8,
        config_file: str | os.PathLike | None = None,
        results_dir: str | os.PathLike = "quant_analyzer_results",
        fold_batch_norms: bool = True,
        compare_cle: bool = True,
        compare_exports: bool | Sequence[str] = False,
        verbose: int | str = "auto",
        **sim_options: object,
    ) -> QuantAnalysis:
        """Runs every analysis and writes the JSON, charts and HTML report.

        Args:
            quant_scheme: the calibration scheme. Defaults to
                ``"tf_enhanced"``.
            default_param_bw: weight bits. Defaults to 8.
            default_output_bw: activation bits. Defaults to 8.
            config_file: a quantsim config (name or JSON path). Defaults to
                None (the default config).
            results_dir: where to write (created). Defaults to
                ``"quant_analyzer_results"``.
            fold_batch_norms: simulate the model split for deployment with
                batch norms folded, as deployed. Defaults to True.
            compare_cle: also draw per-channel weight ranges after
                cross-layer equalization. Defaults to True.
            compare_exports: also export to integer TFLite and to QDQ ONNX
                and compare each with the sim layer by layer: True for
                both, or the names of some (``["tflite"]``). Needs a config
                they can express, such as ``"tflite_int8"``, and the MSE
                data; an export that refuses the sim leaves a note.
                Defaults to False.
            verbose: a progress bar over the layers: 1, 0 or ``"auto"``
                (in a terminal). Defaults to ``"auto"``.
            **sim_options: further :class:`~aimet_keras.sim.
                QuantizationSimModel` arguments.

        Returns:
            A :class:`QuantAnalysis`; its ``files`` name what was written.

        Raises:
            ModuleNotFoundError: without matplotlib, naming the extra to
                install (nothing is written then).
        """
        _require_matplotlib()
        from aimet_keras import ptq
        from aimet_keras.graph import prepare as prepare_lib
        from aimet_keras.sim import QuantizationSimModel

        float_model = prepare_lib.prepare_model(self._model)
        if fold_batch_norms:
            float_model = ptq.fold_for_deployment(float_model)
        if config_file is not None:
            sim_options["config_file"] = config_file
        sim = QuantizationSimModel(
            float_model,
            quant_scheme=quant_scheme,
            default_param_bw=default_param_bw,
            default_output_bw=default_output_bw,
            **sim_options,
        )
        data, args = self._calibration
        sim.compute_encodings(data, args, verbose=0)
        wrappers = [
            w
            for w in sim.quant_wrappers()
            if any(q.enabled for q in _all_quantizers(w))
        ]
        on = {id(q) for w in wrappers for q in _all_quantizers(w) if q.enabled}
        everything = [q for w in wrappers for q in _all_quantizers(w)]

        def score(enabled):
            with _switched(sim, everything, on & enabled):
                return float(self._evaluate_callback(sim.model))

        weights = {id(q) for w in wrappers for q in w.param_quantizers.values()}
        activations = {
            id(q) for w in wrappers for q in _activation_quantizers(w)
        }
        analysis = QuantAnalysis(
            fp32=score(set()),
            quantized=score(on),
            weights_only=score(weights),
            activations_only=score(activations),
            layers=[],
        )
        bar = _progress.progress_bar(
            verbose, len(wrappers), "Per-layer sensitivity", "layer"
        )
        for done, wrapper in enumerate(wrappers, 1):
            own = {id(q) for q in _all_quantizers(wrapper)}
            analysis.layers.append(
                LayerAnalysis(
                    name=wrapper.name,
                    layer_type=type(wrapper.layer).__name__,
                    quantized_alone=score(own),
                    float_alone=score(on - own),
                    encoding_range=_output_grid(wrapper),
                    weight_range=_kernel_range(wrapper),
                )
            )
            if bar is not None:
                bar.update(done)
        folder = pathlib.Path(results_dir)
        folder.mkdir(parents=True, exist_ok=True)
        statistics = None
        if self._mse_data is not None:
            statistics = _layer_statistics(sim, *self._mse_data)
            for layer in analysis.layers:
                found = statistics["layers"].get(layer.name)
                if found:
                    layer.mse = found["mse"]
                    layer.activation_range = found["range"]
        else:
            analysis.notes.append(
                "Per-layer MSE, activation ranges and histograms need data: "
                "call enable_per_layer_mse_loss(data) first."
            )
        cle = None
        if compare_cle:
            cle = _cle_ranges(self._model, float_model, analysis.notes)
        if compare_exports:
            kinds = (
                {"tflite", "onnx"}
                if compare_exports is True
                else set(compare_exports)
            )
            unknown = kinds - {"tflite", "onnx"}
            if unknown:
                raise ValueError(
                    f"compare_exports={compare_exports!r}: unknown exports "
                    f"{sorted(unknown)}; use 'tflite' and/or 'onnx'."
                )
            _compare_exports(sim, analysis, self._mse_data, folder, kinds)
        _write_results(analysis, sim, statistics, cle, folder)
        return analysis


@contextlib.contextmanager
def _switched(sim, quantizers, enabled):
    """Only the quantizers whose ids are in ``enabled`` on, then restored."""
    before = [q.enabled for q in quantizers]
    for q in quantizers:
        q.enabled = id(q) in enabled
    # Traced predict/evaluate bake the switches in.
    sim._retrace()
    try:
        yield
    finally:
        for q, state in zip(quantizers, before):
            q.enabled = state
        sim._retrace()


def _require_matplotlib():
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError(
            "QuantAnalyzer draws its charts with matplotlib: "
            'pip install "aimet-keras[plot]".'
        )


def _output_grid(wrapper):
    quantizers = [q for q in wrapper.output_quantizers if q.enabled]
    encoding = quantizers[0].encoding if quantizers else None
    if encoding is None or encoding.is_float:
        return None
    return (float(np.min(encoding.min)), float(np.max(encoding.max)))


def _kernel(wrapper):
    for weight, quantizer in wrapper.quantized_weights():
        if weight.path.endswith("kernel") or "kernel" in weight.name:
            return np.asarray(weight), quantizer
    return None, None


def _kernel_range(wrapper):
    kernel, _ = _kernel(wrapper)
    if kernel is None:
        return None
    return (float(kernel.min()), float(kernel.max()))


def _channel_ranges(kernel, axis=-1):
    moved = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
    return moved.min(axis=1), moved.max(axis=1)


def _layer_statistics(sim, data, batch_size):
    """FP32 ranges, histograms and quantized-vs-FP32 MSE of every layer.

    Two passes over the data in batches (nothing whole is kept): ranges and
    squared errors first, then histograms over those ranges.
    """
    from aimet_keras.export import layer_outputs

    names, float_probe = layer_outputs.layer_probe(sim._prepared)
    sim_names, sim_probe = layer_outputs.layer_probe(sim.model)
    position = {name: i for i, name in enumerate(sim_names)}
    found = {
        name: {"min": math.inf, "max": -math.inf, "sse": 0.0, "count": 0}
        for name in names
        if name in position
    }

    def batches():
        for start in range(0, len(data), batch_size):
            yield data[start : start + batch_size]

    for batch in batches():
        reference = float_probe(batch, training=False)
        simulated = sim_probe(batch, training=False)
        for index, name in enumerate(names):
            if name not in found:
                continue
            fp = np.asarray(reference[index], np.float64)
            q = np.asarray(simulated[position[name]], np.float64)
            entry = found[name]
            entry["min"] = min(entry["min"], float(fp.min()))
            entry["max"] = max(entry["max"], float(fp.max()))
            if q.shape == fp.shape:
                entry["sse"] += float(np.sum((q - fp) ** 2))
                entry["count"] += fp.size
    counts = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in found}
    for batch in batches():
        reference = float_probe(batch, training=False)
        for index, name in enumerate(names):
            if name not in found:
                continue
            entry = found[name]
            low, high = _span(entry["min"], entry["max"])
            values = np.asarray(reference[index]).ravel()
            counts[name] += np.histogram(
                values, HISTOGRAM_BINS, range=(low, high)
            )[0]
    layers = {}
    for name, entry in found.items():
        low, high = _span(entry["min"], entry["max"])
        layers[name] = {
            "range": (entry["min"], entry["max"]),
            "mse": entry["sse"] / entry["count"] if entry["count"] else None,
            "histogram": (
                np.linspace(low, high, HISTOGRAM_BINS + 1),
                counts[name],
            ),
        }
    return {"layers": layers}


def _span(low, high):
    """A histogram range that is never empty."""
    if high > low:
        return low, high
    return low - 0.5, high + 0.5


def _cle_ranges(model, folded, notes):
    """``{layer: {"before CLE": (mins, maxs), "after CLE": ...}}`` for the
    kernels whose per-channel ranges spread the most."""
    import keras

    from aimet_keras import ptq

    try:
        equalized = ptq.equalize_model(model)
    except (ValueError, TypeError) as error:
        notes.append(f"Cross-layer equalization did not apply: {error}")
        return None
    spreads = []
    for layer in folded.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) < 2:
            continue
        try:
            after = equalized.get_layer(layer.name).kernel
        except ValueError:
            continue
        # A depthwise kernel's channels are its input channels.
        axis = -2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1
        before_ranges = _channel_ranges(np.asarray(kernel), axis)
        width = before_ranges[1] - before_ranges[0]
        spread = float(width.max() / max(np.median(width), 1e-12))
        spreads.append(
            (
                spread,
                layer.name,
                before_ranges,
                _channel_ranges(np.asarray(after), axis),
            )
        )
    spreads.sort(key=lambda item: item[0], reverse=True)
    return {
        name: {"before CLE": before, "after CLE": after}
        for _, name, before, after in spreads[:4]
    }


def _compare_exports(sim, analysis, mse_data, folder, kinds):
    from aimet_keras import export_tflite
    from aimet_keras.export import layer_outputs

    if mse_data is None:
        analysis.notes.append(
            "The export comparison needs data: call "
            "enable_per_layer_mse_loss(data) first."
        )
        return
    data = mse_data[0][:64]
    reference = layer_outputs.sim_layer_outputs(sim, data)
    steps = layer_outputs.output_steps(sim)
    try:
        exported = (
            export_tflite(sim, folder / "model_int8.tflite")
            if "tflite" in kinds
            else None
        )
    except ValueError as error:
        analysis.notes.append(f"No TFLite comparison: {error}")
        exported = None
    if exported is not None:
        report = layer_outputs.compare_layer_outputs(
            reference, layer_outputs.tflite_layer_outputs(exported, data), steps
        )
        analysis.export_comparison = report.to_markdown()
        analysis.first_departure = report.first_departure
        analysis.files["tflite"] = exported.path
    if "onnx" not in kinds:
        return
    try:
        from aimet_keras import export_onnx

        onnx_export = export_onnx(sim, folder / "model_qdq.onnx")
    except (ImportError, ValueError) as error:
        analysis.notes.append(f"No ONNX comparison: {error}")
        return
    report = layer_outputs.compare_layer_outputs(
        reference, layer_outputs.onnx_layer_outputs(onnx_export, data), steps
    )
    analysis.onnx_comparison = report.to_markdown()
    analysis.onnx_first_departure = report.first_departure
    analysis.files["onnx"] = onnx_export.qdq_path


def _write_results(analysis, sim, statistics, cle, folder):
    """The charts, the JSON and the HTML page; charts and page atomically."""
    from aimet_keras import plotting
    from aimet_keras.export import staging

    files = analysis.files
    names = [layer.name for layer in analysis.layers]
    files["sensitivity"] = plotting.line_chart(
        {
            "only this layer quantized": [
                (i, layer.quantized_alone)
                for i, layer in enumerate(analysis.layers)
            ],
            "all but this layer quantized": [
                (i, layer.float_alone)
                for i, layer in enumerate(analysis.layers)
            ],
        },
        folder / "per_layer_sensitivity.png",
        title="Per-layer quantization sensitivity",
        x_label="layer",
        y_label="score",
        hlines={"FP32": analysis.fp32, "quantized": analysis.quantized},
        x_tick_labels=names,
    )
    top = [layer.name for layer in analysis.ranked[:TOP_LAYERS]]
    if statistics is not None:
        measured = [layer for layer in analysis.layers if layer.mse is not None]
        if measured:
            files["mse"] = plotting.bar_chart(
                {layer.name: layer.mse for layer in measured},
                folder / "per_layer_mse.png",
                title="Per-layer MSE, quantized sim vs FP32",
                x_label="layer",
                y_label="mean squared error",
            )
        ranged = [layer for layer in analysis.layers if layer.activation_range]
        if ranged:
            files["activation_ranges"] = plotting.line_chart(
                {
                    "FP32 min": [
                        (i, layer.activation_range[0])
                        for i, layer in enumerate(ranged)
                    ],
                    "FP32 max": [
                        (i, layer.activation_range[1])
                        for i, layer in enumerate(ranged)
                    ],
                },
                folder / "activation_ranges.png",
                title="Activation ranges (FP32, on the MSE data)",
                x_label="layer",
                y_label="value",
                x_tick_labels=[layer.name for layer in ranged],
            )
        histograms = {
            name: statistics["layers"][name]["histogram"]
            for name in top
            if name in statistics["layers"]
        }
        if histograms:
            files["activation_histograms"] = plotting.histogram_grid(
                histograms,
                folder / "activation_histograms.png",
                title="Activations of the most harmful layers, with their "
                "grids",
                ranges={
                    layer.name: layer.encoding_range
                    for layer in analysis.layers
                    if layer.name in histograms and layer.encoding_range
                },
            )
    weight_histograms = {}
    for wrapper in sim.quant_wrappers():
        if wrapper.name not in top:
            continue
        kernel, _ = _kernel(wrapper)
        if kernel is not None:
            counts, edges = np.histogram(kernel.ravel(), HISTOGRAM_BINS)
            weight_histograms[wrapper.name] = (edges, counts)
    if weight_histograms:
        files["weight_histograms"] = plotting.histogram_grid(
            weight_histograms,
            folder / "weight_histograms.png",
            title="Weights of the most harmful layers",
            log=False,
        )
    for name, panels in (cle or {}).items():
        files[f"weight_ranges_{name}"] = plotting.channel_ranges(
            panels,
            folder / f"weight_ranges_{_file_name(name)}.png",
            title=f"{name}: per-channel weight ranges",
        )
    files["json"] = folder / "quant_analysis.json"
    files["html"] = folder / "quant_analysis.html"
    staging.write_atomically(
        files["json"], json.dumps(analysis.to_json(), indent=1)
    )
    staging.write_atomically(files["html"], _html(analysis))


def _file_name(name):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _html(analysis):
    """One page, images embedded: opens from the single file."""
    from aimet_keras import plotting

    escape = html.escape

    def image(key, caption):
        path = analysis.files.get(key)
        if path is None:
            return ""
        return (
            f'<figure><img alt="{escape(caption)}" '
            f'src="{plotting.data_uri(path)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )

    summary = "".join(
        f"<tr><td>{label}</td><td>{value:.4f}</td></tr>"
        for label, value in (
            ("FP32", analysis.fp32),
            ("quantized (all layers)", analysis.quantized),
            ("weights only", analysis.weights_only),
            ("activations only", analysis.activations_only),
        )
    )
    rows = []
    for rank, layer in enumerate(analysis.ranked, 1):
        mse = "—" if layer.mse is None else f"{layer.mse:.3g}"
        rows.append(
            f"<tr><td>{rank}</td><td>{escape(layer.name)}</td>"
            f"<td>{escape(layer.layer_type)}</td>"
            f"<td>{layer.quantized_alone:.4f}</td>"
            f"<td>{layer.float_alone:.4f}</td>"
            f"<td>{analysis.harm(layer):+.4f}</td><td>{mse}</td></tr>"
        )
    ranges = "".join(
        image(key, f"{key[len('weight_ranges_') :]}: before and after CLE")
        for key in analysis.files
        if key.startswith("weight_ranges_")
    )
    exports = ""
    for title, first, table in (
        ("TFLite", analysis.first_departure, analysis.export_comparison),
        (
            "ONNX (onnxruntime)",
            analysis.onnx_first_departure,
            analysis.onnx_comparison,
        ),
    ):
        if table:
            exports += (
                f"<h2>{title} export against the sim</h2>"
                f"<p>First departure: <b>{escape(str(first))}"
                f"</b></p><pre>{escape(table)}</pre>"
            )
    notes = "".join(f"<li>{escape(note)}</li>" for note in analysis.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Quantization analysis</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:nth-child(2), td:nth-child(3) {{ text-align: left; }}
img {{ max-width: 100%; }}
figure {{ margin: 1.5em 0; }}
</style></head><body>
<h1>Quantization analysis</h1>
<h2>Summary</h2>
<table id="summary"><tr><th>setting</th><th>score</th></tr>{summary}</table>
<h2>Layers that hurt most</h2>
<p>Harm: the larger of the score lost with only the layer quantized and the
score regained with only the layer left in float.</p>
<table id="sensitivity"><tr><th>rank</th><th>layer</th><th>type</th>
<th>quantized alone</th><th>float alone</th><th>harm</th><th>MSE</th></tr>
{"".join(rows)}</table>
{image("sensitivity", "Per-layer sensitivity")}
{image("mse", "Per-layer MSE")}
{image("activation_ranges", "Activation ranges")}
{image("activation_histograms", "Activation histograms")}
{image("weight_histograms", "Weight histograms")}
{ranges}
{exports}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<script>
// For headless checks: whether every chart decoded.
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  document.body.setAttribute("data-images-loaded", String(images.every(
    function (image) {{ return image.complete && image.naturalWidth > 0; }}
  )));
}});
</script>
</body></html>
"""
