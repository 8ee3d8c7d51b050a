"""The wheel holds the package's data and installs with a working command."""

import pathlib
import subprocess
import sys
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: the installed setuptools builds it, offline.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (path,) = dist.glob("aimet_keras-*.whl")
    return path


# Building the wheel: 30-50 s on two cores. test_package checks the
# package_data globs in the default run.
@pytest.mark.slow
def test_wheel_holds_models_recipes_configs_and_type_marker(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "aimet_keras/py.typed",
        "aimet_keras/zoo/data/resnet.keras",
        "aimet_keras/zoo/data/fashion_mnist_slice.npz",
        "aimet_keras/zoo/data/quantized/resnet_w4a8.json",
        "aimet_keras/zoo/data/quantized/resnet_w4a8.encodings",
        "aimet_keras/zoo/data/quantized/resnet_w4a8.weights.npz",
        "aimet_keras/sim/configs/tflite_int8.json",
    ):
        assert required in names, required
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)


# A venv and an install: about a minute on two cores.
@pytest.mark.slow
def test_installed_wheel_runs_the_command_from_anywhere(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    # The framework comes from this interpreter's packages; the package
    # itself only from the wheel.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    where = subprocess.run(
        [str(python), "-c", "import aimet_keras; print(aimet_keras.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in where
    command = env_dir / "bin" / "aimet-keras"
    listed = subprocess.run(
        [str(command), "zoo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "w4a8" in listed.stdout
