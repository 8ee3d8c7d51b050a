"""Model walking and surgery, in one place."""

from aimet_keras.graph.affine import channel_affine
from aimet_keras.graph.affine import channel_affines_as_depthwise
from aimet_keras.graph.connections import Connections
from aimet_keras.graph.connections import layer_connections
from aimet_keras.graph.deployment import split_for_deployment
from aimet_keras.graph.depthwise import depthwise_from_grouped
from aimet_keras.graph.depthwise import is_depthwise_grouped
from aimet_keras.graph.inline import composite_sublayers
from aimet_keras.graph.inline import inline_composite_layers
from aimet_keras.graph.legacy import from_tf_keras
from aimet_keras.graph.prepare import CallSite
from aimet_keras.graph.prepare import copy_operation
from aimet_keras.graph.prepare import prepare_model
from aimet_keras.graph.prepare import rebuild
from aimet_keras.graph.prepare import split_activations
from aimet_keras.graph.prepare import split_separable_convolutions
from aimet_keras.graph.prepare import unfused_activation
from aimet_keras.graph.prepare import walk

__all__ = [
    "CallSite",
    "Connections",
    "channel_affine",
    "channel_affines_as_depthwise",
    "composite_sublayers",
    "copy_operation",
    "depthwise_from_grouped",
    "from_tf_keras",
    "inline_composite_layers",
    "is_depthwise_grouped",
    "layer_connections",
    "prepare_model",
    "rebuild",
    "split_activations",
    "split_for_deployment",
    "split_separable_convolutions",
    "unfused_activation",
    "walk",
]
