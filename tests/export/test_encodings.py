"""AIMET encodings files: 0.6.1, 1.0.0, 2.0.0 and AdaRound's flat files."""

import dataclasses
import json
import pathlib

import jsonschema
import numpy as np
import pytest

from aimet_keras.export import encodings as enc_io
from aimet_keras.quant import compute_encoding
from aimet_keras.quant import encoding_from_scale_offset
from aimet_keras.quant import float_encoding

SCHEMA_0_6_1 = json.loads(
    (pathlib.Path(__file__).parent / "encodings_0_6_1.schema.json").read_text()
)


def _example_encodings():
    """The reference's section 4.6 example plus float and strict grids."""
    kernel = compute_encoding(
        np.array([-0.8, -0.1, -0.35]),
        np.array([0.5, 0.35, 0.2]),
        8,
        is_symmetric=True,
    )
    params = {
        "conv2d/kernel:0": kernel,
        "dense/kernel:0": compute_encoding(-0.3, 0.3, 4, True, True),
        "dense/bias:0": float_encoding(16),
    }
    activations = {
        "input_1:0": compute_encoding(-0.5, 1.3, 8),
        "conv2d/Relu:0": compute_encoding(0.0, 4.2, 8),
        "dense/BiasAdd:0": compute_encoding(0.0, 4.2, 8, True, False, True),
    }
    return params, activations


def _assert_same_grid(got, want):
    assert got.dtype == want.dtype and got.bitwidth == want.bitwidth
    if want.is_float:
        return
    assert got.is_symmetric == want.is_symmetric
    assert got.strict_symmetric == want.strict_symmetric
    assert got.unsigned_symmetric == want.unsigned_symmetric
    np.testing.assert_array_equal(got.offset, want.offset)
    np.testing.assert_allclose(got.delta, want.delta, rtol=1e-15)
    np.testing.assert_allclose(got.min, want.min, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.max, want.max, rtol=1e-12, atol=1e-15)


def test_0_6_1_matches_the_reference_example_and_schema():
    params, activations = _example_encodings()
    data = enc_io.encodings_to_dict(params, activations)
    jsonschema.validate(data, SCHEMA_0_6_1)
    (entry,) = data["activation_encodings"]["input_1:0"]
    assert entry["offset"] == -71 and entry["is_symmetric"] == "False"
    assert entry["min"] == pytest.approx(-0.501176, abs=1e-6)
    assert entry["max"] == pytest.approx(1.298824, abs=1e-6)
    assert entry["scale"] == pytest.approx(1.8 / 255)
    channels = data["param_encodings"]["conv2d/kernel:0"]
    assert len(channels) == 3 and channels[0]["is_symmetric"] == "True"
    assert channels[0]["offset"] == -128
    assert channels[0]["scale"] == pytest.approx(0.8 / 127)
    assert channels[0]["min"] == pytest.approx(-0.806299, abs=1e-6)
    assert data["param_encodings"]["dense/bias:0"] == [
        {"bitwidth": 16, "dtype": "float"}
    ]
    assert "excluded_layers" not in data


@pytest.mark.parametrize("version", enc_io.ENCODING_VERSIONS)
def test_round_trip_through_a_file(version, tmp_path):
    params, activations = _example_encodings()
    if version == "2.0.0":
        axes = {"conv2d/kernel:0": 3}
    else:
        axes = None
    data = enc_io.encodings_to_dict(params, activations, version, axes=axes)
    path = enc_io.write_encodings(tmp_path / "model.encodings", data)
    got_params, got_activations = enc_io.read_encodings(path, list(params))
    assert set(got_params) == set(params)
    assert set(got_activations) == set(activations)
    for name, want in {**params, **activations}.items():
        got = {**got_params, **got_activations}[name]
        if got.strict_symmetric is None:
            # Only 2.0.0 leaves strictness open, for int<bw> grids with zero
            # point 0 (the reader keeps the quantizer's own setting); its
            # strict and unsigned symmetric grids come back as written.
            assert version == "2.0.0" and got.is_symmetric
            assert not want.strict_symmetric and not want.unsigned_symmetric
            got = dataclasses.replace(got, strict_symmetric=False)
        _assert_same_grid(got, want)


