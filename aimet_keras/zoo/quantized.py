"""Quantized variants of the reference models, with the recipes that made them.

AIMET's model zoo ships, for each model, the optimized weights, the
encodings and the settings that produced them. This module does the same
for the three Fashion-MNIST reference models
(:data:`~aimet_keras.zoo.MODEL_NAMES`):

* ``"w8a8"``: 8-bit weights (per channel) and activations on TFLite's int8
  grids (``tflite_int8`` config), batch norms folded, nearest rounding.
  Exports to a fully integer TFLite model.
* ``"w4a8"``: 4-bit per-channel weights rounded by AdaRound, 8-bit
  activations (``htp`` config).
* ``"w4a4"``: 4-bit weights and activations: per-tensor activation range
  search, then block reconstruction (QDrop) with the 4-bit activations in
  the loop (``htp`` config).

Each variant is a recipe file (``<model>_<variant>.json``: the steps and
their settings, the calibration data, the measured accuracy and the
versions), an AIMET encodings file, and for the variants whose optimisation
changes the weights, those weights. :func:`load_quantized` rebuilds the sim
from them in seconds; :func:`make_quantized` runs the recipe from scratch
(what ``python -m benchmarks run --suite zoo_quantized`` does to produce
the shipped files).

Example:

>>> sim = load_quantized("resnet", "w8a8")
>>> images, labels = load_fashion_mnist_slice("test")
>>> predictions = sim.model.predict(images, verbose=0)
>>> top1 = float((predictions.argmax(-1) == labels).mean())
>>> recorded = recipe("resnet", "w8a8")["accuracy"]["slice_quantized"]
>>> abs(top1 - recorded) < 0.002
True
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import time
import typing

import numpy as np

from aimet_keras.zoo import datasets as datasets_lib
from aimet_keras.zoo.architectures import ARCHITECTURES

if typing.TYPE_CHECKING:
    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = [
    "VARIANTS",
    "load_quantized",
    "make_quantized",
    "quantized_variants",
    "recipe",
    "save_quantized",
]

QUANTIZED_DIR = pathlib.Path(__file__).parent / "data" / "quantized"
RECIPE_SCHEMA = 1

# The settings of each variant. ``sim`` is passed to QuantizationSimModel;
# the optimisation steps run in the order listed.
VARIANTS = {
    "w8a8": {
        "description": (
            "8-bit per-channel weights and 8-bit activations on TFLite's "
            "int8 grids; batch norms folded; nearest rounding."
        ),
        "sim": {
            "config_file": "tflite_int8",
            "quant_scheme": "tf_enhanced",
            "default_param_bw": 8,
            "default_output_bw": 8,
        },
        "steps": ["fold_for_deployment", "compute_encodings"],
        "changes_weights": False,
    },
    "w4a8": {
        "description": (
            "4-bit per-channel weights rounded by AdaRound (2,000 "
            "iterations a layer), 8-bit activations; batch norms folded."
        ),
        "sim": {
            "config_file": "htp",
            "quant_scheme": "tf_enhanced",
            "default_param_bw": 4,
            "default_output_bw": 8,
        },
        "steps": ["fold_for_deployment", "adaround", "compute_encodings"],
        "changes_weights": True,
    },
    "w4a4": {
        "description": (
            "4-bit per-channel weights and 4-bit activations: activation "
            "range search, then block reconstruction (QDrop, 2,000 "
            "iterations a block); batch norms folded."
        ),
        "sim": {
            "config_file": "htp",
            "quant_scheme": "tf_enhanced",
            "default_param_bw": 4,
            "default_output_bw": 4,
        },
        "steps": [
            "fold_for_deployment",
            "compute_encodings",
            "optimize_activation_ranges",
            "reconstruct_blocks",
        ],
        "changes_weights": True,
    },
}

# Variants made and measured but not shipped, and why.
NOT_SHIPPED = {
    ("transformer", "w4a4"): (
        "4-bit activations in attention and softmax lose about 34 points "
        "(quick run: 55% against 90% FP32); use w4a8."
    ),
}

# The optimisation settings the shipped files were made with.
CALIBRATION_IMAGES = 1024
ITERATIONS = 2000


def _check(name, variant):
    if name not in ARCHITECTURES:
        raise ValueError(
            f"name={name!r} is not a reference model; use one of "
            f"{list(ARCHITECTURES)}."
        )
    if variant not in VARIANTS:
        raise ValueError(
            f"variant={variant!r} is not a quantized variant; use one of "
            f"{list(VARIANTS)}."
        )


def _paths(name, variant, directory=None):
    stem = pathlib.Path(directory or QUANTIZED_DIR) / f"{name}_{variant}"
    return {
        "recipe": stem.with_suffix(".json"),
        "encodings": stem.with_suffix(".encodings"),
        "weights": stem.with_suffix(".weights.npz"),
    }


def quantized_variants(
    directory: str | os.PathLike | None = None,
) -> list[tuple[str, str]]:
    """The ``(model, variant)`` pairs whose files are shipped, in order.

    Args:
        directory: where to look. Defaults to the package's
            ``zoo/data/quantized``.

    Example:

    >>> ("resnet", "w4a8") in quantized_variants()
    True
    """
    return [
        (name, variant)
        for name in ARCHITECTURES
        for variant in VARIANTS
        if _paths(name, variant, directory)["recipe"].is_file()
    ]


def recipe(
    name: str, variant: str, directory: str | os.PathLike | None = None
) -> dict:
    """The recipe of a shipped variant: steps, settings, measured accuracy.

    Args:
        name: a reference model (``"resnet"``, ``"mobilenet_v2"``,
            ``"transformer"``).
        variant: ``"w8a8"``, ``"w4a8"`` or ``"w4a4"``.
        directory: where the files are. Defaults to the package's.

    Returns:
        The recipe dict: ``model``, ``variant``, ``description``, ``sim``
        (the ``QuantizationSimModel`` arguments), ``steps`` (each with its
        settings), ``calibration``, ``accuracy`` (``fp32`` and
        ``quantized`` top-1 on the full test set, ``slice_fp32`` and
        ``slice_quantized`` on the shipped slice), ``files`` and
        ``versions``.

    Raises:
        ValueError: for an unknown model or variant.
        FileNotFoundError: when the variant's files are not there, with the
            command that makes them.

    Example:

    >>> recipe("resnet", "w4a8")["sim"]["default_param_bw"]
    4
    """
    _check(name, variant)
    if (name, variant) in NOT_SHIPPED:
        raise FileNotFoundError(
            f"{name} {variant} is not shipped: {NOT_SHIPPED[name, variant]}"
        )
    path = _paths(name, variant, directory)["recipe"]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; make it with `python -m benchmarks run "
            "--suite zoo_quantized --update-results`."
        )
    return json.loads(path.read_text())


def _fold(name):
    from aimet_keras import ptq
    from aimet_keras.zoo import load_model

    return ptq.fold_for_deployment(load_model(name, compile=False))


def load_quantized(
    name: str, variant: str, directory: str | os.PathLike | None = None
) -> QuantizationSimModel:
    """The calibrated sim of a shipped quantized variant, ready to use.

    Rebuilds the variant as its recipe says (the reference model, batch
    norms folded, the recipe's :class:`~aimet_keras.sim.QuantizationSimModel`
    settings), puts in the optimised weights where the recipe changed them,
    and loads the encodings: no calibration and no optimisation run. Where
    the weights were optimised, their grids are frozen, so a later
    ``compute_encodings`` keeps them.

    Args:
        name: ``"resnet"``, ``"mobilenet_v2"`` or ``"transformer"``.
        variant: ``"w8a8"``, ``"w4a8"`` or ``"w4a4"``.
        directory: where the files are. Defaults to the package's.

    Returns:
        A calibrated :class:`~aimet_keras.sim.QuantizationSimModel`: predict
        with ``sim.model``, export with ``sim.export``,
        :func:`~aimet_keras.export_tflite` (``w8a8``) or
        :func:`~aimet_keras.export_onnx`.

    Raises:
        ValueError: for an unknown model or variant, or files that do not
            match the model (naming the layer).
        FileNotFoundError: when the variant is not shipped.

    Example:

    >>> sim = load_quantized("mobilenet_v2", "w4a8")
    >>> sim.model.output_shape
    (None, 10)
    """
    from aimet_keras.sim import QuantizationSimModel

    settings = recipe(name, variant, directory)
    paths = _paths(name, variant, directory)
    sim = QuantizationSimModel(_fold(name), in_place=True, **settings["sim"])
    if settings["files"].get("weights"):
        with np.load(paths["weights"]) as stored:
            _set_weights(sim, dict(stored))
    sim.load_encodings_to_sim(paths["encodings"])
    if settings["files"].get("weights"):
        # Optimised weights only fit their own grids: keep those through a
        # later compute_encodings.
        sim.set_and_freeze_param_encodings(paths["encodings"])
    return sim


def _weight_values(sim):
    """``{"<wrapper>/<index>": array}`` of every wrapped layer's weights."""
    return {
        f"{wrapper.name}/{index}": np.asarray(weight)
        for wrapper in sim.quant_wrappers()
        for index, weight in enumerate(wrapper.layer.weights)
    }


