"""``aimet-keras``: quantize and export a Keras model from the shell.

Usage::

    aimet-keras quantize --model model.keras --data calibration.npz \\
        [--eval-data test.npz] [--weight-bits 8] [--activation-bits 8] \\
        [--config tflite_int8] [--scheme tf_enhanced] [--per-channel] \\
        [--cle] [--bias-correction] [--adaround] [--range-search] \\
        [--export tflite,onnx] [--out artifacts] [--json summary.json]
    aimet-keras autoquant --model m.keras --data cal.npz --eval-data test.npz \\
        [--allowed-drop 0.01]   # BN fold, CLE, AdaRound: the first that holds
    aimet-keras qat --model m.keras --data train.npz [--epochs 1] \\
        [--learning-rate 1e-5] [--scheme training_range_learning_with_tf_init]
    aimet-keras compress --model m.keras --eval-data test.npz \\
        [--compression spatial_svd] [--target-ratio 0.5] [--cost-metric mac]
    aimet-keras analyze --model m.keras --data cal.npz --eval-data test.npz \\
        [--weight-bits 8] [--activation-bits 8] [--out report]  # HTML report
    aimet-keras export --model m.keras --encodings out/m.encodings \\
        [--config tflite_int8] [--export tflite,onnx]   # no data needed
    aimet-keras compare --model m.keras --encodings out/m.encodings \\
        --data d.npz   # which layer of the TFLite model departs first
    aimet-keras demo [--zoo-model resnet]   # the whole pipeline, offline
    aimet-keras zoo                         # the shipped models

``--model`` takes a ``.keras`` or ``.h5`` file or ``zoo:<name>``;
``--data`` and ``--eval-data`` a ``.npz``/``.npy`` file, a folder of images
(resized to the model's input; one subfolder per class gives labels) or a
TFRecord of examples with an encoded image feature. With labels, the
summary has FP32 and quantized top-1.

Exit codes: 0 done, 1 failed (a model that does not load, data that does
not fit it, a failed export), 2 bad usage (an unknown command or flag, a
missing file). ``--help`` lists every flag without loading TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import re
import sys
import tempfile
import time

from absl import flags

COMMANDS = (
    "quantize",
    "autoquant",
    "qat",
    "compress",
    "analyze",
    "export",
    "compare",
    "demo",
    "zoo",
)
_EXPORTS = ("tflite", "onnx")


class UsageError(Exception):
    """Bad usage: exit code 2."""


def _define_flags():
    """A fresh set of the command's flags (one per call of :func:`main`)."""
    values = flags.FlagValues()

    def define(kind, name, default, help_text, enum_values=None, **kwargs):
        if kind == "enum":
            flags.DEFINE_enum(
                name, default, enum_values, help_text, flag_values=values
            )
            return
        getattr(flags, f"DEFINE_{kind}")(
            name, default, help_text, flag_values=values, **kwargs
        )

    define("boolean", "help", False, "Show this help and exit.", short_name="h")
    define("string", "model", None, "A .keras or .h5 model, or zoo:<name>.")
    define(
        "string",
        "data",
        None,
        "Calibration data: .npz, .npy, image folder or .tfrecord; compress "
        "also takes 'distilled' (inputs made from the model's batch norms).",
    )
    define("string", "eval-data", None, "Labelled data to measure top-1 on.")
    define("integer", "calibration-size", 1000, "Calibration samples used.")
    define("integer", "weight-bits", 8, "Weight bit width (2-16).")
    define("integer", "activation-bits", 8, "Activation bit width (4-16).")
    define(
        "string",
        "config",
        "tflite_int8",
        "Quantsim config: a shipped name "
        "(default, tflite_int8, tflite_16x8, ...) or a JSON file.",
    )
    define(
        "enum",
        "scheme",
        "tf_enhanced",
        "Calibration scheme.",
        enum_values=[
            "tf",
            "tf_enhanced",
            "percentile",
            "mse",
            "training_range_learning_with_tf_init",
            "training_range_learning_with_tf_enhanced_init",
        ],
    )
    define(
        "boolean",
        "per-channel",
        None,
        "Per-channel weight grids (default: as the config says).",
    )
    define("boolean", "cle", False, "Cross-layer equalization first.")
    define("boolean", "bias-correction", False, "Empirical bias correction.")
    define("boolean", "adaround", False, "AdaRound the weights.")
    define("integer", "adaround-iterations", 2000, "AdaRound steps a layer.")
    define(
        "boolean",
        "range-search",
        False,
        "Pick each activation's range scheme by output MSE.",
    )
    define(
        "list",
        "export",
        list(_EXPORTS),
        "Exports besides the SavedModel and encodings: tflite, onnx (or none).",
    )
    define("string", "out", "artifacts/aimet_keras", "Folder for artifacts.")
    define("string", "json", None, "Write the summary as JSON here too.")
    define(
        "enum",
        "pixel-range",
        "0-1",
        "What image pixels 0..255 become.",
        enum_values=["0-1", "0-255", "-1-1"],
    )
    define("string", "image-feature", "image", "TFRecord image feature.")
    define("string", "label-feature", "label", "TFRecord label feature.")
    define(
        "float", "allowed-drop", 0.01, "autoquant: the top-1 drop to stop at."
    )
    define("integer", "epochs", 1, "qat: epochs of training on --data.")
    define("float", "learning-rate", 1e-5, "qat: Adam's learning rate.")
    define("integer", "batch-size", 32, "qat: batch size.")
    define(
        "enum",
        "compression",
        "spatial_svd",
        "compress: the scheme.",
        enum_values=["spatial_svd", "weight_svd", "channel_pruning"],
    )
    define("float", "target-ratio", 0.5, "compress: the cost kept, in (0, 1).")
    define(
        "enum",
        "cost-metric",
        "mac",
        "compress: the cost to cut.",
        enum_values=["mac", "memory", "latency"],
    )
    define("integer", "candidates", 10, "compress: ratios tried per layer.")
    define(
        "string",
        "encodings",
        None,
        "export and compare: the encodings file quantize "
        "wrote for --model (with the same --config and bits).",
    )
    define(
        "integer", "compare-samples", 64, "compare: samples run layer by layer."
    )
    define("string", "zoo-model", "resnet", "demo: the shipped model to use.")
    define("boolean", "quiet", False, "Print nothing but errors.")
    define(
        "boolean", "verbose", False, "Show TensorFlow's start-up notices too."
    )
    return values