def test_1_0_0_layout():
    params, activations = _example_encodings()
    data = enc_io.encodings_to_dict(
        params, activations, "1.0.0", excluded_layers=["dropout"]
    )
    entries = {e["name"]: e for e in data["param_encodings"]}
    kernel = entries["conv2d/kernel:0"]
    assert kernel["enc_type"] == "PER_CHANNEL" and kernel["dtype"] == "INT"
    assert kernel["is_sym"] is True and kernel["bw"] == 8
    assert kernel["offset"] == [-128, -128, -128]
    assert entries["dense/bias:0"]["dtype"] == "FLOAT"
    assert data["excluded_layers"] == ["dropout"]


def test_2_0_0_zero_points_follow_onnx():
    params, activations = _example_encodings()
    data = enc_io.encodings_to_dict(
        params, activations, "2.0.0", axes={"conv2d/kernel:0": 3}
    )
    # AIMET's layout: one list for params and activations alike.
    assert sorted(data) == ["encodings", "version"]
    entries = {e["name"]: e for e in data["encodings"]}
    assert set(entries) == set(params) | set(activations)
    kernel = entries["conv2d/kernel:0"]
    assert kernel["output_dtype"] == "int8" and kernel["axis"] == 3
    assert "y_zero_point" not in kernel  # AIMET leaves zero points of 0 out
    asym = entries["input_1:0"]
    assert asym["output_dtype"] == "uint8" and asym["y_zero_point"] == 71
    # aimet-onnx 2.42's symmetric zero points: -1 strict, -2**(b-1)
    # unsigned, on the signed type (what it writes for these grids).
    unsigned = entries["dense/BiasAdd:0"]
    assert unsigned["output_dtype"] == "int8"
    assert unsigned["y_zero_point"] == -128
    strict = entries["dense/kernel:0"]
    assert strict["output_dtype"] == "int4" and strict["y_zero_point"] == -1
    assert entries["dense/bias:0"]["output_dtype"] == "float16"


@pytest.mark.parametrize(
    ("entry", "symmetric", "strict", "unsigned", "offset"),
    [
        # As aimet-onnx 2.42 writes them (sim.export, encoding_version 2.0.0)
        ({"output_dtype": "int8", "y_scale": 0.1}, True, None, False, -128),
        (
            {"output_dtype": "int8", "y_scale": 0.1, "y_zero_point": -1},
            True,
            True,
            False,
            -127,
        ),
        (
            {"output_dtype": "int8", "y_scale": 0.1, "y_zero_point": -128},
            True,
            False,
            True,
            0,
        ),
        (
            {"output_dtype": "uint8", "y_scale": 0.1, "y_zero_point": 122},
            False,
            False,
            False,
            -122,
        ),
        # Another signed zero point is the affine grid it describes.
        (
            {"output_dtype": "int8", "y_scale": 0.1, "y_zero_point": 5},
            False,
            False,
            False,
            -133,
        ),
    ],
)
def test_2_0_0_zero_points_read_as_aimet_writes_them(
    entry, symmetric, strict, unsigned, offset
):
    data = {"version": "2.0.0", "encodings": [{"name": "t", **entry}]}
    (got,) = enc_io.encodings_from_dict(data, param_names=["t"])[0].values()
    assert got.is_symmetric is symmetric
    assert got.strict_symmetric is strict
    assert got.unsigned_symmetric is unsigned
    assert int(got.offset) == offset
    # Every level of the grid read is a level of the file's ONNX grid.
    zero_point = entry.get("y_zero_point", 0)
    low = -128 if entry["output_dtype"] == "int8" else 0
    assert float(got.min) >= 0.1 * (low - zero_point) - 1e-12
    assert float(got.max) <= 0.1 * (low + 255 - zero_point) + 1e-12


def test_2_0_0_entries_are_sorted_by_the_models_param_names():
    params, activations = _example_encodings()
    data = enc_io.encodings_to_dict(params, activations, "2.0.0")
    got_params, got_activations = enc_io.encodings_from_dict(
        data, param_names=["conv2d/kernel:0", "dense/kernel:0", "dense/bias:0"]
    )
    assert set(got_params) == set(params)
    assert set(got_activations) == set(activations)
    # Without the names, nothing is taken for a param.
    none, everything = enc_io.encodings_from_dict(data)
    assert none == {} and set(everything) == set(params) | set(activations)


