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
* :mod:`aimet_keras.compress`: compression: spatial and weight SVD, channel
  pruning, greedy per-layer ratios, its cost model (MACs, memory, latency).
* :mod:`aimet_keras.analysis`: ``QuantAnalyzer``: per-layer sensitivity,
  ranges and histograms, as JSON and one HTML report.
* :mod:`aimet_keras.zoo`: reference models and Fashion-MNIST data that work
  offline.

Saved models reload the way Keras users reload them: after
``import aimet_keras``, ``keras.saving.load_model("sim.keras")`` finds the
package's layers (``QuantizationWrapper``, ``TensorQuantizer``, the
observers, ``FoldedBatchNorm``). They are registered with Keras as soon as
Keras is imported, before or after this package, so importing this package
alone still loads no TensorFlow.

Example:

>>> import aimet_keras
>>> enc = aimet_keras.quant.compute_encoding(-1.0, 1.0, bitwidth=8)
>>> int(enc.offset)
-128
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0.dev0"

_SUBPACKAGES = (
    "analysis",
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

# The modules whose classes are registered Keras serializables: importing
# them registers the classes that saved ``.keras`` files name.
_SERIALIZABLE_MODULES = (
    "aimet_keras.quant.observers",
    "aimet_keras.sim.quantizer",
    "aimet_keras.sim.wrapper",
    "aimet_keras.qat.batch_norm_folding",
)


def _register_serializables():
    try:
        for name in _SERIALIZABLE_MODULES:
            importlib.import_module(name)
    except Exception as error:  # never break the user's ``import keras``
        warnings.warn(
            "aimet_keras could not register its layers with Keras "
            f"({type(error).__name__}: {error}); import aimet_keras.sim "
            "before keras.saving.load_model to load saved sims.",
            stacklevel=2,
        )


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Registers the serializables right after ``keras`` is first imported.

    An import hook: it finds ``keras`` with the other finders and wraps its
    loader, so that the registration runs once Keras's package has finished
    loading, whoever imports it and when; then it leaves ``sys.meta_path``.
    (TensorFlow looks ``keras`` up with ``find_spec`` before importing it,
    so a lookup alone must not end the hook.)
    """

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def load_then_register(module):
            load(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register_serializables()

        spec.loader.exec_module = load_then_register
        return spec


if "keras" in sys.modules:
    _register_serializables()
elif not any(isinstance(f, _RegisterWhenKerasLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenKerasLoads())


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"aimet_keras.{name}")
    if name in _ENTRY_POINTS:
        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'aimet_keras' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
