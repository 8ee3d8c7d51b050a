"""Model compression: the cost model, spatial SVD, weight SVD, channel
pruning and AIMET's greedy per-layer ratio selection.

>>> from aimet_keras import compress
>>> cost = compress.model_cost(zoo.load_model("resnet", compile=False))
>>> cost.macs > 0
True
"""

from aimet_keras.compress.callbacks import CompressAtTrainEnd
from aimet_keras.compress.callbacks import accuracy_evaluator
from aimet_keras.compress.cost import LayerCost
from aimet_keras.compress.cost import ModelCost
from aimet_keras.compress.cost import model_cost
from aimet_keras.compress.distill import distilled_data
from aimet_keras.compress.greedy import CompressionStats
from aimet_keras.compress.greedy import compress_model
from aimet_keras.compress.latency import LatencyTable
from aimet_keras.compress.latency import layer_latencies
from aimet_keras.compress.plot import plot_sensitivity
from aimet_keras.compress.pruning import ChannelPruner
from aimet_keras.compress.pruning import NotPrunableError
from aimet_keras.compress.pruning import channel_pruning
from aimet_keras.compress.pruning import prunable_layers
from aimet_keras.compress.svd import max_spatial_svd_rank
from aimet_keras.compress.svd import max_weight_svd_rank
from aimet_keras.compress.svd import spatial_svd
from aimet_keras.compress.svd import spatial_svd_layers
from aimet_keras.compress.svd import svd_rank
from aimet_keras.compress.svd import weight_svd
from aimet_keras.compress.svd import weight_svd_layers

__all__ = [
    "CompressAtTrainEnd",
    "accuracy_evaluator",
    "plot_sensitivity",
    "ChannelPruner",
    "NotPrunableError",
    "channel_pruning",
    "prunable_layers",
    "CompressionStats",
    "LatencyTable",
    "layer_latencies",
    "LayerCost",
    "ModelCost",
    "compress_model",
    "max_spatial_svd_rank",
    "max_weight_svd_rank",
    "model_cost",
    "distilled_data",
    "spatial_svd",
    "spatial_svd_layers",
    "svd_rank",
    "weight_svd",
    "weight_svd_layers",
]
