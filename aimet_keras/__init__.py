"""aimet_keras: AIMET-style quantization and compression for Keras 3.

Subpackages load on first use, so ``import aimet_keras`` stays quick and
never imports TensorFlow, tf2onnx, onnx or tfmot by itself:

* :mod:`aimet_keras.quant`: AIMET's grid (``Encoding``, ``compute_encoding``,
  ``quantize_dequantize``) and calibration observers.
* :mod:`aimet_keras.sim`: ``QuantizationSimModel`` and ``quantize_model``.
* :mod:`aimet_keras.ptq`: post-training techniques (BN folding, CLE, bias
  correction, AdaRound, AutoQuant).
* :mod:`aimet_keras.qat`: quantization-aware training callbacks and batch
  norm folding for ``fit``.
* :mod:`aimet_keras.export`: integer TFLite and QDQ ONNX export.
* :mod:`aimet_keras.compress`: compression (so far its cost model: MACs and
  weight memory per layer).
* :mod:`aimet_keras.zoo`: reference models and Fashion-MNIST data that work
  offline.

Example:

>>> import aimet_keras
>>> enc = aimet_keras.quant.compute_encoding(-1.0, 1.0, bitwidth=8)
>>> int(enc.offset)
-128
"""

import importlib

__version__ = "0.1.0.dev0"

_SUBPACKAGES = (
    "compress",
    "export",
    "graph",
    "plotting",
    "ptq",
    "qat",
    "quant",
    "sim",
    "zoo",
)

# Entry points re-exported at the top level, loaded on first use.
_ENTRY_POINTS = {
    "QuantizationSimModel": "aimet_keras.sim",
    "quantize_model": "aimet_keras.sim",
    "export_tflite": "aimet_keras.export.tflite",
    "export_onnx": "aimet_keras.export.onnx",
}

__all__ = ["__version__", *_SUBPACKAGES, *_ENTRY_POINTS]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"aimet_keras.{name}")
    if name in _ENTRY_POINTS:
        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'aimet_keras' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
