"""Latency tables and compress_model(cost_metric="latency")."""

import json
import math

import keras
import numpy as np
import pytest

from aimet_keras.compress import LatencyTable
from aimet_keras.compress import compress_model
from aimet_keras.compress import layer_latencies

BLOCK = 8


class _BlockTable(LatencyTable):
    """A deterministic stand-in for measured time: a CPU computing
    channels in blocks of 8, plus a fixed cost per layer (so that one
    layer split in two costs more than its MACs say)."""

    block = BLOCK

    def _measure(self, specs, shape):
        seconds = 0.0
        height, width = (shape[0], shape[1]) if len(shape) == 3 else (1, 1)
        channels = shape[-1]
        for class_name, config in specs:
            outputs = config["units" if class_name == "Dense" else "filters"]
            kernel = math.prod(config.get("kernel_size", (1,)))
            blocks = math.ceil(channels / self.block) * math.ceil(
                outputs / self.block
            )
            seconds += 1e-6 * (height * width * kernel * blocks + 20)
            channels = outputs
        return seconds


class _OverheadTable(_BlockTable):
    """Whole models cost their weighted layers' times plus a fixed
    overhead (what the layers timed alone leave out), so the table's
    estimate misses the whole model's ratio."""

    block = 1  # fine steps: the search can land close
    OVERHEAD = 2.0  # seconds; the weighted layers take 3

    def model_seconds(self, models):
        return [
            sum(layer_latencies(model, self).values()) + self.OVERHEAD
            for model in models
        ]


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 8))
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(32, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(16, 12, 12, 8)).astype("f4")


def _evaluate(images, reference):
    def evaluate(model, iterations):
        return -float(
            np.mean((model.predict(images, verbose=0) - reference) ** 2)
        )

    return evaluate


def test_a_shape_is_timed_once_and_the_file_is_reused(tmp_path):
    path = tmp_path / "times.json"
    table = LatencyTable(batch_size=2, num_threads=1, path=str(path), rounds=2)
    conv = keras.layers.Conv2D(8, 3)
    conv.build((None, 10, 10, 4))
    first = table.seconds([conv], (10, 10, 4))
    assert first > 0 and table.measured == 1
    assert table.seconds([conv], (10, 10, 4)) == first
    table.seconds([conv], (10, 10, 4), filters=[3])
    table.seconds([conv], (10, 10, 2))
    assert table.measured == 3
    again = LatencyTable(batch_size=2, num_threads=1, path=str(path))
    assert again.seconds([conv], (10, 10, 4)) == first
    assert again.measured == 0
    # Another batch size is another measurement.
    other = LatencyTable(batch_size=3, num_threads=1, path=str(path), rounds=1)
    other.seconds([conv], (10, 10, 4))
    assert other.measured == 1


def test_layer_latencies_sum_a_shared_layers_calls():
    table = _BlockTable(batch_size=1, num_threads=1)
    inputs = keras.Input((6, 6, 8))
    shared = keras.layers.Conv2D(8, 3, padding="same", name="shared")
    x = shared(shared(inputs))
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    times = layer_latencies(model, table)
    assert list(times) == ["shared", "fc"]
    one_call = table.seconds([shared], (6, 6, 8))
    assert times["shared"] == pytest.approx(2 * one_call)


def test_bad_tables_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="batch_size=0"):
        LatencyTable(batch_size=0)
    path = tmp_path / "broken.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="broken.json"):
        LatencyTable(path=str(path))
    with pytest.raises(ValueError, match="'mac', 'memory' or 'latency'"):
        compress_model(_model(), lambda m, i: 1.0, 1, 0.5, cost_metric="time")


