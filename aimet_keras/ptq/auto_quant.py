"""AutoQuant: AIMET's post-training flow, stopping once accuracy is met.

Given a float model, unlabelled calibration data and an evaluation
callback, :func:`auto_quant` tries, in AIMET's order, batch-norm folding,
then cross-layer equalization, then AdaRound, evaluating the quantized model
after each; it stops at the first step whose accuracy is within the allowed
drop of FP32, and otherwise returns the best step.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
import typing

from aimet_keras.ptq import adaround as adaround_lib
from aimet_keras.ptq import batch_norm_fold
from aimet_keras.ptq import cross_layer_equalization

if typing.TYPE_CHECKING:
    import os
    from collections.abc import Callable

    import keras

__all__ = ["AutoQuantResult", "auto_quant"]


@dataclasses.dataclass
class AutoQuantResult:
    """What :func:`auto_quant` found.

    Attributes:
        model: the float model of the chosen step (BN folded, equalized or
            AdaRounded weights).
        sim: its calibrated :class:`~aimet_keras.sim.QuantizationSimModel`.
        accuracy: the sim's accuracy by the evaluation callback.
        fp32_accuracy: the original model's.
        encodings_path: the exported encodings of the chosen sim.
        step: the chosen step's name.
        report: one dict per step tried: ``step``, ``accuracy``, ``drop``,
            ``seconds``.
    """

    model: object
    sim: object
    accuracy: float
    fp32_accuracy: float
    encodings_path: pathlib.Path
    step: str
    report: list


def auto_quant(
    model: keras.Model,
    data: object,
    eval_callback: Callable[[keras.Model], float],
    allowed_accuracy_drop: float = 0.01,
    default_param_bw: int = 8,
    default_output_bw: int = 8,
    quant_scheme: str = "tf_enhanced",
    config_file: str | os.PathLike | None = None,
    results_dir: str | os.PathLike = "auto_quant",
    adaround_iterations: int = 2000,
    verbose: bool = True,
) -> AutoQuantResult:
    """Quantizes ``model`` with as few post-training steps as needed.

    Args:
        model: a built float ``keras.Model``.
        data: unlabelled calibration inputs (array or batched
            ``tf.data.Dataset``), used for calibration and AdaRound.
        eval_callback: ``eval_callback(keras_model) -> float``, higher is
            better (for example top-1 accuracy on held-out data).
        allowed_accuracy_drop: stop at the first step whose accuracy is at
            least FP32 minus this. Defaults to 0.01.
        default_param_bw: weight bits. Defaults to 8.
        default_output_bw: activation bits. Defaults to 8.
        quant_scheme: calibration scheme. Defaults to ``"tf_enhanced"``.
        config_file: quantsim config. Defaults to AIMET's default.
        results_dir: where the chosen sim is exported (and AdaRound's
            file written). Defaults to ``"auto_quant"``.
        adaround_iterations: AdaRound iterations per layer. Defaults to 2000.
        verbose: print a line per step. Defaults to True.

    Returns:
        An :class:`AutoQuantResult`.

    Example:

    >>> import tempfile
    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
    >>> test, labels = zoo.load_fashion_mnist_slice("test")
    >>> def top1(m):
    ...     return float(np.mean(
    ...         m.predict(test[:500], verbose=0).argmax(-1) == labels[:500]))
    >>> result = auto_quant(model, images[:256], top1,
    ...                     results_dir=tempfile.mkdtemp(), verbose=False)
    >>> result.step, result.accuracy >= result.fp32_accuracy - 0.01
    ('batch_norm_fold', True)
    """
    from aimet_keras.sim import QuantizationSimModel

    results_dir = pathlib.Path(results_dir)
    sim_options = dict(
        quant_scheme=quant_scheme,
        default_param_bw=default_param_bw,
        default_output_bw=default_output_bw,
        config_file=config_file,
    )
    fp32_accuracy = float(eval_callback(model))
    target = fp32_accuracy - allowed_accuracy_drop
    report, best = [], None

    def evaluate(step, float_model, frozen_encodings=None):
        nonlocal best
        started = time.perf_counter()
        sim = QuantizationSimModel(float_model, **sim_options)
        if frozen_encodings is not None:
            sim.set_and_freeze_param_encodings(frozen_encodings)
        sim.compute_encodings(data)
        accuracy = float(eval_callback(sim.model))
        entry = dict(
            step=step,
            accuracy=accuracy,
            drop=fp32_accuracy - accuracy,
            seconds=time.perf_counter() - started,
        )
        report.append(entry)
        if verbose:
            print(
                f"AutoQuant {step}: {accuracy:.4f} (FP32 {fp32_accuracy:.4f},"
                f" target {target:.4f})"
            )
        if best is None or accuracy > best[2]:
            best = (step, float_model, accuracy, sim)
        return accuracy >= target

    def steps():
        folded, _ = batch_norm_fold.fold_all_batch_norms(model)
        yield "batch_norm_fold", folded, None
        equalized = cross_layer_equalization.equalize_model(model)
        yield "cross_layer_equalization", equalized, None
        # AdaRound on the better of the two float models so far.
        started_from = best[1]
        params = adaround_lib.AdaroundParameters(
            data,
            num_batches=max(1, len(data) // 32)
            if hasattr(data, "__len__")
            else 32,
            default_num_iterations=adaround_iterations,
        )
        rounded = adaround_lib.Adaround.apply_adaround(
            started_from,
            params,
            results_dir,
            "adaround",
            default_param_bw=default_param_bw,
            default_quant_scheme=quant_scheme,
            config_file=config_file,
            verbose=verbose,
        )
        yield "adaround", rounded, results_dir / "adaround.encodings"

    for step, float_model, frozen in steps():
        if evaluate(step, float_model, frozen):
            break
    step, float_model, accuracy, sim = best
    paths = sim.export(results_dir, f"auto_quant_{step}")
    return AutoQuantResult(
        model=float_model,
        sim=sim,
        accuracy=accuracy,
        fp32_accuracy=fp32_accuracy,
        encodings_path=paths["encodings"],
        step=step,
        report=report,
    )
