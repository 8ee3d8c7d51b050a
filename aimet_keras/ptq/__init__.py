"""Post-training techniques: BN folding, cross-layer equalization, bias
correction, AdaRound (layer by layer, or block by block with quantized
activations), BN re-estimation, AutoQuant, activation range search, manual
and automatic mixed precision."""

from aimet_keras.ptq.activation_ranges import optimize_activation_ranges
from aimet_keras.ptq.adaround import Adaround
from aimet_keras.ptq.adaround import AdaroundParameters
from aimet_keras.ptq.amp import MixedPrecisionResult
from aimet_keras.ptq.amp import choose_mixed_precision
from aimet_keras.ptq.auto_quant import AutoQuantResult
from aimet_keras.ptq.auto_quant import auto_quant
from aimet_keras.ptq.batch_norm_fold import bn_output_stats
from aimet_keras.ptq.batch_norm_fold import find_bn_pairs
from aimet_keras.ptq.batch_norm_fold import fold_all_batch_norms
from aimet_keras.ptq.batch_norm_fold import fold_all_batch_norms_to_scale
from aimet_keras.ptq.batch_norm_fold import fold_batch_norm_pairs
from aimet_keras.ptq.batch_norm_fold import fold_for_deployment
from aimet_keras.ptq.bias_correction import correct_bias
from aimet_keras.ptq.block_reconstruction import BlockResult
from aimet_keras.ptq.block_reconstruction import find_blocks
from aimet_keras.ptq.block_reconstruction import reconstruct_blocks
from aimet_keras.ptq.bn_reestimation import BnReestimationHandle
from aimet_keras.ptq.bn_reestimation import reestimate_bn_stats
from aimet_keras.ptq.callbacks import AdaroundAtTrainEnd
from aimet_keras.ptq.callbacks import adarounded_sim
from aimet_keras.ptq.cross_layer_equalization import equalize_model
from aimet_keras.ptq.cross_layer_equalization import find_cls_sets
from aimet_keras.ptq.mixed_precision import set_precision

__all__ = [
    "Adaround",
    "MixedPrecisionResult",
    "choose_mixed_precision",
    "AdaroundAtTrainEnd",
    "AdaroundParameters",
    "AutoQuantResult",
    "BlockResult",
    "BnReestimationHandle",
    "adarounded_sim",
    "auto_quant",
    "bn_output_stats",
    "correct_bias",
    "equalize_model",
    "find_blocks",
    "find_bn_pairs",
    "find_cls_sets",
    "fold_all_batch_norms",
    "fold_all_batch_norms_to_scale",
    "fold_batch_norm_pairs",
    "fold_for_deployment",
    "optimize_activation_ranges",
    "reconstruct_blocks",
    "reestimate_bn_stats",
    "set_precision",
]
