"""Helpers for the exporter tests."""

import numpy as np


def run_tflite(path, images, num_threads=2):
    """Float outputs of a TFLite model (integer I/O quantized here)."""
    from aimet_keras.export.tflite import load_interpreter

    interpreter = load_interpreter(
        model_path=str(path), num_threads=num_threads
    )
    (inp,), (out,) = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        images = np.clip(np.round(images / scale + zero), info.min, info.max)
        images = images.astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    values = interpreter.get_tensor(out["index"])
    if out["dtype"] != np.float32:
        scale, zero = out["quantization"]
        values = (values.astype(np.float32) - zero) * scale
    return values


def run_tflite_inputs(path, inputs, num_threads=2):
    """All outputs of a TFLite model fed ``{input name: array}`` (integer
    inputs as they are, such as token ids), in the file's output order."""
    from aimet_keras.export.tflite import load_interpreter

    interpreter = load_interpreter(
        model_path=str(path), num_threads=num_threads
    )
    details = interpreter.get_input_details()
    for detail in details:
        shape = inputs[detail["name"]].shape
        interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    for detail in details:
        interpreter.set_tensor(detail["index"], inputs[detail["name"]])
    interpreter.invoke()
    return [
        interpreter.get_tensor(detail["index"])
        for detail in interpreter.get_output_details()
    ]
