"""Real architectures end to end: what a user runs, stage by stage.

:func:`end_to_end` takes a model as a user brings it and runs every stage
of the toolkit on it (activation split, BN folding, CLE, the sim with no
unknown layer, calibration, AdaRound, TFLite, ONNX and AIMET export),
checking that the exported models compute what the sim computes.
"""

import dataclasses
import warnings

import keras
import numpy as np

from aimet_keras import export_onnx
from aimet_keras import export_tflite
from aimet_keras import graph
from aimet_keras import ptq
from aimet_keras.sim import QuantizationSimModel
from benchmarks.photos import photo_crops  # noqa: F401 (re-exported)


def run_onnx(path, inputs):
    """Every output of an ONNX model at onnxruntime's defaults, in the
    Keras model's order (the exporter keeps it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: inputs})


def run_tflite(path, inputs):
    """Every output of a float-I/O TFLite model, in the Keras model's order
    (the converted function's outputs keep it)."""
    from aimet_keras.export.tflite import load_interpreter

    interpreter = load_interpreter(model_path=str(path), num_threads=2)
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], inputs.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], inputs)
    interpreter.invoke()
    return [
        interpreter.get_tensor(out["index"])
        for out in interpreter.get_output_details()
    ]


@dataclasses.dataclass
class Result:
    """What :func:`end_to_end` measured.

    Attributes:
        sim: the calibrated sim of the folded model.
        tflite_agreement: fraction of outputs of the int8 TFLite model
            within one output step of the sim's (None when not exported).
        onnx_agreement: the same for the QDQ ONNX model.
        output_steps: the sim's grid step of each model output.
        sim_outputs: the sim's outputs on the data, a list.
        tflite_outputs: the TFLite model's (None when not exported).
        onnx_outputs: the QDQ ONNX model's.
    """

    sim: object
    tflite_agreement: float
    onnx_agreement: float
    output_steps: list
    sim_outputs: list
    tflite_outputs: list
    onnx_outputs: list


def _within_a_step(got, expected, steps):
    """The fraction of all outputs' values within a step of the sim's."""
    close = [
        np.abs(g - e) <= s * 1.001 for g, e, s in zip(got, expected, steps)
    ]
    return float(np.mean(np.concatenate([c.ravel() for c in close])))


def output_steps(sim):
    """The grid step of each of the sim's model outputs."""
    producers = {}
    for wrapper in sim.quant_wrappers():
        for i, quantizer in enumerate(wrapper.output_quantizers):
            producers[(wrapper.name, i)] = quantizer
    steps = []
    for tensor in sim.model.outputs:
        layer, _, index = tensor._keras_history
        quantizer = producers[(layer.name, index)]
        steps.append(float(np.max(quantizer.encoding.delta)))
    return steps


def end_to_end(model, data, tmp_path, adaround=True, tflite=True):
    """Runs every stage on ``model``; returns a :class:`Result`.

    Raises on any stage's failure, and on a warning that a layer is not
    simulated (the sim is built with ``strict=True``).
    """
    model = graph.split_separable_convolutions(graph.split_activations(model))
    model = graph.depthwise_from_grouped(model)
    folded, _ = ptq.fold_all_batch_norms(model)
    equalized = ptq.equalize_model(model)
    assert equalized.count_params() <= model.count_params()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sim = QuantizationSimModel(
            folded, config_file="tflite_int8", strict=True
        )
    sim.compute_encodings(data)
    expected = keras.tree.flatten(sim.model.predict(data, verbose=0))
    steps = output_steps(sim)
    tflite_outputs, tflite_agreement = None, None
    if tflite:
        exported = export_tflite(sim, tmp_path / "model.tflite")
        tflite_outputs = run_tflite(exported.path, data)
        tflite_agreement = _within_a_step(tflite_outputs, expected, steps)
    onnx_files = export_onnx(sim, tmp_path / "model.onnx")
    onnx_outputs = run_onnx(onnx_files.qdq_path, data)
    onnx_agreement = _within_a_step(onnx_outputs, expected, steps)
    sim.export(tmp_path, "model")
    if adaround:
        params = ptq.AdaroundParameters(
            data, num_batches=1, default_num_iterations=2
        )
        rounded = ptq.Adaround.apply_adaround(
            folded, params, tmp_path / "adaround", "model", verbose=False
        )
        assert rounded.count_params() == folded.count_params()
    return Result(
        sim,
        tflite_agreement,
        onnx_agreement,
        steps,
        expected,
        tflite_outputs,
        onnx_outputs,
    )
