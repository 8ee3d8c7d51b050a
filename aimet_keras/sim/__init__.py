"""Quantization simulation: quantizers, AIMET's quantsim config, op types.

``QuantizationSimModel`` and ``quantize_model`` build on these.
"""

from aimet_keras.sim.config import CONFIG_NAMES
from aimet_keras.sim.config import OpTypeSettings
from aimet_keras.sim.config import ParamSettings
from aimet_keras.sim.config import QuantSimConfig
from aimet_keras.sim.config import load_quantsim_config
from aimet_keras.sim.config import read_quantsim_config
from aimet_keras.sim.op_types import onnx_op_type
from aimet_keras.sim.quantizer import TensorQuantizer
from aimet_keras.sim.quantsim import QuantizationSimModel
from aimet_keras.sim.quantsim import quantize_model
from aimet_keras.sim.rules import QuantizationRule
from aimet_keras.sim.rules import register_quantization_rule
from aimet_keras.sim.rules import rule_for
from aimet_keras.sim.rules import unregister_quantization_rule
from aimet_keras.sim.spec import LayerSpec
from aimet_keras.sim.spec import QuantizerSpec
from aimet_keras.sim.spec import resolve_layer_specs
from aimet_keras.sim.spec import weight_channel_axis
from aimet_keras.sim.wrapper import QuantizationWrapper
from aimet_keras.sim.wrapper import weight_key

__all__ = [
    "CONFIG_NAMES",
    "LayerSpec",
    "OpTypeSettings",
    "ParamSettings",
    "QuantSimConfig",
    "QuantizationRule",
    "QuantizationSimModel",
    "QuantizationWrapper",
    "QuantizerSpec",
    "TensorQuantizer",
    "load_quantsim_config",
    "read_quantsim_config",
    "onnx_op_type",
    "quantize_model",
    "register_quantization_rule",
    "resolve_layer_specs",
    "rule_for",
    "unregister_quantization_rule",
    "weight_channel_axis",
    "weight_key",
]