def _help(values):
    return f"{__doc__}\nFlags:\n{values.get_help(include_special_flags=False)}"


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code.

    Args:
        argv: the arguments, program name first. Defaults to ``sys.argv``.

    Example:

    >>> main(["aimet-keras", "zoo"])  # doctest: +ELLIPSIS
    resnet
    ...
    0
    """
    argv = list(sys.argv if argv is None else argv)
    values = _define_flags()
    try:
        rest = values(argv)
    except flags.Error as error:
        return _fail(f"{error} (--help lists the flags).", 2)
    if values.help:
        print(_help(values))
        return 0
    if len(rest) != 2 or rest[1] not in COMMANDS:
        given = " ".join(rest[1:]) or "none"
        return _fail(
            f"unknown command {given!r}; use one of {', '.join(COMMANDS)} "
            "(--help lists the flags).",
            2,
        )
    try:
        return _COMMANDS[rest[1]](values)
    except UsageError as error:
        return _fail(str(error), 2)
    except FileNotFoundError as error:
        return _fail(str(error).strip("'\""), 2)
    except ImportError as error:
        return _fail(
            f"{error.name or error} is not installed: the ONNX export needs "
            "pip install 'aimet-keras[onnx]' (or pass --export tflite).",
            1,
        )
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        return _fail(str(error).splitlines()[0], 1)


def run(argv=None):
    """The ``aimet-keras`` console script: :func:`main` with TensorFlow's
    start-up notices held back (``--verbose`` shows them)."""
    argv = list(sys.argv if argv is None else argv)
    # TensorFlow reads its C++ log level once, as it loads.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    verbose = "--verbose" in argv[1:]
    with contextlib.nullcontext() if verbose else startup_notices_hidden():
        try:
            code = main(argv)
            sys.stdout.flush()
        except BrokenPipeError:
            # A reader such as ``head`` stopped early: nothing is lost.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = 0
    sys.exit(code)


# What TensorFlow's and TFLite's C++ side print as they start on a machine
# without a GPU, before any log level applies: nothing to act on.
_STARTUP_NOTICES = re.compile(
    r"absl::InitializeLog\(\) is called"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cpu_feature_guard\.cc:\d+\]|^To enable the following instructions"
    r"|Created TensorFlow Lite XNNPACK delegate for CPU"
)


@contextlib.contextmanager
def startup_notices_hidden():
    """Holds back the process's stderr; replays it without start-up notices.

    The notices come from C++ (file descriptor 2), so ``sys.stderr`` alone
    cannot filter them. Everything else written meanwhile is replayed when
    the block ends, and on an error all of it is.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines()
            kept = [
                line
                for line in lines
                if failed or not _STARTUP_NOTICES.search(line)
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def _fail(message, code):
    print(f"aimet-keras: {message}", file=sys.stderr if code else sys.stdout)
    return code


def _zoo(values):
    """The shipped models, and their quantized variants with the accuracy
    their recipes measured."""
    from aimet_keras import zoo

    rows = []
    for name in zoo.MODEL_NAMES:
        print(name)
        for model, variant in zoo.quantized_variants():
            if model != name:
                continue
            made = zoo.recipe(name, variant)
            accuracy = made["accuracy"]
            steps = " > ".join(step["step"] for step in made["steps"])
            print(
                f"  {variant}  FP32 {accuracy['fp32']:.2%}  quantized "
                f"{accuracy['quantized']:.2%} on "
                f"{accuracy['test_images']:,} test images  ({steps})"
            )
            rows.append(made)
    print('Load one with aimet_keras.zoo.load_quantized("resnet", "w4a8").')
    _write_summary(values, {"models": list(zoo.MODEL_NAMES), "variants": rows})
    return 0


def _demo(values):
    """The shipped model, calibrated on the shipped training slice and
    measured on the shipped test slice, exported to every format."""
    values["model"].value = f"zoo:{values['zoo-model'].value}"
    if not values["out"].present:
        values["out"].value = "artifacts/quickstart"
    if not values["json"].present:
        values["json"].value = str(
            pathlib.Path(values["out"].value) / "summary.json"
        )
    return _quantize(values, demo=True)


def _load_model(spec):
    from aimet_keras import zoo
    from aimet_keras.sim import inputs as inputs_lib

    if spec is None:
        raise UsageError(
            "quantize needs --model (a .keras/.h5 file or zoo:<name>)."
        )
    if spec.startswith("zoo:"):
        name = spec[len("zoo:") :]
        if name not in zoo.MODEL_NAMES:
            raise UsageError(
                f"--model {spec}: no such zoo model; use one of "
                f"{', '.join(zoo.MODEL_NAMES)}."
            )
        return zoo.load_model(name, compile=False)
    return inputs_lib.resolve_model(spec)


def _data(values, key, model, demo, part):
    from aimet_keras import zoo
    from aimet_keras.cli import data as data_lib

    path = values[key].value
    if path is None:
        if demo:
            return zoo.load_fashion_mnist_slice(part)
        return None, None
    return data_lib.load_data(
        path,
        tuple(model.inputs[0].shape[1:]),
        pixel_range=values["pixel-range"].value,
        image_feature=values["image-feature"].value,
        label_feature=values["label-feature"].value,
    )


def _top1(predictions, labels):
    import numpy as np

    return float(np.mean(np.argmax(predictions, -1) == labels))


@dataclasses.dataclass
class _Step:
    name: str
    seconds: float


def _quantize(values, demo=False, command="quantize"):
    import numpy as np

    exports = [e for e in values["export"].value if e != "none"]
    unknown = sorted(set(exports) - set(_EXPORTS))
    if unknown:
        raise UsageError(f"--export {unknown}: use tflite, onnx or none.")
    if command == "export" and values["encodings"].value is None:
        raise UsageError("export needs --encodings (a file quantize wrote).")
    if values["model"].value is None:
        raise UsageError(
            f"{command} needs --model (a .keras/.h5 file or zoo:<name>)."
        )
    if values["data"].value is None and not demo and command != "export":
        raise UsageError(f"{command} needs --data (its inputs).")
    if command == "compare" and values["encodings"].value is None:
        raise UsageError("compare needs --encodings (a file quantize wrote).")
    if command == "autoquant" and values["eval-data"].value is None:
        raise UsageError("autoquant needs --eval-data with labels to score.")
    say = (lambda *a: None) if values["quiet"].value else print
    steps, started = [], time.perf_counter()

    def step(name, since):
        steps.append(_Step(name, time.perf_counter() - since))
        say(f"{name}: {steps[-1].seconds:.1f} s")

    since = time.perf_counter()
    model = _load_model(values["model"].value)
    if len(model.inputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.inputs)} inputs; the "
            "command takes one-input models (use the Python API for more)."
        )
    inputs, input_labels = _data(values, "data", model, demo, "calibration")
    evaluation, labels = _data(values, "eval-data", model, demo, "test")
    if command == "autoquant" and labels is None:
        raise ValueError(
            f"--eval-data {values['eval-data'].value} has no labels; "
            "autoquant scores top-1 on them."
        )
    if command == "qat" and input_labels is None:
        raise ValueError(
            f"--data {values['data'].value} has no labels; qat trains on "
            "labelled data."
        )
    calibration = None
    if inputs is not None:
        calibration = inputs[: values["calibration-size"].value]
    step("load", since)

    from aimet_keras import export_onnx
    from aimet_keras import export_tflite

    since = time.perf_counter()
    settings = dict(
        quant_scheme=values["scheme"].value,
        default_param_bw=values["weight-bits"].value,
        default_output_bw=values["activation-bits"].value,
    )
    config = _config(values)
    out = pathlib.Path(values["out"].value)
    summary = {}
    if command == "autoquant":
        sim = _autoquant_sim(
            values, model, calibration, evaluation, labels, config, settings
        )
        summary["autoquant"] = sim.report
        sim = sim.sim
    elif command == "export" or values["encodings"].value is not None:
        sim = _sim_from_encodings(values, model, config, settings)
        summary["encodings_from"] = values["encodings"].value
    else:
        sim = _sim(values, model, calibration, config, settings, out)
    step("quantize", since)
    if command == "compare":
        return _compare(values, sim, calibration, evaluation, out, say)
    if command == "qat":
        since = time.perf_counter()
        _train(values, sim, inputs, input_labels)
        summary["qat_epochs"] = values["epochs"].value
        step("qat", since)

    fp32_bytes, quantized_bytes = weight_bytes(sim)
    summary = {
        **summary,
        "command": command,
        "model": values["model"].value,
        "parameters": int(model.count_params()),
        "fp32_weights_bytes": fp32_bytes,
        "quantized_weights_bytes": quantized_bytes,
        "calibration_samples": 0 if calibration is None else len(calibration),
        "weight_bits": settings["default_param_bw"],
        "activation_bits": settings["default_output_bw"],
    }
    if labels is not None:
        since = time.perf_counter()
        fp32 = model.predict(evaluation, batch_size=256, verbose=0)
        simulated = sim.model.predict(evaluation, batch_size=256, verbose=0)
        summary["eval_samples"] = int(len(labels))
        summary["fp32_top1"] = _top1(fp32, labels)
        summary["quantized_top1"] = _top1(simulated, labels)
        simulated_top1 = np.argmax(simulated, -1)
        step("evaluate", since)

    since = time.perf_counter()
    prefix = model.name
    paths = sim.export(out, prefix)
    if "tflite" in exports:
        mode = "16x8" if settings["default_output_bw"] == 16 else "int8"
        tflite = export_tflite(sim, out / f"{prefix}_{mode}.tflite", mode=mode)
        paths["tflite"] = tflite.path
        if labels is not None:
            outputs = _tflite_outputs(tflite.path, evaluation)
            summary["tflite_top1"] = _top1(outputs, labels)
            summary["tflite_agrees_with_sim"] = _top1(outputs, simulated_top1)
    if "onnx" in exports:
        onnx = export_onnx(sim, out / f"{prefix}_qdq.onnx")
        paths.update(
            onnx_qdq=onnx.qdq_path,
            onnx_fp32=onnx.fp32_path,
            onnx_encodings=onnx.encodings_path,
        )
        if labels is not None:
            outputs = _onnx_outputs(onnx.qdq_path, evaluation)
            summary["onnx_top1"] = _top1(outputs, labels)
            summary["onnx_agrees_with_sim"] = _top1(outputs, simulated_top1)
    step("export", since)
    summary["artifacts"] = {k: str(p) for k, p in paths.items()}
    summary["sizes_bytes"] = {
        k: _size(p) for k, p in paths.items() if pathlib.Path(p).exists()
    }
    summary["seconds"] = {s.name: round(s.seconds, 2) for s in steps}
    summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    _report(summary, say)
    _write_summary(values, summary)
    return 0


