"""Model compression: the cost model and spatial SVD (weight SVD, channel
pruning and per-layer ratio selection to come).

>>> from aimet_keras import compress
>>> cost = compress.model_cost(zoo.load_model("resnet", compile=False))
>>> cost.macs > 0
True
"""

from aimet_keras.compress.cost import LayerCost
from aimet_keras.compress.cost import ModelCost
from aimet_keras.compress.cost import model_cost
from aimet_keras.compress.greedy import CompressionStats
from aimet_keras.compress.greedy import compress_model
from aimet_keras.compress.svd import max_spatial_svd_rank
from aimet_keras.compress.svd import max_weight_svd_rank
from aimet_keras.compress.svd import spatial_svd
from aimet_keras.compress.svd import spatial_svd_layers
from aimet_keras.compress.svd import svd_rank
from aimet_keras.compress.svd import weight_svd
from aimet_keras.compress.svd import weight_svd_layers

__all__ = [
    "CompressionStats",
    "LayerCost",
    "ModelCost",
    "compress_model",
    "max_spatial_svd_rank",
    "max_weight_svd_rank",
    "model_cost",
    "spatial_svd",
    "spatial_svd_layers",
    "svd_rank",
    "weight_svd",
    "weight_svd_layers",
]
