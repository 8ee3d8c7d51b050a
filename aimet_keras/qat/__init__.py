"""Quantization-aware training: Keras callbacks and folded batch norms.

QAT is ``fit`` on a simulated model (``sim.model`` or
:func:`~aimet_keras.quantize_model`'s result): quantizers pass gradients
straight through, and range-learning schemes train the grids. This package
adds what low-bit QAT needs around ``fit``.
"""

from aimet_keras.qat.batch_norm_folding import FoldedBatchNorm
from aimet_keras.qat.batch_norm_folding import finalize_batch_norm_folding
from aimet_keras.qat.batch_norm_folding import simulate_batch_norm_folding
from aimet_keras.qat.callbacks import ExportBestEpoch
from aimet_keras.qat.callbacks import FinalizeEncodings
from aimet_keras.qat.callbacks import FreezeActivationEncodings
from aimet_keras.qat.callbacks import FreezeBatchNormStatistics
from aimet_keras.qat.callbacks import IterativeWeightFreezing
from aimet_keras.qat.callbacks import OscillationDampening
from aimet_keras.qat.callbacks import finalize_encodings

__all__ = [
    "ExportBestEpoch",
    "FinalizeEncodings",
    "FoldedBatchNorm",
    "FreezeActivationEncodings",
    "FreezeBatchNormStatistics",
    "IterativeWeightFreezing",
    "OscillationDampening",
    "finalize_encodings",
    "finalize_batch_norm_folding",
    "simulate_batch_norm_folding",
]