def _write_summary(values, summary):
    """Writes ``summary`` as JSON where ``--json`` says, whole or not at
    all (a failure or a kill leaves the file as it was)."""
    from aimet_keras.export import staging

    if values["json"].value:
        staging.write_atomically(
            values["json"].value,
            json.dumps(summary, indent=1, default=_plain),
        )


def weight_bytes(sim):
    """``(fp32 bytes, quantized bytes)`` of the sim's weights.

    A quantized weight takes its bitwidth per value (int32 biases 4
    bytes), a float one 4 bytes.

    Example:

    >>> import keras, numpy as np
    >>> from aimet_keras.sim import QuantizationSimModel
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> weight_bytes(QuantizationSimModel(model))  # 6 weights, 2 biases
    (32, 14)
    """
    from aimet_keras.sim import weight_key

    fp32 = quantized = 0
    for wrapper in sim.quant_wrappers():
        for weight in wrapper.layer.weights:
            count = int(math.prod(weight.shape))
            key = weight_key(wrapper.layer, weight)
            quantizer = wrapper.param_quantizers.get(key)
            bits = quantizer.bitwidth if quantizer and quantizer.enabled else 32
            fp32 += 4 * count
            quantized += count * bits // 8
    return fp32, quantized


def _sim(values, model, calibration, config, settings, out):
    """The calibrated sim, after the techniques the flags ask for."""
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    quiet = values["quiet"].value
    prepared = ptq.fold_for_deployment(model)
    if values["cle"].value:
        prepared = ptq.equalize_model(prepared)
    if values["bias-correction"].value:
        prepared, _ = ptq.correct_bias(
            prepared, calibration, config_file=config, **settings
        )
    if values["adaround"].value:
        sim = ptq.adarounded_sim(
            prepared,
            calibration,
            out,
            config_file=config,
            num_iterations=values["adaround-iterations"].value,
            verbose=not quiet,
            **settings,
        )
    else:
        sim = QuantizationSimModel(prepared, config_file=config, **settings)
        # A progress bar in a terminal; none in a log or a pipe.
        sim.compute_encodings(calibration, verbose=0 if quiet else "auto")
    if values["range-search"].value:
        ptq.optimize_activation_ranges(sim, calibration)
    return sim


