"""Model compression: the cost model (spatial SVD, weight SVD and channel
pruning build on it).

>>> from aimet_keras import compress
>>> cost = compress.model_cost(zoo.load_model("resnet", compile=False))
>>> cost.macs > 0
True
"""

from aimet_keras.compress.cost import LayerCost
from aimet_keras.compress.cost import ModelCost
from aimet_keras.compress.cost import model_cost

__all__ = ["LayerCost", "ModelCost", "model_cost"]
