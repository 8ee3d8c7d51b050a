"""Per-layer outputs of FP32, sim, TFLite and ONNX, and where they part."""

import numpy as np
import pytest

from aimet_keras import export_onnx
from aimet_keras import export_tflite
from aimet_keras.export import layer_outputs as lo


@pytest.fixture(scope="module")
def outputs(resnet_sim, test_images, tmp_path_factory):
    images = test_images[0][:32]
    exported = export_tflite(
        resnet_sim, tmp_path_factory.mktemp("lo") / "m.tflite"
    )
    return {
        "fp32": lo.fp32_layer_outputs(resnet_sim, images),
        "sim": lo.sim_layer_outputs(resnet_sim, images),
        "tflite": lo.tflite_layer_outputs(exported, images),
    }


def test_onnx_follows_the_sim_until_a_grid_changes(
    resnet_sim, test_images, tmp_path
):
    pytest.importorskip("onnxruntime", reason="needs the [onnx] extra")
    images = test_images[0][:32]
    exported = export_onnx(resnet_sim, tmp_path / "m.onnx")
    onnx_outputs = lo.onnx_layer_outputs(exported, images)
    sim_outputs = lo.sim_layer_outputs(resnet_sim, images)
    steps = lo.output_steps(resnet_sim)
    assert {"stem_relu", "stage2_a_relu", "logits"} <= set(onnx_outputs)
    report = lo.compare_layer_outputs(sim_outputs, onnx_outputs, steps)
    assert report.first_departure is None
    assert all(row.off_fraction < 0.01 for row in report.rows)
    # The sim's stage2_a_relu grid shrinks to a tenth after the export:
    # ONNX departs there first.
    quantizer = resnet_sim.model.get_layer("stage2_a_relu").output_quantizers[0]
    before = quantizer.encoding
    try:
        from aimet_keras.quant import compute_encoding

        quantizer.set_encoding(
            compute_encoding(float(before.min), float(before.max) * 0.1, 8)
        )
        resnet_sim._retrace()
        moved = lo.sim_layer_outputs(resnet_sim, images)
    finally:
        quantizer.set_encoding(before)
        resnet_sim._retrace()
    report = lo.compare_layer_outputs(moved, onnx_outputs, steps)
    assert report.first_departure == "stage2_a_relu"


def test_all_three_are_keyed_by_layer_name(outputs, resnet_sim):
    layers = [w.name for w in resnet_sim.quant_wrappers()]
    assert list(outputs["sim"]) == layers
    assert list(outputs["fp32"]) == layers
    assert set(outputs["tflite"]) < set(layers)
    for layer, values in outputs["tflite"].items():
        assert values.shape == outputs["sim"][layer].shape, layer


def test_sim_outputs_sit_on_their_grids(outputs, resnet_sim):
    steps = lo.output_steps(resnet_sim)
    wrapper = {w.name: w for w in resnet_sim.quant_wrappers()}["stem_relu"]
    encoding = wrapper.output_quantizers[0].encoding
    levels = (outputs["sim"]["stem_relu"] - float(encoding.min)) / steps[
        "stem_relu"
    ]
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    # The FP32 model's outputs are not on the grid.
    fp32 = (outputs["fp32"]["stem_relu"] - float(encoding.min)) / steps[
        "stem_relu"
    ]
    assert np.max(np.abs(fp32 - np.round(fp32))) > 0.1


def test_tflite_follows_the_sim_layer_by_layer(outputs, resnet_sim):
    report = lo.compare_layer_outputs(
        outputs["sim"], outputs["tflite"], lo.output_steps(resnet_sim)
    )
    rows = {row.layer: row for row in report.rows}
    # The first layer: the same grid, at most one step from rounding.
    assert rows["stem_relu"].max_steps <= 1.0 + 1e-3
    assert all(row.off_fraction < 0.05 for row in report.rows)
    assert "stem_conv" in report.missing  # fused into stem_relu


def test_an_injected_departure_is_found_at_its_layer(outputs, resnet_sim):
    target = dict(outputs["tflite"])
    steps = lo.output_steps(resnet_sim)
    target["stage2_a_relu"] = (
        target["stage2_a_relu"] + 3 * steps["stage2_a_relu"]
    )
    report = lo.compare_layer_outputs(
        outputs["sim"], target, steps, tolerance=0.5
    )
    assert report.first_departure == "stage2_a_relu"
    assert "**<- first departure**" in report.to_markdown()


def test_saves_one_file_per_layer(outputs, tmp_path):
    paths = lo.save_layer_outputs(outputs["tflite"], tmp_path / "tflite")
    assert len(paths) == len(outputs["tflite"])
    first = next(iter(outputs["tflite"]))
    np.testing.assert_array_equal(
        np.load(tmp_path / "tflite" / f"{first}.npy"), outputs["tflite"][first]
    )


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="Layer 'a'"):
        lo.compare_layer_outputs({"a": np.zeros(3)}, {"a": np.zeros(4)})