def _compare(values, sim, inputs, evaluation, out, say):
    """Layer by layer: the sim against its integer TFLite model."""
    from aimet_keras import export_tflite
    from aimet_keras.export import layer_outputs as lo

    images = (inputs if evaluation is None else evaluation)[
        : values["compare-samples"].value
    ]
    exported = export_tflite(sim, out / f"{sim.model.name}_int8.tflite")
    report = lo.compare_layer_outputs(
        lo.sim_layer_outputs(sim, images),
        lo.tflite_layer_outputs(exported, images),
        lo.output_steps(sim),
    )
    say(report.to_markdown())
    first = report.first_departure
    say(
        f"first layer more than a step apart on over "
        f"{report.tolerance:.0%} of its values: {first or 'none'}"
    )
    _write_summary(
        values,
        {
            "command": "compare",
            "samples": len(images),
            "first_departure": first,
            "layers": [dataclasses.asdict(row) for row in report.rows],
            "tflite": str(exported.path),
        },
    )
    return 0


def _sim_from_encodings(values, model, config, settings):
    """The sim ``quantize`` built, its grids read from its encodings file."""
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    sim = QuantizationSimModel(
        ptq.fold_for_deployment(model), config_file=config, **settings
    )
    sim.load_encodings_to_sim(values["encodings"].value)
    return sim


