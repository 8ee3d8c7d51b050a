"""The number grid: encodings, quantize-dequantize and calibration observers."""

from aimet_keras.quant.encoding import MAX_BITWIDTH
from aimet_keras.quant.encoding import MIN_BITWIDTH
from aimet_keras.quant.encoding import Encoding
from aimet_keras.quant.encoding import compute_encoding
from aimet_keras.quant.encoding import float_encoding
from aimet_keras.quant.encoding import grid_from_range
from aimet_keras.quant.encoding import num_steps
from aimet_keras.quant.encoding import round_half_away_from_zero
from aimet_keras.quant.quantize import channel_axes
from aimet_keras.quant.quantize import quantize_dequantize
from aimet_keras.quant.quantize import quantize_dequantize_range

__all__ = [
    "MAX_BITWIDTH",
    "MIN_BITWIDTH",
    "Encoding",
    "channel_axes",
    "compute_encoding",
    "float_encoding",
    "grid_from_range",
    "num_steps",
    "quantize_dequantize",
    "quantize_dequantize_range",
    "round_half_away_from_zero",
]
