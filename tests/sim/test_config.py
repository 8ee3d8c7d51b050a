"""AIMET's quantsim config: shipped files, parsing and errors."""

import json

import keras
import pytest

from aimet_keras.sim import config as config_lib
from aimet_keras.sim import op_types


@pytest.mark.parametrize("name", config_lib.CONFIG_NAMES)
def test_shipped_configs_parse(name):
    config = config_lib.load_quantsim_config(name)
    assert config.output_quantized
    assert config.param_defaults.is_quantized
    assert config.param_defaults.is_symmetric
    assert config.model_input_quantized
    assert all(len(group) >= 2 for group in config.supergroups)


def test_default_config_matches_aimet():
    config = config_lib.load_quantsim_config()
    assert not config.per_channel_quantization
    assert not config.strict_symmetric and not config.unsigned_symmetric
    assert not config.activation_symmetric
    assert config.params["bias"].is_quantized is False
    assert config.op_types["Dropout"].is_output_quantized is False
    assert ("Conv", "Relu") in config.supergroups
    assert ("Add", "Relu") in config.supergroups


def test_tflite_config_follows_the_int8_spec():
    config = config_lib.load_quantsim_config("tflite_int8")
    assert config.per_channel_quantization and config.strict_symmetric
    assert config.op_types["Gemm"].per_channel_quantization is False
    assert not config.activation_symmetric
    assert config.params["bias"].bitwidth == 32


def test_htp_config_has_constraints_and_per_op_params():
    config = config_lib.load_quantsim_config("htp")
    assert config.hw_version == "V73"
    assert config.op_types["Softmax"].encoding_constraints == (0.0, 1.0)
    layer_norm = config.op_types["LayerNormalization"]
    assert layer_norm.params["weight"].is_symmetric is False
    assert ("Conv", "BatchNormalization", "Relu") in config.supergroups


def test_json_booleans_and_strings_agree(tmp_path):
    strings = {"defaults": {"ops": {"is_output_quantized": "True"}}}
    bools = {"defaults": {"ops": {"is_output_quantized": True}}}
    assert (
        config_lib.load_quantsim_config(strings).output_quantized
        == config_lib.load_quantsim_config(bools).output_quantized
        is True
    )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(strings))
    loaded = config_lib.load_quantsim_config(str(path))
    assert loaded.output_quantized and loaded.source == str(path)


def test_keras_example_shape_has_no_default_output_quantization():
    # AIMET's Keras examples leave defaults.ops empty and quantize inputs.
    config = config_lib.load_quantsim_config(
        {
            "defaults": {"ops": {}, "params": {"is_quantized": "True"}},
            "op_type": {"Conv": {"is_input_quantized": "True"}},
        }
    )
    assert not config.output_quantized
    assert config.op_types["Conv"].is_input_quantized


@pytest.mark.parametrize(
    "data,fragment",
    [
        (
            {"defaults": {"per_chanel_quantization": "True"}},
            r"defaults\.per_chanel_quantization.*per_channel_quantization",
        ),
        (
            {"op_type": {"Conv2D": {}}},
            r"op_type\.Conv2D.*'Conv2D' is not an op type",
        ),
        (
            {"op_type": {"Conv": {"is_output_quantised": "True"}}},
            r"op_type\.Conv\.is_output_quantised.*unknown key",
        ),
        (
            {"defaults": {"ops": {"is_input_quantized": "True"}}},
            r"defaults\.ops\.is_input_quantized.*not allowed",
        ),
        (
            {"defaults": {"strict_symmetric": "yes"}},
            r"defaults\.strict_symmetric.*\"True\" or \"False\"",
        ),
        (
            {"supergroups": [{"op_list": ["Conv"]}]},
            r"supergroups\[0\]\.op_list.*at least 2",
        ),
        (
            {"params": {"bias": {"bitwidth": 64}}},
            r"params\.bias\.bitwidth.*2\.\.32",
        ),
        (
            {
                "op_type": {
                    "Softmax": {"encoding_constraints": {"min": 1, "max": 0}}
                }
            },
            r"encoding_constraints.*min must not exceed max",
        ),
        (
            {"model_input": {"is_input_quantised": "True"}},
            r"model_input\.is_input_quantised",
        ),
        ({"quantsim": {}}, r"quantsim: unknown key"),
    ],
)
def test_bad_configs_name_the_key(data, fragment):
    with pytest.raises(ValueError, match=fragment):
        config_lib.load_quantsim_config(data)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        config_lib.load_quantsim_config(str(tmp_path / "missing.json"))
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        config_lib.load_quantsim_config(str(path))


@pytest.mark.parametrize(
    "layer,expected",
    [
        (keras.layers.Conv2D(2, 3), "Conv"),
        (keras.layers.DepthwiseConv2D(3), "Conv"),
        (keras.layers.Conv2DTranspose(2, 3), "ConvTranspose"),
        (keras.layers.Dense(2), "Gemm"),
        (keras.layers.ReLU(), "Relu"),
        (keras.layers.ReLU(max_value=6.0), "Clip"),
        (keras.layers.Activation("gelu"), "Gelu"),
        (keras.layers.Activation("softmax"), "Softmax"),
        (keras.layers.Add(), "Add"),
        (keras.layers.BatchNormalization(), "BatchNormalization"),
        (keras.layers.ZeroPadding2D(), "Pad"),
        (keras.layers.Lambda(lambda x: x), "Unknown"),
    ],
)
def test_onnx_op_types(layer, expected):
    assert op_types.onnx_op_type(layer) == expected
    if expected != "Unknown":
        assert expected in op_types.ONNX_OP_TYPES
