"""Suite ``grid``: the cost of the number grid and of calibration observers.

(a) :func:`aimet_keras.quant.quantize_dequantize` on a 4M-element float32
tensor, per tensor and per channel (256 channels on the last axis), against a
plain clip-and-round baseline ``tf.round(tf.clip_by_value(x / s, lo, hi)) *
s`` on the same tensor and compiled the same way, with XLA (the target:
at most 3x) and, for information, without. Keras 3's own fake-quant op
(``keras.quantizers.fake_quant_with_min_max_vars``, which on TensorFlow is
``tf.quantization.fake_quant_with_min_max_vars[_per_channel]``) is timed
beside them as a peer.

(b) Calibration observers over the activations of 1,000 Fashion-MNIST
images (the shipped calibration slice): the FP32 forward passes of the
reference ResNet with every layer's output as a model output (the baseline),
against the same passes plus ``observer.update`` on every output (one
per-tensor observer per output; the target: at most 2x), then one
``compute_encoding`` per observer; for MinMax, SQNR, percentile and MSE
observers. ``update`` is timed two ways: called from
Python on the outputs of the compiled forward pass, and traced into the same
``tf.function`` as the forward pass.

Every comparison is timed in interleaved rounds in one process
(:func:`benchmarks.harness.time_interleaved`), so the ratios hold even when
the machine's load drifts.
"""

import statistics

import numpy as np

from benchmarks import harness

__all__ = ["run"]

# (a): 64 * 256 * 256 = 4,194,304 values with 256 channels last.
TENSOR_SHAPE = (64, 256, 256)
QUICK_TENSOR_SHAPE = (16, 256, 256)
QDQ_TARGET = 3.0

# (b)
NUM_IMAGES = 1000
NUM_BATCHES = 4
QUICK_NUM_IMAGES = 200
OBSERVER_TARGET = 2.0
BITWIDTH = 8
OBSERVER_MODEL = "resnet"

REPEATS = 5
WARMUP = 1


def _median_ms(samples):
    return 1000.0 * statistics.median(samples)


def _target_cell(value, target):
    """``"yes"``/``"no"`` for ``value <= target``; None when unmeasured."""
    return None if value is None else bool(value <= target)


# --------------------------------------------------------------------------
# (a) quantize_dequantize vs clip-and-round


def _clip_and_round(x, scale, lo, hi):
    """The baseline: the least work any fake-quant op has to do."""
    import tensorflow as tf

    return tf.round(tf.clip_by_value(x / scale, lo, hi)) * scale


def _grid_case(x, axis, jit_compile, repeats):
    """Times baseline, quantize_dequantize and the Keras peer on one case.

    Returns:
        A dict from candidate name to its timing samples (None when the
        candidate failed to run), and a dict of failure messages.
    """
    import keras
    import tensorflow as tf

    from aimet_keras import quant

    reduce_axes = None if axis is None else tuple(range(x.shape.rank - 1))
    x_min = tf.reduce_min(x, axis=reduce_axes).numpy()
    x_max = tf.reduce_max(x, axis=reduce_axes).numpy()
    encoding = quant.compute_encoding(x_min, x_max, BITWIDTH)
    scale = tf.constant(encoding.delta, tf.float32)
    lo = tf.constant(encoding.offset, tf.float32)
    hi = tf.constant(encoding.offset + encoding.num_steps, tf.float32)
    grid_min = tf.constant(encoding.min, tf.float32)
    grid_max = tf.constant(encoding.max, tf.float32)

    def compile_(fn):
        # x is an argument, never a captured constant, so nothing folds away.
        return tf.function(fn, jit_compile=jit_compile)

    candidates = {
        "baseline": compile_(lambda t: _clip_and_round(t, scale, lo, hi)),
        "quantize_dequantize": compile_(
            lambda t: quant.quantize_dequantize(t, encoding, axis=axis)
        ),
        "keras_fake_quant": compile_(
            lambda t: keras.quantizers.fake_quant_with_min_max_vars(
                t, grid_min, grid_max, num_bits=BITWIDTH, axis=axis
            )
        ),
    }
    failures = {}
    runnable = {}
    for name, fn in candidates.items():
        try:
            fn(x)  # surfaces compile errors here, before timing
        except Exception as error:  # noqa: BLE001 - a peer may not compile
            failures[name] = f"{type(error).__name__}: {str(error)[:200]}"
            continue
        runnable[name] = lambda fn=fn: fn(x)
    samples = harness.time_interleaved(runnable, repeats, WARMUP)
    return {name: samples.get(name) for name in candidates}, failures


