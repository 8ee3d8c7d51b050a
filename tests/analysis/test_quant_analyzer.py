"""QuantAnalyzer finds the layer that breaks quantization and shows it."""

import json
import re

import numpy as np
import pytest

from aimet_keras import ptq
from aimet_keras import zoo
from aimet_keras.analysis import QuantAnalyzer

pytest.importorskip("matplotlib")

# The outlier channel's scale: its activation grid then spans 300x the
# range of every other channel, which rounds them to a few levels.
OUTLIER = 300.0


@pytest.fixture(scope="module")
def data():
    images, labels = zoo.load_fashion_mnist_slice("test")
    return images[:256], labels[:256]


def _fragile_resnet():
    """The reference ResNet with an outlier channel after stage2_a_conv."""
    model = ptq.fold_for_deployment(zoo.load_model("resnet", compile=False))
    return zoo.inject_outlier_channel(
        model, "stage2_a_conv", "stage2_b_conv", scale=OUTLIER
    )


def _accuracy(images, labels):
    # Eager calls: no retrace per quantizer setting.
    def evaluate(model):
        predictions = np.asarray(model(images, training=False))
        return float(np.mean(predictions.argmax(-1) == labels))

    return evaluate


@pytest.fixture(scope="module")
def fragile_analysis(data, tmp_path_factory):
    images, labels = data
    model = _fragile_resnet()
    before = [np.asarray(w).copy() for w in model.weights]
    analyzer = QuantAnalyzer(model, images[:128], _accuracy(images, labels))
    analyzer.enable_per_layer_mse_loss(images[:64])
    folder = tmp_path_factory.mktemp("analysis")
    analysis = analyzer.analyze(
        quant_scheme="tf", config_file="default", results_dir=folder
    )
    return model, before, analysis, folder


def test_float_model_is_unchanged_by_the_outlier(data):
    images, labels = data
    fragile = _fragile_resnet()
    reference = ptq.fold_for_deployment(zoo.load_model("resnet", compile=False))
    np.testing.assert_allclose(
        fragile(images[:32]), reference(images[:32]), atol=1e-4
    )


def test_the_fragile_layer_ranks_first(fragile_analysis):
    _, _, analysis, _ = fragile_analysis
    ranked = [layer.name for layer in analysis.ranked]
    # The outlier lives in stage2_a_conv's output and its ReLU's.
    assert ranked[0] in ("stage2_a_conv", "stage2_a_relu"), ranked[:5]
    assert analysis.fp32 - analysis.quantized > 0.05
    harm = {layer.name: analysis.harm(layer) for layer in analysis.layers}
    assert harm[ranked[0]] > 3 * harm["stem_conv"]


def test_mse_and_ranges_see_the_outlier(fragile_analysis):
    _, _, analysis, _ = fragile_analysis
    layers = {layer.name: layer for layer in analysis.layers}
    relu = layers["stage2_a_relu"]
    others = [
        layers[name].activation_range[1]
        for name in ("stage1_a_relu", "stage3_a_relu")
    ]
    assert relu.activation_range[1] > 20 * max(others)
    assert relu.mse > 10 * layers["stage1_a_relu"].mse


def test_caller_model_is_not_changed(fragile_analysis):
    model, before, _, _ = fragile_analysis
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(np.asarray(weight), value)


def test_report_is_one_self_contained_page(fragile_analysis):
    _, _, analysis, folder = fragile_analysis
    page = (folder / "quant_analysis.html").read_text()
    assert 'id="sensitivity"' in page and 'id="summary"' in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 5
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "http" not in page.split("<body>")[1]  # nothing fetched
    ranked_rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td>", page)
    assert ranked_rows[0] == ("1", analysis.ranked[0].name)


def test_json_holds_the_ranking_and_scores(fragile_analysis):
    _, _, analysis, folder = fragile_analysis
    saved = json.loads((folder / "quant_analysis.json").read_text())
    assert saved["ranked"] == [layer.name for layer in analysis.ranked]
    assert saved["fp32"] == analysis.fp32
    assert {layer["name"] for layer in saved["layers"]} >= {
        "stage2_a_conv",
        "logits",
    }
    assert "stage2_a_conv" in analysis.to_markdown(top=3) or (
        "stage2_a_relu" in analysis.to_markdown(top=3)
    )


def test_aimet_style_callbacks_and_notes_without_data(data, tmp_path):
    images, labels = data
    calls = []

    def forward(model, count):
        calls.append(count)
        model(images[:count], training=False)

    def evaluate(model, count):
        predictions = np.asarray(model(images[:count], training=False))
        return float(np.mean(predictions.argmax(-1) == labels[:count]))

    analyzer = QuantAnalyzer(
        zoo.load_model("resnet", compile=False),
        (forward, 64),
        (evaluate, 128),
    )
    # 3-bit weights, 8-bit activations: the weights cost the accuracy.
    analysis = analyzer.analyze(
        default_param_bw=3, results_dir=tmp_path, compare_cle=False
    )
    assert calls == [64]
    assert analysis.fp32 > 0.8
    assert analysis.activations_only > analysis.fp32 - 0.03
    assert analysis.weights_only < analysis.activations_only - 0.05
    assert all(layer.mse is None for layer in analysis.layers)
    assert any("enable_per_layer_mse_loss" in note for note in analysis.notes)
    assert (tmp_path / "quant_analysis.html").is_file()


def test_bad_callback_is_explained():
    with pytest.raises(TypeError, match="eval_callback"):
        QuantAnalyzer(zoo.load_model("resnet", compile=False), None, 3)