def test_2_0_0_files_with_the_older_split_sections_still_read():
    params, activations = _example_encodings()
    data = enc_io.encodings_to_dict(params, activations, "2.0.0")
    entries = {e["name"]: e for e in data.pop("encodings")}
    data["param_encodings"] = [entries[n] for n in params]
    data["activation_encodings"] = [entries[n] for n in activations]
    got_params, got_activations = enc_io.encodings_from_dict(data)
    assert set(got_params) == set(params)
    assert set(got_activations) == set(activations)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"version": "2.0.0"}, "needs an 'encodings' list"),
        ({"version": "2.0.0", "encodings": {}}, "must be a list"),
        ({"version": "2.0.0", "encodings": [{"y_scale": 1}]}, "'name'"),
        ({"version": "2.0.0", "encodings": [3]}, "entry 0"),
        (
            {
                "version": "2.0.0",
                "encodings": 2
                * [{"name": "t", "output_dtype": "uint8", "y_scale": 0.1}],
            },
            "'t' appears twice",
        ),
        (
            {"version": "1.0.0", "param_encodings": [{"name": "t"}] * 2},
            "'t' appears twice",
        ),
    ],
)
def test_malformed_list_sections_are_refused(data, match):
    with pytest.raises(ValueError, match=match):
        enc_io.encodings_from_dict(data, "model.encodings")


def test_2_0_0_rejects_bitwidths_without_an_onnx_type():
    with pytest.raises(ValueError, match="'t:0'.*bitwidth"):
        enc_io.encodings_to_dict(
            {"t:0": compute_encoding(-1, 1, 6)}, {}, "2.0.0"
        )


def test_reads_adaround_flat_file_with_bool_is_symmetric():
    flat = {
        "conv2d/kernel:0": [
            {
                "bitwidth": 4,
                "is_symmetric": True,  # older AIMET files wrote a bool
                "max": 0.7,
                "min": -0.8,
                "offset": -8,
                "scale": 0.1,
            }
        ]
    }
    params, activations = enc_io.encodings_from_dict(flat)
    assert activations == {}
    enc = params["conv2d/kernel:0"]
    assert enc.bitwidth == 4 and enc.is_symmetric and int(enc.offset) == -8
    assert float(enc.min) == pytest.approx(-0.8)
    assert float(enc.max) == pytest.approx(0.7)


def test_scale_offset_recovers_the_grid_kind():
    strict = encoding_from_scale_offset(0.01, -127, 8, True)
    assert strict.strict_symmetric and float(strict.max) == pytest.approx(1.27)
    unsigned = encoding_from_scale_offset(0.01, 0, 8, True)
    assert unsigned.unsigned_symmetric
    assert float(unsigned.max) == pytest.approx(2.55)
    with pytest.raises(ValueError, match="offset"):
        encoding_from_scale_offset(0.01, -300, 8)
    with pytest.raises(ValueError, match="scale"):
        encoding_from_scale_offset(0.0, -3, 8)


def test_errors_name_file_and_tensor(tmp_path):
    bad = {
        "version": "0.6.1",
        "activation_encodings": {"conv2d/Relu:0": [{"bitwidth": 8}]},
        "param_encodings": {},
    }
    path = tmp_path / "bad.encodings"
    path.write_text(json.dumps(bad))
    with pytest.raises(
        ValueError, match=r"bad\.encodings.*conv2d/Relu:0.*scale"
    ):
        enc_io.read_encodings(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        enc_io.read_encodings(path)
    with pytest.raises(ValueError, match="version '9.9'"):
        enc_io.encodings_from_dict({"version": "9.9", "param_encodings": {}})
    with pytest.raises(ValueError, match="version='0.7'"):
        enc_io.encodings_to_dict({}, {}, version="0.7")


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "model.encodings"
    with pytest.raises(TypeError):
        enc_io.write_encodings(target, {"version": "0.6.1", "x": object()})
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_an_existing_file_whole(tmp_path):
    target = tmp_path / "model.encodings"
    target.write_text("old")
    params, activations = _example_encodings()
    enc_io.write_encodings(
        target, enc_io.encodings_to_dict(params, activations)
    )
    assert json.loads(target.read_text())["version"] == "0.6.1"
    assert [p.name for p in tmp_path.iterdir()] == ["model.encodings"]
