"""The shipped quantsim configs are files AIMET itself accepts.

``aimet_quantsim_config.schema.json`` is AIMET's own schema, copied from
aimet-onnx 2.42.0 (see its ``$comment``), not written from our parser: AIMET
refuses any config that does not validate against it.
"""

import json
import pathlib

import jsonschema
import pytest

from aimet_keras.sim import config as config_lib

SCHEMA = json.loads(
    (
        pathlib.Path(__file__).parent / "aimet_quantsim_config.schema.json"
    ).read_text()
)
CONFIG_DIR = pathlib.Path(config_lib.__file__).parent / "configs"


@pytest.mark.parametrize("name", config_lib.CONFIG_NAMES)
def test_shipped_config_passes_aimets_schema(name):
    data = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    errors = [
        f"{list(e.path)}: {e.message}"
        for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(data)
    ]
    assert errors == []


def test_schema_refuses_a_bias_bitwidth_as_aimet_does():
    # The schema is AIMET's, strict on params: what the old config said.
    data = json.loads((CONFIG_DIR / "default.json").read_text())
    data["params"]["bias"] = {"is_quantized": "True", "bitwidth": 32}
    with pytest.raises(jsonschema.ValidationError, match="bitwidth"):
        jsonschema.validate(data, SCHEMA)


@pytest.mark.parametrize("name", ["tflite_int8", "tflite_16x8"])
def test_tflite_configs_keep_their_behaviour_through_the_extensions(name):
    config = config_lib.load_quantsim_config(name)
    assert config.params["bias"] == config_lib.ParamSettings(True, True, 32)
    pool = config.op_types["AveragePool"]
    assert pool.output_on_input_grid and pool.output_ties_away_from_zero
    assert config.op_types["Concat"].inputs_on_output_grid
    assert config.op_types["LayerNormalization"].decomposed_quantization
    assert config.op_types["Softmax"].encoding_constraints is not None
    assert config.source.endswith(f"{name}.extensions.json")
    # Without the extensions the config is AIMET's view: biases float.
    plain = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    assert config_lib.load_quantsim_config(plain).params["bias"] == (
        config_lib.ParamSettings(False, None, None)
    )


def test_extensions_beside_a_user_config_are_merged(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text((CONFIG_DIR / "default.json").read_text())
    (tmp_path / "mine.extensions.json").write_text(
        json.dumps(
            {
                "params": {"bias": {"is_quantized": "True", "bitwidth": 32}},
                "op_type": {"Concat": {"inputs_on_output_grid": "True"}},
            }
        )
    )
    config = config_lib.load_quantsim_config(path)
    assert config.params["bias"] == config_lib.ParamSettings(True, None, 32)
    assert config.op_types["Concat"].inputs_on_output_grid
    # Entries the extensions do not touch stay as the config has them.
    assert config.op_types["Dropout"].is_output_quantized is False


def test_a_bad_key_in_the_extensions_names_that_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text((CONFIG_DIR / "default.json").read_text())
    (tmp_path / "mine.extensions.json").write_text(
        json.dumps({"op_type": {"Concat": {"inputs_on_output_grd": "True"}}})
    )
    with pytest.raises(
        ValueError, match=r"mine.extensions.json.*inputs_on_output_grd"
    ):
        config_lib.load_quantsim_config(path)
