"""Automatic mixed precision chooses cheaper bitwidths within the drop."""

import json

import numpy as np
import pytest

from aimet_keras import ptq
from aimet_keras import zoo
from aimet_keras.ptq import amp
from aimet_keras.sim import QuantizationSimModel


@pytest.fixture(scope="module")
def data():
    images, labels = zoo.load_fashion_mnist_slice("test")
    return images[:400], labels[:400]


def _sim():
    model = ptq.fold_for_deployment(zoo.load_model("resnet", compile=False))
    sim = QuantizationSimModel(model, config_file="tflite_int8")
    sim.compute_encodings(zoo.load_fashion_mnist_slice("calibration")[0][:128])
    return sim


def _counting_top1(images, labels):
    calls = []

    def top1(model):
        calls.append(1)
        predictions = np.asarray(model(images, training=False))
        return float(np.mean(predictions.argmax(-1) == labels))

    return top1, calls


def test_layers_reading_one_grid_form_one_group():
    groups = amp._groups(_sim())
    members = {
        name: [w.name for w in wrappers]
        for name, (wrappers, _, _) in groups.items()
    }
    # The block's first conv and its projection read the same tensor.
    assert sorted(members["stage2_a_conv"]) == [
        "stage2_a_conv",
        "stage2_proj_conv",
    ]
    assert members["logits"] == ["logits"]


@pytest.fixture(scope="module")
def chosen(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("amp")
    sim = _sim()
    phase1, phase1_calls = _counting_top1(*data)
    result = ptq.choose_mixed_precision(
        sim,
        [(8, 8), ((8, "int"), (4, "int"))],
        phase1,
        allowed_accuracy_drop=0.01,
        cost_metric="memory",
        results_dir=folder,
        verbose=0,
    )
    return sim, result, folder, len(phase1_calls)


def test_choice_is_cheaper_and_within_the_drop(chosen):
    sim, result, _, _ = chosen
    assert result.relative_cost < 0.95
    assert result.chosen_score >= result.fp32 - 0.01
    costs = [point["relative_cost"] for point in result.pareto]
    assert costs[0] == 1.0 and costs[-1] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(costs, costs[1:]))


def test_sim_carries_the_chosen_bitwidths(chosen, tmp_path):
    sim, result, _, _ = chosen
    for name, (_, weight_bits) in result.chosen.items():
        for layer in result.groups[name]:
            kernel = sim.model.get_layer(layer).param_quantizers["kernel"]
            assert kernel.bitwidth == weight_bits, layer
    assert any(bits == (8, 4) for bits in result.chosen.values())
    # The bitwidths reach the encodings file.
    paths = sim.export(tmp_path, "amp")
    params = json.loads(paths["encodings"].read_text())["param_encodings"]
    four_bit = {
        key.split("/")[0]
        for key, value in params.items()
        if value[0]["bitwidth"] == 4
    }
    expected = {
        layer
        for name, bits in result.chosen.items()
        if bits[1] == 4
        for layer in result.groups[name]
    }
    assert four_bit == expected


def test_the_chosen_sim_exports_to_integer_tflite(chosen, data, tmp_path):
    from aimet_keras import export_tflite
    from aimet_keras.export.tflite import run_tflite

    sim, _, _, _ = chosen
    exported = export_tflite(sim, tmp_path / "amp.tflite")
    images = data[0][:200]
    agreement = np.mean(
        run_tflite(exported.path, images).argmax(-1)
        == np.asarray(sim.model(images)).argmax(-1)
    )
    assert agreement >= 0.99


def test_front_and_plot_are_written_and_phase1_is_cached(chosen, data):
    sim, result, folder, first_calls = chosen
    saved = json.loads((folder / amp.PARETO_FILE).read_text())
    assert saved["relative_cost"] == result.relative_cost
    assert (folder / amp.PARETO_PLOT).stat().st_size > 1000
    # One score per group and cheaper candidate, plus the baseline.
    assert first_calls >= len(result.groups) + 1
    phase1, phase1_calls = _counting_top1(*data)
    phase2, _ = _counting_top1(*data)
    again = ptq.choose_mixed_precision(
        sim,
        [(8, 8), (8, 4)],
        phase1,
        phase2,
        allowed_accuracy_drop=0.01,
        cost_metric="memory",
        results_dir=folder,
        clean_start=False,
        verbose=0,
    )
    assert phase1_calls == []
    assert again.sensitivity == result.sensitivity


@pytest.mark.parametrize(
    "candidates, message",
    [
        ([(8, 8)], "at least two"),
        ([(8, 8), (8, "4")], "each side a bitwidth"),
        ([(8, 8), ((8, "float"), (12, "float"))], "each side a bitwidth"),
        ([(8, 8), ("fp8", 8)], "each side a bitwidth"),
    ],
)
def test_bad_candidates_are_explained(candidates, message):
    with pytest.raises(ValueError, match=message):
        ptq.choose_mixed_precision(_sim(), candidates, lambda m: 1.0)