def test_svd_by_time_picks_whole_blocks_and_lands_under_the_target(images):
    model = _model()
    weights = [w.copy() for w in model.get_weights()]
    evaluate = _evaluate(images, model.predict(images, verbose=0))
    table = _BlockTable()
    compressed, stats = compress_model(
        model,
        evaluate,
        1,
        0.7,
        cost_metric="latency",
        num_comp_ratio_candidates=4,
        latency_table=table,
        modules_to_ignore=["conv0"],
        latency_tolerance=None,  # the table's estimate, checked below
    )
    assert stats.cost_metric == "latency" and stats.ranks
    # A rank inside a block costs what the whole block does: the largest
    # rank within each time budget fills its last block.
    assert all(rank % BLOCK == 0 for rank in stats.ranks.values())
    assert 0.6 < stats.achieved_comp_ratio <= 0.7
    # The estimate is what the table says of the compressed model.
    whole = sum(layer_latencies(model, table).values())
    pieces = sum(layer_latencies(compressed, table).values())
    assert pieces / whole == pytest.approx(stats.achieved_comp_ratio)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_channel_pruning_by_time(images, tmp_path):
    model = _model()
    evaluate = _evaluate(images, model.predict(images, verbose=0))
    table = _BlockTable()
    scores = tmp_path / "scores.json"
    calls = []

    def prune(reference):
        def counting(candidate, iterations):
            calls.append(iterations)
            return reference(candidate, iterations)

        return compress_model(
            model,
            counting,
            1,
            0.6,
            scheme="channel_pruning",
            cost_metric="latency",
            num_comp_ratio_candidates=4,
            data=images,
            num_reconstruction_samples=200,
            latency_table=table,
            latency_tolerance=None,
            eval_scores_path=str(scores),
        )

    compressed, stats = prune(evaluate)
    assert calls and stats.kept_channels and stats.achieved_comp_ratio <= 0.6
    whole = sum(layer_latencies(model, table).values())
    pruned = sum(layer_latencies(compressed, table).values())
    # A layer losing inputs and outputs is estimated from its times with
    # each alone changed (t(i, o) = t(i, O) t(I, o) / t(I, O)); the fixed
    # cost per layer makes that a little off here.
    assert pruned / whole == pytest.approx(stats.achieved_comp_ratio, rel=1e-2)
    # The table's key holds what the times depend on.
    assert json.loads(scores.read_text())["key"]["batch_size"] == 32
    # The same settings and times: the scores are read back.
    calls.clear()
    _, again = prune(evaluate)
    assert calls == [] and again.kept_channels == stats.kept_channels


def test_the_whole_model_is_timed_until_its_ratio_is_on_target(images):
    """The layers' estimate alone lands off the target once the rest of
    the model's time counts; timing the whole model and searching again
    lands within the tolerance."""
    model = _model()
    evaluate = _evaluate(images, model.predict(images, verbose=0))
    table = _OverheadTable()
    options = dict(
        scheme="channel_pruning",
        cost_metric="latency",
        num_comp_ratio_candidates=10,
        data=images,
        num_reconstruction_samples=200,
        latency_table=table,
    )
    trusting, estimate = compress_model(
        model, evaluate, 1, 0.6, latency_tolerance=None, **options
    )
    (original, compressed) = table.model_seconds([model, trusting])
    assert compressed / original > 0.6 * 1.03  # the estimate alone misses
    landed, stats = compress_model(model, evaluate, 1, 0.6, **options)
    assert len(stats.latency_rounds) > 1
    first_target, first_estimate, first_measured = stats.latency_rounds[0]
    assert first_target == 0.6
    assert first_measured == pytest.approx(compressed / original)
    assert stats.achieved_comp_ratio == pytest.approx(0.6, rel=0.03)
    (original, compressed) = table.model_seconds([model, landed])
    assert compressed / original == pytest.approx(stats.achieved_comp_ratio)
    with pytest.raises(ValueError, match="latency_tolerance"):
        compress_model(model, evaluate, 1, 0.6, latency_tolerance=0, **options)


def test_whole_models_are_timed_on_the_tables_batch():
    inputs = keras.Input((16, 16, 8))
    wide = keras.Model(inputs, keras.layers.Conv2D(64, 3)(inputs))
    table = LatencyTable(batch_size=3, num_threads=1, rounds=2, invokes=2)
    (seconds,) = table.model_seconds([wide])
    assert seconds > 0
    interpreter = table._interpreter(
        __import__("tensorflow")
        .lite.TFLiteConverter.from_keras_model(wide)
        .convert()
    )
    assert interpreter.get_input_details()[0]["shape"].tolist() == [
        3,
        16,
        16,
        8,
    ]


class _ScriptedTable:
    """Whole-model time ratios read from a script keyed by the aim."""

    def __init__(self, script):
        self.script = script

    def model_seconds(self, models):
        return [1.0, self.script(models[1])]


def test_two_rounds_measuring_alike_do_not_make_the_search_leap():
    """Timing noise: the second round measures what the first did (its
    aim a little lower). The third round keeps scaling down, as if time
    were proportional, instead of following a flat secant far off."""
    from aimet_keras.compress import greedy

    measured = {0.5: 0.519, 0.482: 0.521}
    aims = []

    def choose(aim):
        aims.append(aim)
        return None, {}, aim  # the "model" is its aim

    def seconds(model):
        # Time is the aim plus a fixed share; the second round is noisy.
        return measured.get(round(model, 3), model + 0.02)

    _, _, model, rounds, ratio = greedy._land_on_time(
        None,
        _ScriptedTable(seconds),
        choose,
        (None, {}, 0.5),
        lambda units: 0.0,
        0.5,
        0.03,
    )
    assert [round(r[0], 3) for r in rounds[:2]] == [0.5, 0.482]
    assert aims[1] < aims[0]  # the third round aims lower still
    assert ratio == pytest.approx(0.5, rel=0.03)
