"""Greedy per-layer ratio selection: lands on the target, caches scores."""

import keras
import numpy as np
import pytest

from aimet_keras.compress import compress_model
from aimet_keras.compress import model_cost


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 8))
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(16, 3, padding="same", name=f"conv{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(8, 12, 12, 8)).astype("f4")


def _evaluator(images, reference, calls):
    def evaluate(model, iterations):
        calls.append(iterations)
        error = np.mean((model.predict(images, verbose=0) - reference) ** 2)
        return -float(error)

    return evaluate


def test_lands_on_the_target_and_reuses_the_score_table(images, tmp_path):
    model = _model()
    weights = [w.copy() for w in model.get_weights()]
    reference = model.predict(images, verbose=0)
    calls = []
    evaluate = _evaluator(images, reference, calls)
    cache = tmp_path / "scores.json"
    compressed, stats = compress_model(
        model, evaluate, 3, 0.6, eval_scores_path=str(cache)
    )
    assert calls and set(calls) == {3}
    # The original, then three layers at nine candidates each.
    assert len(calls) == 1 + 3 * 9
    # Within 1% of the model's cost, never over.
    assert 0.6 - 0.01 < stats.achieved_comp_ratio <= 0.6
    measured = model_cost(compressed).macs / model_cost(model).macs
    assert measured == pytest.approx(stats.achieved_comp_ratio)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # Same settings: the table is read back, the callback not called.
    calls.clear()
    _, again = compress_model(
        model, evaluate, 3, 0.6, eval_scores_path=str(cache)
    )
    assert calls == [] and again.ranks == stats.ranks
    # Other settings: a new table.
    compress_model(
        model,
        evaluate,
        3,
        0.6,
        num_comp_ratio_candidates=4,
        eval_scores_path=str(cache),
    )
    assert len(calls) == 1 + 3 * 3


def test_bad_input_is_a_clear_error(images):
    model = _model()
    with pytest.raises(ValueError, match="target_comp_ratio=1.5"):
        compress_model(model, lambda m, i: 1.0, 1, 1.5)
    with pytest.raises(ValueError, match="'conv9'.*conv"):
        compress_model(
            model, lambda m, i: 1.0, 1, 0.5, modules_to_ignore=["conv9"]
        )
    with pytest.raises(ValueError, match="NaN for the original model"):
        compress_model(model, lambda m, i: float("nan"), 1, 0.5)
    size = model.count_params()

    def nan_when_compressed(candidate, iterations):
        return 1.0 if candidate.count_params() == size else float("nan")

    with pytest.raises(ValueError, match="NaN for layer 'conv0' at ratio"):
        compress_model(model, nan_when_compressed, 1, 0.5)
