"""Suite ``weights``: weight-only quantization accuracy per calibration scheme.

Every Conv/Dense kernel (and depthwise kernel) of each trained reference
model is fake-quantized per output channel on a symmetric grid with each
observer (MinMax ``tf``, SQNR ``tf_enhanced``, ``mse``) at 8, 6, 4 and 3
bits; activations stay float. The table gives top-1 accuracy on the full
10,000-image Fashion-MNIST test set beside FP32. It shows what the grid and
the observers alone achieve (no BN folding, no AdaRound): the baseline the
post-training techniques have to beat.
"""

from benchmarks import harness

__all__ = ["run"]

SCHEMES = ("tf", "tf_enhanced", "mse")
BITWIDTHS = (8, 6, 4, 3)
QUICK_BITWIDTHS = (8, 4)
QUICK_NUM_IMAGES = 1000
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def _kernels(model):
    """(variable, axis) for every kernel, sublayers' (MHA's) included."""
    from aimet_keras.sim import weight_channel_axis

    found = []
    for variable in model.weights:
        if variable.name in KERNEL_NAMES:
            owner = model.get_layer(variable.path.split("/")[0])
            found.append((variable, weight_channel_axis(owner, variable.name)))
    return found


def _quantize_kernels(model, originals, scheme, bitwidth):
    """Fake-quantizes the kernels in place from their float originals."""
    from aimet_keras import quant

    for (variable, axis), original in zip(_kernels(model), originals):
        observer = quant.observers.get(scheme, axis=axis)
        observer.update(original)
        encoding = observer.compute_encoding(bitwidth, is_symmetric=True)
        variable.assign(
            quant.quantize_dequantize(original, encoding, axis=axis)
        )


def run(quick=False):
    """Runs the suite.

    Args:
        quick: bitwidths 8 and 4 only, on the first 1,000 test images.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    from aimet_keras import zoo

    images, labels = zoo.load_fashion_mnist("test")
    if quick:
        images, labels = images[:QUICK_NUM_IMAGES], labels[:QUICK_NUM_IMAGES]
    bitwidths = QUICK_BITWIDTHS if quick else BITWIDTHS
    columns = ["model", "weights", "FP32"] + [f"{s}" for s in SCHEMES]
    table = harness.Table(
        "Weight-only fake quantization, per-channel symmetric (top-1)",
        columns,
        formats={c: "{:.2%}" for c in columns[2:]},
    )
    for name in zoo.MODEL_NAMES:
        model = harness.load_reference_model(name)
        if model is None:
            table.add_row(
                name, "not trained yet", *[None] * len(SCHEMES) + [None]
            )
            continue
        fp32 = harness.top1_accuracy(model, images, labels)
        originals = [variable.numpy() for variable, _ in _kernels(model)]
        for bitwidth in bitwidths:
            row = []
            for scheme in SCHEMES:
                _quantize_kernels(model, originals, scheme, bitwidth)
                row.append(harness.top1_accuracy(model, images, labels))
            table.add_row(name, f"W{bitwidth}", fp32, *row)
        for (variable, _), original in zip(_kernels(model), originals):
            variable.assign(original)
    table.notes += [
        "Every Conv2D, DepthwiseConv2D and Dense kernel on a symmetric grid "
        "per output channel (aimet_keras.sim.weight_channel_axis: the last "
        "axis; a depthwise kernel's last two); the attention projections' "
        "EinsumDense kernels per last axis. Biases, BN parameters and "
        "activations stay float.",
        "Columns are the calibration scheme (AIMET's names); FP32 is the "
        "same model unquantized, on the same images.",
    ]
    if quick:
        table.notes.append(f"--quick: first {QUICK_NUM_IMAGES:,} test images.")
    settings = {"schemes": list(SCHEMES), "bitwidths": list(bitwidths)}
    return harness.Report("weights", [table], settings, quick=quick)
