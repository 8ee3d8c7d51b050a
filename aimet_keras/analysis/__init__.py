"""Finding the layers that break quantization, by numbers and by pictures.

* :class:`QuantAnalyzer` (AIMET's ``QuantAnalyzer``): per-layer
  sensitivity (one layer quantized at a time, all but one), weights-only and
  activations-only accuracy, per-layer MSE against FP32, activation and
  weight ranges and histograms, per-channel weight ranges before and after
  cross-layer equalization, and where the exported TFLite model departs
  from the sim. Results come as a :class:`QuantAnalysis` (JSON, Markdown)
  and one self-contained HTML report.

Plots need matplotlib (``pip install "aimet-keras[plot]"``).
"""

from aimet_keras.analysis.quant_analyzer import LayerAnalysis
from aimet_keras.analysis.quant_analyzer import QuantAnalysis
from aimet_keras.analysis.quant_analyzer import QuantAnalyzer

__all__ = ["LayerAnalysis", "QuantAnalysis", "QuantAnalyzer"]