def _autoquant_sim(
    values, model, calibration, evaluation, labels, config, settings
):
    """AutoQuant's result: the first step within --allowed-drop."""
    from aimet_keras import graph
    from aimet_keras import ptq

    def top1(candidate):
        outputs = candidate.predict(evaluation, batch_size=256, verbose=0)
        return _top1(outputs, labels)

    return ptq.auto_quant(
        graph.split_for_deployment(model),
        calibration,
        top1,
        allowed_accuracy_drop=values["allowed-drop"].value,
        config_file=config,
        results_dir=str(pathlib.Path(values["out"].value) / "autoquant"),
        adaround_iterations=values["adaround-iterations"].value,
        verbose=not values["quiet"].value,
        **settings,
    )


def _train(values, sim, inputs, labels):
    """Quantization-aware training of ``sim.model`` on labelled inputs."""
    import keras

    sim.model.compile(
        optimizer=keras.optimizers.Adam(values["learning-rate"].value),
        loss="sparse_categorical_crossentropy",
    )
    sim.model.fit(
        inputs,
        labels,
        batch_size=values["batch-size"].value,
        epochs=values["epochs"].value,
        verbose=0 if values["quiet"].value else "auto",
    )


def _plain(value):
    """A JSON value for a numpy scalar (or the text of anything else)."""
    return value.item() if hasattr(value, "item") else str(value)


