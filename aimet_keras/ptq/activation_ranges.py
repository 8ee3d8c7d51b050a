"""Per-tensor choice of activation ranges for low-bit activations.

One calibration scheme for every activation is a compromise: at 4 bits a
ReLU output with a long tail wants a clipped range (percentile, MSE), a
softmax or a narrow tensor wants its full range (min/max). For each
activation quantizer of a sim, :func:`optimize_activation_ranges` computes
the range of every candidate scheme on the same data and keeps the one whose
quantized tensor is closest (mean squared error) to the FP32 tensor it
quantizes: the tensor, since the simulated layer output is that tensor on
the grid.
"""

from __future__ import annotations

import typing

import numpy as np

from aimet_keras import _progress as progress_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.quant import quantize as quantize_lib
from aimet_keras.sim import export as export_lib

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = ["optimize_activation_ranges"]

CANDIDATES = ("tf", "tf_enhanced", "percentile", "mse")


def _fp32_tensors(sim, data, names):
    """The FP32 value of each named export tensor over ``data``."""
    import keras

    prepared = sim._prepared
    by_name = {f"{t.name}:0": t for t in prepared.inputs}
    plan = export_lib.tensor_names(sim)
    for site, site_names in zip(prepare_lib.walk(prepared), plan):
        for tensor, name in zip(site.outputs, site_names.outputs):
            by_name[name] = tensor
    wanted = [n for n in names if n in by_name]
    probe = keras.Model(prepared.inputs, [by_name[n] for n in wanted])
    values = probe.predict(data, verbose=0, batch_size=128)
    if len(wanted) == 1:
        values = [values]
    return dict(zip(wanted, values))


def optimize_activation_ranges(
    sim: QuantizationSimModel,
    data: object,
    candidates: Sequence[str] = CANDIDATES,
    verbose: int | str = "auto",
) -> dict[str, tuple[str, float]]:
    """Gives each activation quantizer the candidate range with least error.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel`; its
            activation grids are replaced.
        data: calibration inputs (an array, as ``compute_encodings`` takes).
        candidates: the schemes to try. Defaults to ``("tf",
            "tf_enhanced", "percentile", "mse")``.
        verbose: a progress bar over the schemes: 1 always, 0 never,
            ``"auto"`` in a terminal. Defaults to ``"auto"``.

    Returns:
        ``{tensor name: (scheme chosen, mse)}``.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
    >>> sim = QuantizationSimModel(model, default_output_bw=4)
    >>> sim.compute_encodings(images[:64])
    >>> chosen = optimize_activation_ranges(sim, images[:64], ("tf", "mse"))
    >>> chosen["stem_relu:0"][0] in ("tf", "mse")
    True
    """
    from aimet_keras.sim import QuantizationSimModel

    table = {
        name: quantizer
        for name, (quantizer, kind) in export_lib._quantizer_table(sim).items()
        if kind == "activation"
        and quantizer.enabled
        and quantizer.data_type == "int"
        and quantizer.axis is None
        and quantizer.fixed_range is None  # the config fixes these grids
    }
    encodings = {name: {} for name in table}
    progress = progress_lib.progress_bar(
        verbose, len(candidates), "Calibrating each scheme", "scheme"
    )
    for done, scheme in enumerate(candidates, 1):
        candidate = QuantizationSimModel(
            sim._prepared,
            quant_scheme=scheme,
            default_output_bw=sim._args["activation_bitwidth"],
            default_param_bw=sim._args["param_bitwidth"],
            config_file=sim.config,
        )
        candidate.compute_encodings(data, verbose=0)
        other = export_lib._quantizer_table(candidate)
        for name in table:
            if name in other and other[name][0].is_initialized:
                encodings[name][scheme] = other[name][0].encoding
        if progress is not None:
            progress.update(done)
    values = _fp32_tensors(sim, data, list(table))
    chosen = {}
    for name, quantizer in table.items():
        if name not in values or not encodings[name]:
            continue
        x = values[name]
        errors = {
            scheme: float(
                np.mean(
                    (np.asarray(quantize_lib.quantize_dequantize(x, enc)) - x)
                    ** 2
                )
            )
            for scheme, enc in encodings[name].items()
            if enc.bitwidth == quantizer.bitwidth
        }
        if not errors:
            continue
        best = min(errors, key=errors.get)
        quantizer.set_encoding(encodings[name][best])
        chosen[name] = (best, errors[best])
    sim._tie_grids()
    sim._retrace()
    return chosen
