"""Exporters: AIMET's encodings files, integer TFLite and ONNX models.

* :func:`export_tflite` (:mod:`aimet_keras.export.tflite`): an int8 or 16x8
  TFLite model on the sim's grids.
* :func:`export_onnx` (:mod:`aimet_keras.export.onnx`): a QDQ ONNX model,
  and an FP32 ONNX model with AIMET encodings keyed by its tensor names.
* :mod:`aimet_keras.export.layer_outputs`: per-layer outputs of the FP32
  model, the sim and the TFLite model, and where they part.

The exporters load TensorFlow, tf2onnx and onnx on first use.
"""

import importlib

from aimet_keras.export.encodings import ENCODING_VERSIONS
from aimet_keras.export.encodings import encodings_from_dict
from aimet_keras.export.encodings import encodings_to_dict
from aimet_keras.export.encodings import read_encodings
from aimet_keras.export.encodings import write_encodings

_LAZY = {
    "export_tflite": "aimet_keras.export.tflite",
    "export_onnx": "aimet_keras.export.onnx",
}

__all__ = [
    "ENCODING_VERSIONS",
    "export_onnx",
    "export_tflite",
    "encodings_from_dict",
    "encodings_to_dict",
    "read_encodings",
    "write_encodings",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(
        f"module 'aimet_keras.export' has no attribute {name!r}"
    )