def _size(path):
    path = pathlib.Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _report(summary, say):
    say(
        f"model {summary['model']} ({summary['parameters']:,} parameters), "
        f"W{summary['weight_bits']}A{summary['activation_bits']}, "
        + (
            f"grids from {summary['encodings_from']}"
            if "encodings_from" in summary
            else f"calibrated on {summary['calibration_samples']} samples"
        )
    )
    say(
        f"weights: {summary['fp32_weights_bytes'] / 1024:,.1f} KiB FP32, "
        f"{summary['quantized_weights_bytes'] / 1024:,.1f} KiB quantized"
    )
    if "fp32_top1" in summary:
        say(f"top-1 on {summary['eval_samples']} samples:")
        for key, label in (
            ("fp32_top1", "FP32"),
            ("quantized_top1", "quantized (simulated)"),
            ("tflite_top1", "integer TFLite"),
            ("onnx_top1", "ONNX QDQ (onnxruntime)"),
        ):
            if key in summary:
                agrees = summary.get(key.replace("top1", "agrees_with_sim"))
                same = f"  (top-1 = sim's on {agrees:.2%})" if agrees else ""
                say(f"  {label:24s} {summary[key]:.2%}{same}")
    say("artifacts:")
    for key, path in summary["artifacts"].items():
        size = summary["sizes_bytes"].get(key)
        shown = f"{size / 1024:,.1f} KiB" if size is not None else ""
        say(f"  {key:16s} {path}  {shown}")


# Samples a TFLite or ONNX run takes at once: whole evaluation sets of
# large images would not fit in memory as one batch.
_RUN_BATCH = 256


def _tflite_outputs(path, inputs):
    from aimet_keras.export.tflite import run_tflite

    return run_tflite(path, inputs, batch_size=_RUN_BATCH)


def _onnx_outputs(path, inputs):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run(None, {name: inputs[i : i + _RUN_BATCH]})[0]
            for i in range(0, len(inputs), _RUN_BATCH)
        ]
    )


def _model_and_labelled_data(values, command):
    """--model, and --eval-data with the labels ``command`` scores on."""
    model = _load_model(values["model"].value)
    evaluation, labels = _data(values, "eval-data", model, False, "test")
    if labels is None:
        raise ValueError(
            f"--eval-data {values['eval-data'].value} has no labels; "
            f"{command} scores top-1 on them."
        )
    return model, evaluation, labels


