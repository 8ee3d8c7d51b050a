"""The package imports quickly and keeps heavy imports out of the core."""

import subprocess
import sys

import aimet_keras


def _modules_after(statement):
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_import_loads_no_framework():
    loaded = _modules_after("import aimet_keras")
    for heavy in (
        "tensorflow",
        "keras",
        "tf2onnx",
        "onnx",
        "tensorflow_model_optimization",
    ):
        assert heavy not in loaded, heavy


def test_quant_does_not_import_export_or_peer_packages():
    loaded = _modules_after("import aimet_keras.quant")
    assert "tensorflow" in loaded
    for heavy in (
        "tf2onnx",
        "onnx",
        "onnxruntime",
        "tensorflow_model_optimization",
        "tf_keras",
    ):
        assert heavy not in loaded, heavy


def test_subpackages_load_on_attribute_access():
    assert aimet_keras.quant.compute_encoding(-1.0, 1.0, 8).bitwidth == 8
    assert "resnet" in aimet_keras.zoo.MODEL_NAMES


def test_unknown_attribute_is_an_attribute_error():
    try:
        aimet_keras.not_a_module  # noqa: B018
    except AttributeError as error:
        assert "not_a_module" in str(error)
    else:
        raise AssertionError("expected AttributeError")
