"""Quantization simulation: AIMET's quantsim config and op-type table.

``QuantizationSimModel`` and ``quantize_model`` build on these (in progress).
"""

from aimet_keras.sim.config import CONFIG_NAMES
from aimet_keras.sim.config import OpTypeSettings
from aimet_keras.sim.config import ParamSettings
from aimet_keras.sim.config import QuantSimConfig
from aimet_keras.sim.config import load_quantsim_config
from aimet_keras.sim.op_types import onnx_op_type

__all__ = [
    "CONFIG_NAMES",
    "OpTypeSettings",
    "ParamSettings",
    "QuantSimConfig",
    "load_quantsim_config",
    "onnx_op_type",
]
