"""AdaRound inside a training script: one call and a Keras callback.

:func:`adarounded_sim` is AIMET's post-training flow after folding: AdaRound
the weights, build the sim with those grids frozen, calibrate the
activations. :class:`AdaroundAtTrainEnd` runs it when ``fit`` ends (the
counterpart of :class:`~aimet_keras.compress.CompressAtTrainEnd`), so a
training script ends with a rounded sim and, if asked, its integer TFLite
model.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import tempfile
import typing

import keras

from aimet_keras.ptq import adaround as adaround_lib
from aimet_keras.ptq import batch_norm_fold

if typing.TYPE_CHECKING:
    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = ["AdaroundAtTrainEnd", "adarounded_sim"]


def adarounded_sim(
    model: keras.Model,
    data: object,
    path: str | os.PathLike,
    filename_prefix: str = "adaround",
    default_param_bw: int = 4,
    default_output_bw: int = 8,
    quant_scheme: str = "tf_enhanced",
    config_file: str | os.PathLike | dict | None = None,
    num_iterations: int = 10000,
    batch_size: int = 32,
    verbose: bool = True,
) -> QuantizationSimModel:
    """A calibrated sim whose weights AdaRound rounded.

    The model is rewritten for deployment
    (:func:`~aimet_keras.graph.split_for_deployment`) and its batch norms
    folded; AdaRound writes ``<path>/<filename_prefix>.encodings``; the sim
    freezes those weight grids and calibrates its activations on ``data``.

    Args:
        model: a built ``keras.Model`` (unchanged).
        data: unlabelled model inputs (an array, or a batched
            ``tf.data.Dataset``) for AdaRound and calibration.
        path: folder for the AdaRound encodings (created if missing).
        filename_prefix: their file name's stem. Defaults to
            ``"adaround"``.
        default_param_bw: weight bits. Defaults to 4.
        default_output_bw: activation bits. Defaults to 8.
        quant_scheme: grid scheme. Defaults to ``"tf_enhanced"``.
        config_file: the quantsim config. Defaults to AIMET's default.
        num_iterations: AdaRound's optimisation steps per layer. Defaults
            to 10000 (AIMET's).
        batch_size: AdaRound's samples per step. Defaults to 32.
        verbose: AdaRound's line per layer and a calibration progress bar
            in a terminal. Defaults to True.

    Returns:
        The calibrated :class:`~aimet_keras.sim.QuantizationSimModel`.

    Example:

    >>> import tempfile
    >>> from aimet_keras import zoo
    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
    >>> sim = adarounded_sim(model, images[:64], tempfile.mkdtemp(),
    ...                      num_iterations=10, verbose=False)
    >>> sim.model.predict(images[:2], verbose=0).shape
    (2, 10)
    """
    from aimet_keras.sim import QuantizationSimModel

    folded = batch_norm_fold.fold_for_deployment(model)
    params = adaround_lib.AdaroundParameters(
        data,
        # Every sample: an array's batches, or a dataset's (take(-1)).
        num_batches=-(-len(data) // batch_size)
        if hasattr(data, "shape")
        else -1,
        default_num_iterations=num_iterations,
        batch_size=batch_size,
    )
    rounded = adaround_lib.Adaround.apply_adaround(
        folded,
        params,
        path,
        filename_prefix,
        default_param_bw=default_param_bw,
        default_quant_scheme=quant_scheme,
        config_file=config_file,
        verbose=verbose,
    )
    sim = QuantizationSimModel(
        rounded,
        quant_scheme=quant_scheme,
        default_param_bw=default_param_bw,
        default_output_bw=default_output_bw,
        config_file=config_file,
        in_place=True,
    )
    sim.set_and_freeze_param_encodings(
        str(pathlib.Path(path) / f"{filename_prefix}.encodings")
    )
    sim.compute_encodings(data, verbose="auto" if verbose else 0)
    return sim


# The adarounded_sim arguments the callback passes on as given.
_PASSED_ON = set(inspect.signature(adarounded_sim).parameters) - {
    "model",
    "data",
    "path",
    "verbose",
}


class AdaroundAtTrainEnd(keras.callbacks.Callback):
    """AdaRounds the trained model when ``fit`` ends, and can export it.

    Args:
        data: unlabelled inputs for AdaRound and calibration (a few hundred
            to a few thousand samples).
        tflite_path: write the integer TFLite model here (needs a TFLite
            config, e.g. ``config_file="tflite_int8"``). Defaults to None.
        encodings_path: folder for AdaRound's encodings. Defaults to a
            temporary folder.
        verbose: print AdaRound's progress and where the files went.
            Defaults to 1.
        **options: more :func:`adarounded_sim` arguments
            (``default_param_bw``, ``default_output_bw``, ``quant_scheme``,
            ``config_file``, ``num_iterations``, ``batch_size``).

    Attributes:
        sim: the calibrated sim, after training.
        exported: the :func:`~aimet_keras.export_tflite` result, if asked.

    Example:

    >>> from aimet_keras import zoo
    >>> model = zoo.load_model("resnet")
    >>> images, labels = zoo.load_fashion_mnist_slice("calibration")
    >>> adaround = AdaroundAtTrainEnd(images[:64], num_iterations=10,
    ...                               verbose=0)
    >>> _ = model.fit(images[:64], labels[:64], epochs=1, verbose=0,
    ...               callbacks=[adaround])
    >>> adaround.sim.model.predict(images[:2], verbose=0).shape
    (2, 10)
    """

    def __init__(
        self,
        data: object,
        tflite_path: str | os.PathLike | None = None,
        encodings_path: str | os.PathLike | None = None,
        verbose: int = 1,
        **options: object,
    ) -> None:
        super().__init__()
        unknown = set(options) - _PASSED_ON
        if unknown:
            raise TypeError(
                f"AdaroundAtTrainEnd got unknown arguments {sorted(unknown)}; "
                "see adarounded_sim for the ones it passes on."
            )
        self.data = data
        self.tflite_path = tflite_path
        self.encodings_path = encodings_path
        self.verbose = verbose
        self.options = options
        self.sim = None
        self.exported = None

    def on_train_end(self, logs: dict | None = None) -> None:
        path = self.encodings_path or tempfile.mkdtemp(prefix="adaround_")
        self.sim = adarounded_sim(
            self.model,
            self.data,
            path,
            verbose=bool(self.verbose),
            **self.options,
        )
        if self.tflite_path is not None:
            from aimet_keras.export import tflite as tflite_lib

            self.exported = tflite_lib.export_tflite(self.sim, self.tflite_path)
        if self.verbose:
            where = (
                f"; TFLite model {self.tflite_path}" if self.exported else ""
            )
            print(f"AdaroundAtTrainEnd: encodings in {path}{where}.")
