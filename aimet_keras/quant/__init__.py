"""The number grid: encodings, quantize-dequantize and calibration observers."""

from aimet_keras.quant import float_formats
from aimet_keras.quant import observers
from aimet_keras.quant.encoding import MAX_BITWIDTH
from aimet_keras.quant.encoding import MIN_BITWIDTH
from aimet_keras.quant.encoding import Encoding
from aimet_keras.quant.encoding import compute_encoding
from aimet_keras.quant.encoding import encoding_from_scale_offset
from aimet_keras.quant.encoding import float_encoding
from aimet_keras.quant.encoding import grid_from_range
from aimet_keras.quant.encoding import num_steps
from aimet_keras.quant.encoding import round_half_away_from_zero
from aimet_keras.quant.float_formats import FloatFormat
from aimet_keras.quant.float_formats import float_format
from aimet_keras.quant.float_formats import float_quantize_dequantize
from aimet_keras.quant.observers import MinMaxObserver
from aimet_keras.quant.observers import MseObserver
from aimet_keras.quant.observers import Observer
from aimet_keras.quant.observers import PercentileObserver
from aimet_keras.quant.observers import SqnrObserver
from aimet_keras.quant.quantize import channel_axes
from aimet_keras.quant.quantize import grid_integers
from aimet_keras.quant.quantize import quantize_dequantize
from aimet_keras.quant.quantize import quantize_dequantize_fixed_range
from aimet_keras.quant.quantize import quantize_dequantize_grid
from aimet_keras.quant.quantize import quantize_dequantize_range

__all__ = [
    "MAX_BITWIDTH",
    "MIN_BITWIDTH",
    "Encoding",
    "FloatFormat",
    "MinMaxObserver",
    "MseObserver",
    "Observer",
    "PercentileObserver",
    "SqnrObserver",
    "channel_axes",
    "compute_encoding",
    "encoding_from_scale_offset",
    "float_encoding",
    "float_format",
    "float_formats",
    "float_quantize_dequantize",
    "grid_from_range",
    "grid_integers",
    "num_steps",
    "observers",
    "quantize_dequantize",
    "quantize_dequantize_fixed_range",
    "quantize_dequantize_grid",
    "quantize_dequantize_range",
    "round_half_away_from_zero",
]
