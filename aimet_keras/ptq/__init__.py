"""Post-training techniques: batch-norm folding (more follow)."""

from aimet_keras.ptq.batch_norm_fold import find_bn_pairs
from aimet_keras.ptq.batch_norm_fold import fold_all_batch_norms
from aimet_keras.ptq.batch_norm_fold import fold_batch_norm_pairs

__all__ = ["find_bn_pairs", "fold_all_batch_norms", "fold_batch_norm_pairs"]
