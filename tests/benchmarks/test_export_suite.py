"""Unit tests of the export suite's pure helpers. No model is built."""

import doctest

import numpy as np
import pytest

from benchmarks import suites
from benchmarks.suites import export


def test_export_suite_is_registered():
    assert suites.get_suite("export") is export
    assert callable(export.run)


def test_docstring_examples():
    # benchmarks/ is not among pytest's doctest paths; run them here.
    failed, attempted = doctest.testmod(export, extraglobs={"np": np})
    assert attempted > 0 and failed == 0


def test_agreement_counts_equal_positions():
    assert export.agreement([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert export.agreement(np.array([0, 1]), np.array([1, 0])) == 0.0


@pytest.mark.parametrize("a, b", [([1, 2], [1]), ([], [])])
def test_agreement_refuses_mismatched_or_empty(a, b):
    with pytest.raises(ValueError):
        export.agreement(a, b)


@pytest.mark.parametrize(
    "same, points, verdict",
    [
        (1.0, 0.0, "met"),
        (0.995, 0.1, "met"),  # both limits are inclusive
        (0.995, 0.1 + 1e-12, "met"),  # float noise of 10 / 10,000 images
        (0.9949, 0.0, "not met"),
        (1.0, 0.11, "not met"),
        (1.0, -0.05, "met"),  # the difference is taken as |.|
        (None, 0.0, None),
    ],
)
def test_accuracy_verdict(same, points, verdict):
    assert export.accuracy_verdict(same, points) == verdict


@pytest.mark.parametrize(
    "fp32, int8, verdict",
    [
        (10.0, 6.0, "met"),
        (10.0, 6.01, "not met"),
        (1.0, 0.5, "met"),  # 1 ms counts
        (0.99, 0.1, export.NOT_APPLICABLE),
        (None, 1.0, None),
    ],
)
def test_latency_verdict(fp32, int8, verdict):
    assert export.latency_verdict(fp32, int8) == verdict


def test_size_verdict():
    assert export.size_verdict(0.3) == "met"
    assert export.size_verdict(0.301) == "not met"
    assert export.size_verdict(None) is None


def _op(name, inputs, outputs):
    return {"op_name": name, "inputs": inputs, "outputs": outputs}


def test_undelegated_ops_finds_an_op_between_two_partitions():
    # QUANTIZE -> CONV -> SOFTMAX -> DEQUANTIZE; XNNPACK takes all but the
    # SOFTMAX, in two partitions around it.
    ops = [
        _op("QUANTIZE", [0], [1]),
        _op("CONV_2D", [1, 2, 3], [4]),
        _op("SOFTMAX", [4], [5]),
        _op("DEQUANTIZE", [5], [6]),
        _op("DELEGATE", [0], [4]),
        _op("DELEGATE", [5], [6]),
    ]
    assert export.undelegated_ops(ops, [6]) == (2, ["SOFTMAX"])


def test_undelegated_ops_last_op_outside_the_delegate():
    ops = [
        _op("CONV_2D", [0, 1], [2]),
        _op("SOFTMAX", [2], [3]),
        _op("DELEGATE", [0], [2]),
    ]
    assert export.undelegated_ops(ops, [3]) == (1, ["SOFTMAX"])


def test_undelegated_ops_all_delegated_and_no_delegate():
    conv = _op("CONV_2D", [0, 1], [2])
    assert export.undelegated_ops([conv, _op("DELEGATE", [0], [2])], [2]) == (
        1,
        [],
    )
    assert export.undelegated_ops([conv], [2]) == (0, ["CONV_2D"])


def test_top2_ties_and_disagreements():
    scores = np.array(
        [[0.4, 0.4, 0.2], [0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]
    )
    # Only the first row's top two tie; the last row's tie is below the top.
    assert export.top2_ties(scores).tolist() == [True, False, False, False]
    top1 = np.argmax(scores, axis=-1)  # [0, 0, 2, 2]
    other = np.array([1, 0, 1, 2])
    ties = export.top2_ties(scores)
    assert export.disagreements(other, top1, np.zeros(4, bool), ties) == (2, 1)
    assert export.disagreements(top1, top1, ties, ties) == (0, 0)


def test_time_blocks_warms_up_each_block_and_times_each_call():
    order = []
    samples = export.time_blocks(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")},
        rounds=5,
        block=2,
        warmup=1,
    )
    assert order == (["a"] * 3 + ["b"] * 3) * 5
    assert {k: len(v) for k, v in samples.items()} == {"a": 10, "b": 10}
    assert all(t >= 0 for v in samples.values() for t in v)


@pytest.mark.parametrize(
    "rounds, block, warmup", [(4, 1, 0), (5, 0, 0), (5, 1, -1)]
)
def test_time_blocks_refuses_too_few_runs(rounds, block, warmup):
    with pytest.raises(ValueError):
        export.time_blocks({"a": lambda: None}, rounds, block, warmup)


def test_bias_types_counts_the_third_input_of_conv_and_dense_ops():
    ops = [
        {"op_name": "QUANTIZE", "inputs": [0]},
        {"op_name": "CONV_2D", "inputs": [1, 2, 3]},
        {"op_name": "DEPTHWISE_CONV_2D", "inputs": [4, 5, 6]},
        {"op_name": "FULLY_CONNECTED", "inputs": [7, 8, -1]},  # no bias
        {"op_name": "FULLY_CONNECTED", "inputs": [7, 8, 9]},
        {"op_name": "ADD", "inputs": [10, 11, 12]},  # not a bias
        {"op_name": "MEAN", "inputs": [13, 14]},
    ]
    dtypes = {3: "int64", 6: "int64", 9: "int32", 12: "int16"}
    assert export.bias_types(ops, dtypes) == {"int32": 1, "int64": 2}
    assert list(export.bias_types(ops, dtypes)) == ["int32", "int64"]
    assert export.bias_types(ops[:1], dtypes) == {}
