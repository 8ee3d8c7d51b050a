"""Tests of the tfmot QAT peer's pure helpers; no TensorFlow is imported.

The config translation is checked against the shipped ``.keras`` files'
``config.json`` (plain JSON), so an architecture change that the tf_keras
rebuild cannot follow fails here, in CI, rather than in a benchmark run.
The one end-to-end test needs the ``bench`` extra and is slow.
"""

import copy
import doctest
import json
import zipfile

import numpy as np
import pytest

from benchmarks.peers import tfmot_qat


def _config(name):
    path = tfmot_qat.ZOO_DIR / "data" / f"{name}.keras"
    with zipfile.ZipFile(path) as f:
        return json.loads(f.read("config.json"))


def test_docstring_examples():
    # benchmarks/ is not among pytest's doctest paths; run them here.
    failed, attempted = doctest.testmod(tfmot_qat)
    assert attempted > 0 and failed == 0


@pytest.mark.parametrize("name", tfmot_qat.MODELS)
def test_layer_plan_of_shipped_models(name):
    config = _config(name)
    specs, inputs, outputs = tfmot_qat.layer_plan(config)
    assert [s.name for s in specs] == [
        layer["name"] for layer in config["config"]["layers"]
    ]
    assert (inputs, outputs) == (["image"], ["probabilities"])
    assert specs[0].kwargs == {"shape": (28, 28, 1)}
    adds = [s for s in specs if s.class_name == "Add"]
    assert adds and all(len(s.inputs) == 2 for s in adds)


def test_layer_plan_copies_hyperparameters():
    specs, _, _ = tfmot_qat.layer_plan(_config("mobilenet_v2"))
    by_name = {s.name: s for s in specs}
    assert by_name["stem_conv"].kwargs["strides"] == (2, 2)
    assert by_name["stem_conv"].kwargs["use_bias"] is False
    assert by_name["stem_relu6"].kwargs["max_value"] == 6.0
    assert by_name["stem_bn"].kwargs["epsilon"] == pytest.approx(1e-3)
    assert by_name["block4_dw"].inputs == "block4_expand_relu6"


def test_layer_plan_refuses_the_transformer():
    with pytest.raises(ValueError, match="MultiHeadAttention|Reshape"):
        tfmot_qat.layer_plan(_config("transformer"))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("kernel_regularizer", {"class_name": "L2"}, "kernel_regularizer"),
        ("trainable", False, "trainable"),
        ("dtype", "float16", "float32"),
        ("brand_new_option", 1, "no tf_keras translation"),
    ],
)
def test_layer_plan_refuses_what_it_cannot_copy(key, value, message):
    config = copy.deepcopy(_config("resnet"))
    conv = next(
        layer
        for layer in config["config"]["layers"]
        if layer["class_name"] == "Conv2D"
    )
    conv["config"][key] = value
    with pytest.raises(ValueError, match=message):
        tfmot_qat.layer_plan(config)


def test_match_weights_by_name_not_position():
    peer = {
        "bn": [
            ("bn/gamma:0", (2,)),
            ("bn/beta:0", (2,)),
            ("bn/moving_mean:0", (2,)),
            ("bn/moving_variance:0", (2,)),
        ],
        "dw": [("dw/depthwise_kernel:0", (3, 3, 2, 1))],
        "relu": [],
    }
    reference = {
        "bn/moving_variance": np.full(2, 4.0),
        "bn/beta": np.full(2, 2.0),
        "bn/moving_mean": np.full(2, 3.0),
        "bn/gamma": np.full(2, 1.0),
        "dw/kernel": np.zeros((3, 3, 2, 1)),
    }
    matched = tfmot_qat.match_weights(peer, reference)
    assert sorted(matched) == ["bn", "dw"]
    assert [a[0] for a in matched["bn"]] == [1.0, 2.0, 3.0, 4.0]
    assert matched["dw"][0].shape == (3, 3, 2, 1)


def test_match_weights_names_every_problem():
    peer = {"conv": [("conv/kernel:0", (3, 3, 1, 4)), ("conv/bias:0", (4,))]}
    reference = {"conv/kernel": np.zeros((3, 3, 1, 8)), "extra/kernel": 0}
    with pytest.raises(ValueError) as error:
        tfmot_qat.match_weights(peer, reference)
    text = str(error.value)
    assert "conv/kernel:0: shape (3, 3, 1, 4)" in text
    assert "no reference weight 'conv/bias'" in text
    assert "extra/kernel: not used" in text


def test_parse_args_defaults_and_refusals(capsys):
    args = tfmot_qat.parse_args(
        ["--model", "mobilenet_v2", "--train-limit", "2000", "--json", "o"]
    )
    assert (args.model, args.train_limit, args.repeats) == (
        "mobilenet_v2",
        2000,
        7,
    )
    for argv in (
        ["--model", "transformer", "--json", "o"],
        ["--model", "resnet"],  # no --json
        ["--model", "resnet", "--json", "o", "--repeats", "3"],
    ):
        with pytest.raises(SystemExit):
            tfmot_qat.parse_args(argv)
    assert "MultiHeadAttention" in capsys.readouterr().err


def test_child_env_sets_or_clears_legacy_keras(monkeypatch):
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    assert "TF_USE_LEGACY_KERAS" not in tfmot_qat._child_env(legacy=False)
    env = tfmot_qat._child_env(legacy=True)
    assert env["TF_USE_LEGACY_KERAS"] == "1"
    assert env["PYTHONPATH"].split(":")[0] == str(tfmot_qat.REPO_ROOT)


@pytest.mark.slow
def test_run_tfmot_qat_end_to_end():
    pytest.importorskip("tf_keras")
    pytest.importorskip("tensorflow_model_optimization")
    result = tfmot_qat.run_tfmot_qat(
        "resnet", 1, 64, 1e-4, train_limit=256, repeats=5, steps_per_repeat=2
    )
    assert set(result) == set(tfmot_qat.RESULT_KEYS)
    assert result["train_images"] == 256
    assert result["weight_transfer_max_abs_diff"] < 1e-4
    assert result["fp32_accuracy"] == result["keras3_fp32_accuracy"]
    assert result["qat_step_ms"] > 0 and result["fp32_step_ms"] > 0
