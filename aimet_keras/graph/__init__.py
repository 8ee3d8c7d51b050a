"""Model walking and surgery, in one place."""

from aimet_keras.graph.connections import Connections
from aimet_keras.graph.connections import layer_connections

__all__ = ["Connections", "layer_connections"]