def _compress(values):
    """Greedy per-layer compression ratios scored by top-1 on --eval-data."""
    if values["eval-data"].value is None:
        raise UsageError("compress needs --eval-data with labels to score.")
    say = (lambda *a: None) if values["quiet"].value else print
    started = time.perf_counter()
    model, evaluation, labels = _model_and_labelled_data(values, "compress")
    from aimet_keras import compress

    data = None
    if values["data"].value == "distilled":
        say("distilling inputs from the model's batch norms")
        data = compress.distilled_data(
            model, verbose=0 if values["quiet"].value else "auto"
        )
    elif values["data"].value is not None:
        data, _ = _data(values, "data", model, False, "calibration")

    target = values["target-ratio"].value
    if not 0 < target < 1:
        raise UsageError(f"--target-ratio {target}: use a fraction in (0, 1).")
    compressed, stats = compress.compress_model(
        model,
        compress.accuracy_evaluator((evaluation, labels)),
        None,
        target,
        scheme=values["compression"].value,
        cost_metric=values["cost-metric"].value,
        num_comp_ratio_candidates=values["candidates"].value,
        data=data,
        verbose=0 if values["quiet"].value else "auto",
    )
    out = pathlib.Path(values["out"].value)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{model.name}_{values['compression'].value}.keras"
    from aimet_keras.export import staging

    staging.save_model_atomically(compressed, path)
    summary = {
        "command": "compress",
        "model": values["model"].value,
        "scheme": values["compression"].value,
        "cost_metric": values["cost-metric"].value,
        "refit_data": values["data"].value,
        "target_ratio": target,
        "achieved_ratio": float(stats.achieved_comp_ratio),
        "macs": [int(stats.original_cost[0]), int(stats.compressed_cost[0])],
        "fp32_top1": _top1(model.predict(evaluation, verbose=0), labels),
        "compressed_top1": _top1(
            compressed.predict(evaluation, verbose=0), labels
        ),
        "ratios": {k: float(v) for k, v in stats.ratios.items()},
        "artifacts": {"keras": str(path)},
        "seconds": {"total": round(time.perf_counter() - started, 2)},
    }
    say(
        f"{summary['scheme']}: {summary['achieved_ratio']:.1%} of the "
        f"{summary['cost_metric']} cost kept (target {target:.0%}); MACs "
        f"{summary['macs'][0]:,} -> {summary['macs'][1]:,}"
    )
    say(
        f"top-1 on {len(labels)} samples: FP32 {summary['fp32_top1']:.2%}, "
        f"compressed {summary['compressed_top1']:.2%} (fine-tune it with fit)"
    )
    say(f"compressed model: {path}")
    _write_summary(values, summary)
    return 0


def _config(values):
    """The quantsim config --config names, with --per-channel applied."""
    from aimet_keras.sim import config as config_lib

    config = config_lib.load_quantsim_config(values["config"].value)
    if values["per-channel"].value is not None:
        config = dataclasses.replace(
            config, per_channel_quantization=values["per-channel"].value
        )
    return config


def _analyze(values):
    """QuantAnalyzer: per-layer sensitivity scored by top-1 on --eval-data,
    and the HTML report."""
    if values["eval-data"].value is None or values["data"].value is None:
        raise UsageError(
            "analyze needs --data (calibration) and --eval-data with labels "
            "(each layer is scored by top-1 on it)."
        )
    say = (lambda *a: None) if values["quiet"].value else print
    started = time.perf_counter()
    model, evaluation, labels = _model_and_labelled_data(values, "analyze")
    calibration, _ = _data(values, "data", model, False, "calibration")
    import numpy as np

    from aimet_keras.analysis import QuantAnalyzer

    def top1(simulated):
        # Eager batches: the analyzer switches quantizers between calls.
        predictions = np.concatenate(
            [
                np.asarray(simulated(evaluation[i : i + _RUN_BATCH]))
                for i in range(0, len(evaluation), _RUN_BATCH)
            ]
        )
        return _top1(predictions, labels)

    analyzer = QuantAnalyzer(model, calibration, top1)
    analyzer.enable_per_layer_mse_loss(
        calibration[: values["compare-samples"].value]
    )
    analysis = analyzer.analyze(
        quant_scheme=values["scheme"].value,
        default_param_bw=values["weight-bits"].value,
        default_output_bw=values["activation-bits"].value,
        config_file=_config(values),
        results_dir=values["out"].value,
        compare_exports=sorted(
            {"tflite", "onnx"} & set(values["export"].value)
        ),
        verbose=0 if values["quiet"].value else "auto",
    )
    say(analysis.to_markdown(top=10))
    if analysis.first_departure:
        say(f"TFLite departs from the sim first at {analysis.first_departure}")
    if analysis.onnx_first_departure:
        first = analysis.onnx_first_departure
        say(f"ONNX departs from the sim first at {first}")
    say(f"report: {analysis.files['html']}")
    _write_summary(
        values,
        {
            "command": "analyze",
            "model": values["model"].value,
            **analysis.to_json(),
            "seconds": {"total": round(time.perf_counter() - started, 2)},
        },
    )
    return 0


_COMMANDS = {
    "quantize": _quantize,
    "analyze": _analyze,
    "autoquant": lambda values: _quantize(values, command="autoquant"),
    "qat": lambda values: _quantize(values, command="qat"),
    "compress": _compress,
    "export": lambda values: _quantize(values, command="export"),
    "compare": lambda values: _quantize(values, command="compare"),
    "demo": _demo,
    "zoo": _zoo,
}
