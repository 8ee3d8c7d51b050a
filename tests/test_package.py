"""The package imports quickly and keeps heavy imports out of the core."""

import subprocess
import sys

import pytest

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


_LOAD_AND_PREDICT = """
import sys
{imports}
import numpy as np
model = {load}(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""


def _saved_sim(folder):
    """A calibrated sim with a folded-BN QAT layer, saved; and its I/O."""
    import keras
    import numpy as np

    from aimet_keras import qat
    from aimet_keras.sim import QuantizationSimModel

    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    images = np.random.default_rng(0).normal(size=(16, 8, 8, 3))
    images = images.astype("float32")
    sim = QuantizationSimModel(model, quant_scheme="tf_enhanced")
    sim.compute_encodings(images)
    qat.simulate_batch_norm_folding(sim)
    path = folder / "sim.keras"
    sim.model.save(path)
    np.save(folder / "images.npy", images)
    return path, sim.model.predict(images, verbose=0)


@pytest.mark.parametrize(
    "imports, load",
    [
        ("import aimet_keras\nimport keras", "keras.saving.load_model"),
        ("import keras\nimport aimet_keras", "keras.saving.load_model"),
        (
            "import aimet_keras\nimport tensorflow as tf",
            "tf.keras.models.load_model",
        ),
    ],
    ids=["aimet_keras first", "keras first", "tf.keras"],
)
def test_saved_sims_load_after_importing_the_package_alone(
    tmp_path, imports, load
):
    import numpy as np

    path, expected = _saved_sim(tmp_path)
    code = _LOAD_AND_PREDICT.format(imports=imports, load=load)
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(path),
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npy"),
        ],
        check=True,
        capture_output=True,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_without_the_package_keras_cannot_load_a_saved_sim(tmp_path):
    """The check above is not vacuous: Keras alone does not find the layers."""
    path, _ = _saved_sim(tmp_path)
    code = _LOAD_AND_PREDICT.format(
        imports="import keras", load="keras.saving.load_model"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(path), "x.npy", "y.npy"],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "QuantizationWrapper" in run.stderr


def test_package_data_globs_cover_every_data_file():
    """Every file under a package's data folders ships in the wheel."""
    import configparser
    import pathlib

    root = pathlib.Path(aimet_keras.__file__).parent
    config = configparser.ConfigParser()
    config.read(root.parent / "setup.cfg")
    globs = {
        package: [g.strip() for g in value.split(",")]
        for package, value in config["options.package_data"].items()
    }
    shipped = [
        path
        for folder in ("zoo/data", "sim/configs")
        for path in (root / folder).rglob("*")
        if path.is_file()
    ]
    assert len(shipped) > 10
    for path in shipped:
        relative = path.relative_to(root)
        package = ".".join(("aimet_keras", relative.parts[0]))
        inside = pathlib.PurePosixPath(*relative.parts[1:])
        # setuptools globs: "*" stays within one folder.
        assert any(
            len(inside.parts) == len(pathlib.PurePosixPath(pattern).parts)
            and inside.match(pattern)
            for pattern in globs[package]
        ), f"{relative} matches no package_data glob of {package}"