def _grid_tables(quick, repeats, extra):
    import tensorflow as tf

    shape = QUICK_TENSOR_SHAPE if quick else TENSOR_SHAPE
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(shape, dtype=np.float32))
    size = f"{int(np.prod(shape)):,} float32 values, shape {shape}"
    main = harness.Table(
        f"quantize_dequantize vs clip-and-round ({size}, {BITWIDTH}-bit)",
        [
            "granularity",
            "compiled",
            "clip-and-round ms",
            "quantize_dequantize ms",
            "ratio",
            f"target <= {QDQ_TARGET:g}x",
        ],
        formats={
            "clip-and-round ms": "{:.2f}",
            "quantize_dequantize ms": "{:.2f}",
            "ratio": "{:.2f}x",
        },
    )
    peer = harness.Table(
        "Peer: keras.quantizers.fake_quant_with_min_max_vars, same tensor",
        [
            "granularity",
            "compiled",
            "clip-and-round ms",
            "keras fake_quant ms",
            "ratio",
        ],
        formats={
            "clip-and-round ms": "{:.2f}",
            "keras fake_quant ms": "{:.2f}",
            "ratio": "{:.2f}x",
        },
    )
    main.notes += [
        "Baseline: `tf.round(tf.clip_by_value(x / s, lo, hi)) * s` with the "
        "same encoding's scale and integer limits, compiled the same way.",
        "quantize_dequantize rounds halves away from zero (AIMET's "
        "std::round) and carries the straight-through gradient; the "
        "baseline rounds half to even and has no custom gradient.",
        f"Median of {repeats} interleaved rounds after {WARMUP} warm-up "
        "call(s). The target applies to the XLA rows; the plain tf.function "
        "rows are for information.",
    ]
    peer.notes.append(
        "On TensorFlow, Keras' op is tf.quantization.fake_quant_with_min_max_"
        "vars(_per_channel): a fused C++ kernel with TFLite's nudged range, "
        "round half up, and no per-channel axis other than the last."
    )
    extra["grid_samples_s"] = {}
    for axis, granularity in (
        (None, "per-tensor"),
        (-1, "per-channel (axis -1)"),
    ):
        for jit_compile, compiled in ((True, "XLA"), (False, "tf.function")):
            samples, failures = _grid_case(x, axis, jit_compile, repeats)
            extra["grid_samples_s"][f"{granularity}, {compiled}"] = samples
            ms = {
                k: None if v is None else _median_ms(v)
                for k, v in samples.items()
            }
            qdq_ratio = harness.ratio(ms["quantize_dequantize"], ms["baseline"])
            main.add_row(
                granularity,
                compiled,
                ms["baseline"],
                ms["quantize_dequantize"],
                qdq_ratio,
                _target_cell(qdq_ratio, QDQ_TARGET) if jit_compile else "info",
            )
            peer.add_row(
                granularity,
                compiled,
                ms["baseline"],
                ms["keras_fake_quant"],
                harness.ratio(ms["keras_fake_quant"], ms["baseline"]),
            )
            for name, message in failures.items():
                table = peer if name == "keras_fake_quant" else main
                table.notes.append(
                    f"{name} failed ({granularity}, {compiled}): {message}"
                )
    return [main, peer]


# --------------------------------------------------------------------------
# (b) observers vs the FP32 forward passes


def _observer_model():
    """The reference ResNet (trained if on disk) and whether it is trained."""
    from aimet_keras.zoo import ARCHITECTURES

    model = harness.load_reference_model(OBSERVER_MODEL)
    if model is not None:
        return model, True
    return ARCHITECTURES[OBSERVER_MODEL](), False


def _all_outputs_model(model):
    """A model whose outputs are every (non-input) layer's output."""
    import keras

    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    return keras.Model(model.inputs, [layer.output for layer in layers])


def _observer_case(observer_cls, probe, batches, repeats):
    """Times forward vs forward + update (two ways) and compute_encoding."""
    import tensorflow as tf

    @tf.function
    def forward(batch):
        return probe(batch, training=False)

    shapes = [t.shape for t in forward(batches[0])]

    def make_observers():
        observers = [observer_cls() for _ in shapes]
        for observer, shape in zip(observers, shapes):
            observer.build(shape)  # variables exist before any tracing
        return observers

    called, traced = make_observers(), make_observers()

    @tf.function
    def forward_and_update(batch):
        outputs = probe(batch, training=False)
        for observer, output in zip(traced, outputs):
            observer.update(output)
        return outputs

    def run_forward():
        for batch in batches:
            forward(batch)

    def run_update_called():
        for batch in batches:
            for observer, output in zip(called, forward(batch)):
                observer.update(output)

    def run_update_traced():
        for batch in batches:
            forward_and_update(batch)

    def run_compute_encoding():
        for observer in called:
            observer.compute_encoding(BITWIDTH)

    run_update_called()  # compute_encoding needs data, even when warming up
    return harness.time_interleaved(
        {
            "forward": run_forward,
            "update_called": run_update_called,
            "update_traced": run_update_traced,
            "compute_encoding": run_compute_encoding,
        },
        repeats,
        WARMUP,
    )