def _set_weights(sim, stored):
    names = set()
    for wrapper in sim.quant_wrappers():
        for index, weight in enumerate(wrapper.layer.weights):
            key = f"{wrapper.name}/{index}"
            if key not in stored:
                raise ValueError(
                    f"The weights file has no {key} (layer {wrapper.name}); "
                    "it was made for another model: remake it with "
                    "make_quantized."
                )
            if tuple(stored[key].shape) != tuple(weight.shape):
                raise ValueError(
                    f"Weight {key} of layer {wrapper.name} has shape "
                    f"{tuple(weight.shape)}; the file has "
                    f"{tuple(stored[key].shape)}: remake it with "
                    "make_quantized."
                )
            weight.assign(stored[key])
            names.add(key)
    extra = sorted(set(stored) - names)
    if extra:
        raise ValueError(
            f"The weights file names {extra[:3]}, which the model does not "
            "have: remake it with make_quantized."
        )


def make_quantized(
    name: str,
    variant: str,
    calibration_data: np.ndarray,
    iterations: int = ITERATIONS,
) -> tuple[QuantizationSimModel, list[dict]]:
    """Runs a variant's recipe from scratch on the reference model.

    Args:
        name: ``"resnet"``, ``"mobilenet_v2"`` or ``"transformer"``.
        variant: ``"w8a8"``, ``"w4a8"`` or ``"w4a4"``.
        calibration_data: images for calibration and for the rounding
            optimisation (the shipped files used the first 1,024 training
            images).
        iterations: AdaRound iterations a layer, or block reconstruction
            iterations a block. Defaults to 2,000.

    Returns:
        ``(sim, steps)``: the calibrated sim and the steps run, each a dict
        of its settings and its ``seconds``.

    Example:

    >>> images, _ = load_fashion_mnist_slice("calibration")
    >>> sim, steps = make_quantized("resnet", "w8a8", images[:256])
    >>> [step["step"] for step in steps]
    ['fold_for_deployment', 'compute_encodings']
    """
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    _check(name, variant)
    settings = VARIANTS[variant]
    batches = max(1, len(calibration_data) // 32)
    steps = []

    def timed(step, function, **record):
        started = time.perf_counter()
        result = function()
        record["seconds"] = round(time.perf_counter() - started, 1)
        steps.append({"step": step, **record})
        return result

    model = timed("fold_for_deployment", lambda: _fold(name))
    encodings = None
    if "adaround" in settings["steps"]:
        folder = tempfile.mkdtemp()
        sim_settings = settings["sim"]
        model = timed(
            "adaround",
            lambda: ptq.Adaround.apply_adaround(
                model,
                ptq.AdaroundParameters(
                    calibration_data,
                    num_batches=batches,
                    default_num_iterations=iterations,
                ),
                folder,
                name,
                default_param_bw=sim_settings["default_param_bw"],
                default_quant_scheme=sim_settings["quant_scheme"],
                config_file=sim_settings["config_file"],
                verbose=False,
            ),
            iterations=iterations,
            images=len(calibration_data),
        )
        encodings = os.path.join(folder, f"{name}.encodings")
    sim = QuantizationSimModel(model, in_place=True, **settings["sim"])
    if encodings is not None:
        sim.set_and_freeze_param_encodings(encodings)
    timed(
        "compute_encodings",
        lambda: sim.compute_encodings(calibration_data, verbose=0),
        images=len(calibration_data),
    )
    if "optimize_activation_ranges" in settings["steps"]:
        timed(
            "optimize_activation_ranges",
            lambda: ptq.optimize_activation_ranges(
                sim, calibration_data, verbose=0
            ),
            images=len(calibration_data),
        )
    if "reconstruct_blocks" in settings["steps"]:
        timed(
            "reconstruct_blocks",
            lambda: ptq.reconstruct_blocks(
                sim,
                ptq.AdaroundParameters(
                    calibration_data,
                    num_batches=batches,
                    default_num_iterations=iterations,
                ),
                verbose=False,
            ),
            iterations=iterations,
            images=len(calibration_data),
        )
    return sim, steps


def save_quantized(
    sim: QuantizationSimModel,
    name: str,
    variant: str,
    details: dict,
    directory: str | os.PathLike | None = None,
) -> dict[str, pathlib.Path | None]:
    """Writes a variant's recipe, encodings and weights, all or nothing.

    Args:
        sim: the calibrated sim :func:`make_quantized` returned.
        name: the reference model.
        variant: the variant.
        details: what the recipe records besides the variant's settings:
            ``steps``, ``calibration``, ``accuracy`` (see :func:`recipe`).
        directory: where to write. Defaults to the package's.

    Returns:
        ``{"recipe": Path, "encodings": Path, "weights": Path or None}``.
    """
    from aimet_keras.export import staging
    from aimet_keras.sim import export as export_lib

    _check(name, variant)
    paths = _paths(name, variant, directory)
    paths["recipe"].parent.mkdir(parents=True, exist_ok=True)
    settings = VARIANTS[variant]
    changes_weights = settings["changes_weights"]
    document = {
        "schema": RECIPE_SCHEMA,
        "model": name,
        "variant": variant,
        "description": settings["description"],
        "sim": settings["sim"],
        **details,
        "files": {
            "encodings": paths["encodings"].name,
            "weights": paths["weights"].name if changes_weights else None,
        },
        "versions": _versions(),
    }
    targets = {
        "encodings": paths["encodings"],
        "recipe": paths["recipe"],
    }
    if changes_weights:
        targets["weights"] = paths["weights"]
    with staging.staged_files(targets) as staged:
        staged["encodings"].write_text(
            json.dumps(export_lib.sim_encodings(sim, version="2.0.0")) + "\n"
        )
        if changes_weights:
            np.savez_compressed(staged["weights"], **_weight_values(sim))
        staged["recipe"].write_text(json.dumps(document, indent=1) + "\n")
    if not changes_weights:
        paths["weights"].unlink(missing_ok=True)
    return {**paths, "weights": paths["weights"] if changes_weights else None}


def _versions():
    import keras
    import tensorflow as tf

    import aimet_keras

    return {
        "aimet_keras": aimet_keras.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def calibration_images(count=CALIBRATION_IMAGES):
    """The images the shipped variants were made with: the first ``count``
    training images of Fashion-MNIST (the full set, Debian's
    ``dataset-fashion-mnist``)."""
    images, _ = datasets_lib.load_fashion_mnist("train")
    return images[:count]
