"""The zoo's shipped quantized variants load, match their recipes, export."""

import json
import shutil

import numpy as np
import pytest

from aimet_keras import zoo
from aimet_keras.zoo import quantized

SHIPPED = quantized.quantized_variants()


@pytest.fixture(scope="module")
def slice_test():
    return zoo.load_fashion_mnist_slice("test")


def _top1(sim, images, labels):
    predictions = sim.model.predict(images, batch_size=500, verbose=0)
    return float(np.mean(predictions.argmax(-1) == labels))


def test_every_model_ships_every_variant():
    assert SHIPPED == [
        (name, variant)
        for name in zoo.MODEL_NAMES
        for variant in ("w8a8", "w4a8", "w4a4")
        if (name, variant) not in quantized.NOT_SHIPPED
    ]


@pytest.mark.parametrize("name, variant", SHIPPED)
def test_loaded_variant_reproduces_its_recorded_accuracy(
    name, variant, slice_test
):
    made = zoo.recipe(name, variant)
    sim = zoo.load_quantized(name, variant)
    images, labels = slice_test
    # The recorded figure was measured on the sim the recipe made; the
    # reloaded one computes the same outputs.
    assert _top1(sim, images, labels) == pytest.approx(
        made["accuracy"]["slice_quantized"], abs=1e-3
    )
    bits = {
        q.bitwidth
        for wrapper in sim.quant_wrappers()
        for key, q in wrapper.param_quantizers.items()
        if key.endswith("kernel") and q.enabled
    }
    assert bits == {made["sim"]["default_param_bw"]}


@pytest.mark.parametrize("name, variant", SHIPPED)
def test_recipe_records_steps_and_a_drop_within_its_class(name, variant):
    made = zoo.recipe(name, variant)
    assert made["model"] == name and made["variant"] == variant
    assert [step["step"] for step in made["steps"]] == (
        quantized.VARIANTS[variant]["steps"]
    )
    accuracy = made["accuracy"]
    assert accuracy["test_images"] == 10000
    drop = accuracy["fp32"] - accuracy["quantized"]
    # W8A8 is near lossless on these nets, the optimised 4-bit variants
    # stay within a few points (benchmarks/results/zoo_quantized.md).
    assert drop < {"w8a8": 0.01, "w4a8": 0.02, "w4a4": 0.06}[variant]


@pytest.mark.parametrize("name, variant", [("resnet", "w4a8")])
def test_optimised_weights_sit_on_their_grids(name, variant):
    sim = zoo.load_quantized(name, variant)
    checked = 0
    for wrapper in sim.quant_wrappers():
        for weight, q in wrapper.quantized_weights():
            if not q.enabled or q.bitwidth != 4:
                continue
            values = np.asarray(weight)
            assert np.array_equal(np.asarray(q(weight)), values), wrapper.name
            checked += 1
    assert checked > 5


def test_w8a8_recipe_from_scratch_gives_the_shipped_encodings():
    try:
        images = quantized.calibration_images()
    except FileNotFoundError:
        pytest.skip(
            "the recipe calibrates on the full Fashion-MNIST training set, "
            "from Debian's dataset-fashion-mnist (.ci/run installs it)"
        )
    made, steps = quantized.make_quantized("resnet", "w8a8", images)
    assert [step["step"] for step in steps] == [
        "fold_for_deployment",
        "compute_encodings",
    ]
    shipped = zoo.load_quantized("resnet", "w8a8")
    probe = zoo.load_fashion_mnist_slice("test")[0][:200]
    np.testing.assert_array_equal(
        made.model.predict(probe, verbose=0),
        shipped.model.predict(probe, verbose=0),
    )


def test_w8a8_variant_exports_to_integer_tflite(tmp_path, slice_test):
    from aimet_keras import export_tflite
    from aimet_keras.export.tflite import run_tflite

    sim = zoo.load_quantized("mobilenet_v2", "w8a8")
    exported = export_tflite(sim, tmp_path / "model.tflite")
    images = slice_test[0][:300]
    agreement = np.mean(
        run_tflite(exported.path, images).argmax(-1)
        == sim.model.predict(images, verbose=0).argmax(-1)
    )
    assert agreement >= 0.99


def test_unknown_names_and_missing_files_are_explained(tmp_path):
    with pytest.raises(ValueError, match="not a quantized variant"):
        zoo.load_quantized("resnet", "w2a2")
    with pytest.raises(ValueError, match="not a reference model"):
        zoo.recipe("vgg", "w8a8")
    with pytest.raises(FileNotFoundError, match="zoo_quantized"):
        zoo.recipe("resnet", "w8a8", directory=tmp_path)


def test_weights_of_another_model_are_refused_naming_the_layer(tmp_path):
    for suffix in (".json", ".encodings", ".weights.npz"):
        shutil.copy(
            quantized.QUANTIZED_DIR / f"mobilenet_v2_w4a8{suffix}",
            tmp_path / f"resnet_w4a8{suffix}",
        )
    with pytest.raises(ValueError, match="layer .*remake it"):
        zoo.load_quantized("resnet", "w4a8", directory=tmp_path)


def test_command_lists_the_variants(tmp_path, capsys):
    from aimet_keras import cli

    path = tmp_path / "zoo.json"
    assert cli.main(["aimet-keras", "zoo", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "w4a8" in out and "load_quantized" in out
    listed = json.loads(path.read_text())
    assert {(v["model"], v["variant"]) for v in listed["variants"]} == set(
        SHIPPED
    )