def _observer_tables(quick, repeats, extra):
    import tensorflow as tf

    from aimet_keras.quant import observers
    from aimet_keras.zoo import load_fashion_mnist_slice

    num_images = QUICK_NUM_IMAGES if quick else NUM_IMAGES
    images, _ = load_fashion_mnist_slice("calibration")
    batches = [
        tf.constant(b) for b in np.split(images[:num_images], NUM_BATCHES)
    ]
    model, trained = _observer_model()
    probe = _all_outputs_model(model)
    num_outputs = len(probe.outputs)
    values_per_image = sum(int(np.prod(t.shape[1:])) for t in probe.outputs)
    weights = (
        "trained" if trained else "UNTRAINED (resnet.keras not on disk yet)"
    )
    about = (
        f"{OBSERVER_MODEL}, {weights}; {num_outputs} layer outputs, "
        f"{values_per_image:,} values per image; {num_images:,} images in "
        f"{NUM_BATCHES} batches of {num_images // NUM_BATCHES}"
    )
    update = harness.Table(
        f"Observer update vs FP32 forward passes ({about})",
        [
            "observer",
            "update called",
            "forward ms",
            "forward + update ms",
            "update ms",
            "ratio",
            f"target <= {OBSERVER_TARGET:g}x",
        ],
        formats={
            "forward ms": "{:.1f}",
            "forward + update ms": "{:.1f}",
            "update ms": "{:.1f}",
            "ratio": "{:.2f}x",
        },
    )
    encode = harness.Table(
        f"compute_encoding, one per observer ({num_outputs} observers, "
        f"{BITWIDTH}-bit asymmetric)",
        [
            "observer",
            "forward ms",
            "compute_encoding ms (all)",
            "per observer ms",
            "vs forward",
        ],
        formats={
            "forward ms": "{:.1f}",
            "compute_encoding ms (all)": "{:.1f}",
            "per observer ms": "{:.2f}",
            "vs forward": "{:.2f}x",
        },
    )
    update.notes += [
        "Baseline: a tf.function (no XLA, as Keras' predict on CPU) running "
        "the model with every layer's output as an output, over all batches.",
        "'from Python': observer.update() on each output of the compiled "
        "forward pass (one tf.function call per observer and batch). "
        "'traced': the updates traced into the forward pass's tf.function.",
        "Per-tensor observers, one per layer output. Ratio = (forward + "
        f"update) / forward; median of {repeats} interleaved rounds after "
        f"{WARMUP} warm-up call(s).",
    ]
    if not trained:
        update.notes.append(
            "The ResNet is untrained: the cost of the passes is the same as a "
            "trained one's, but the activation ranges (and so histogram "
            "growth) differ."
        )
    encode.notes.append(
        "The time for every observer's compute_encoding once, after the "
        "observers have seen the batches; 'vs forward' divides by the "
        "forward passes over all the images."
    )
    observer_classes = [observers.MinMaxObserver, observers.SqnrObserver]
    if not quick:
        observer_classes += [
            observers.PercentileObserver,
            observers.MseObserver,
        ]
    extra["observer_samples_s"] = {}
    for observer_cls in observer_classes:
        name = observer_cls.__name__
        samples = _observer_case(observer_cls, probe, batches, repeats)
        extra["observer_samples_s"][name] = samples
        ms = {k: _median_ms(v) for k, v in samples.items()}
        for key, how in (
            ("update_called", "from Python"),
            ("update_traced", "traced"),
        ):
            total_ratio = harness.ratio(ms[key], ms["forward"])
            update.add_row(
                name,
                how,
                ms["forward"],
                ms[key],
                ms[key] - ms["forward"],
                total_ratio,
                _target_cell(total_ratio, OBSERVER_TARGET),
            )
        encode.add_row(
            name,
            ms["forward"],
            ms["compute_encoding"],
            ms["compute_encoding"] / num_outputs,
            harness.ratio(ms["compute_encoding"], ms["forward"]),
        )
    return [update, encode], {
        "observer_model": OBSERVER_MODEL,
        "observer_model_trained": trained,
        "observer_images": num_images,
        "observer_batches": NUM_BATCHES,
        "observer_layer_outputs": num_outputs,
    }


def run(quick=False):
    """Runs the suite.

    Args:
        quick: a smaller tensor (1M values), 200 images and only the
            MinMax and SQNR observers, for a smoke run.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    extra = {}
    tables = _grid_tables(quick, REPEATS, extra)
    observer_tables, observer_settings = _observer_tables(quick, REPEATS, extra)
    settings = {
        "tensor_shape": list(QUICK_TENSOR_SHAPE if quick else TENSOR_SHAPE),
        "bitwidth": BITWIDTH,
        "repeats": REPEATS,
        "warmup": WARMUP,
        **observer_settings,
    }
    return harness.Report(
        "grid", tables + observer_tables, settings, quick=quick, extra=extra
    )
