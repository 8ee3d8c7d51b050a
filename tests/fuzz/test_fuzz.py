"""Fuzzing the loaders: every file gives a correct load or a ValueError
naming the file, never another exception, a hang or a wrong load.

Hypothesis drives structured mutations of valid files (wrong types,
missing keys, NaN and inf, bad bit widths, min above max, duplicated or
unknown names, per-channel lists of the wrong length) and byte-level ones
(truncation, flipped bytes, junk, invalid UTF-8, huge numbers, deep
nesting); the corpus of inputs that once broke a loader is replayed. The
property lives in :mod:`tests.fuzz.kit`, which the benchmark
(``python3 -m benchmarks run --suite fuzz``) runs for minutes per loader.
"""

import dataclasses
import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from tests.fuzz import kit

# Examples per loader and fuzzer: a few seconds each in CI. A config that
# loads builds a sim (about a second), so that loader gets fewer.
EXAMPLES = {
    "encodings": 150,
    "adaround": 60,
    "sim_load": 60,
    "quantsim_config": 15,
    "cli_data": 60,
}


@pytest.fixture(scope="module")
def targets():
    return {name: kit.make_target(name) for name in kit.LOADERS}


def _fuzz(target, mutate, examples):
    seeds = target.seeds()

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(rng=st.randoms(use_true_random=False))
    def check(rng):
        seed = rng.choice(seeds)
        data, suffix = mutate(target, seed, rng)
        outcome = kit.run_one(target, data, suffix)
        assert outcome.status != "failure", (outcome.message, data[:2000])

    check()


@pytest.mark.parametrize("loader", kit.LOADERS)
def test_seeds_load(targets, loader):
    target = targets[loader]
    for seed in target.seeds():
        outcome = kit.run_one(target, seed.data, seed.suffix)
        assert outcome.status == "loaded", (seed.name, outcome.message)


@pytest.mark.parametrize("loader", kit.LOADERS)
def test_structured_mutations(targets, loader):
    _fuzz(targets[loader], kit.structured_mutate, EXAMPLES[loader])


@pytest.mark.parametrize("loader", kit.LOADERS)
def test_byte_mutations(targets, loader):
    def mutate(target, seed, rng):
        return kit.byte_mutate(seed.data, rng), seed.suffix

    _fuzz(targets[loader], mutate, EXAMPLES[loader])


CORPUS = kit.corpus_files()


@pytest.mark.parametrize(
    "loader, path", CORPUS, ids=[f"{n}/{p.name}" for n, p in CORPUS]
)
def test_corpus_replays(targets, loader, path):
    """Inputs that once crashed a loader or loaded wrong values."""
    outcome = kit.run_one(targets[loader], path.read_bytes(), path.suffix)
    assert outcome.status != "failure", outcome.message


def test_corpus_is_not_empty():
    assert {loader for loader, _ in CORPUS} == set(kit.LOADERS)


def test_the_property_catches_failures(targets):
    """The checks themselves can fail: a crash, a hang, a message without
    the file and a wrong load are each reported."""

    class Broken(type(targets["encodings"])):
        def __init__(self, behaviour):
            self.behaviour = behaviour

        def load(self, path):
            return self.behaviour(path)

    def crash(path):
        raise KeyError("scale")

    def hang(path):
        while True:
            pass

    def anonymous(path):
        raise ValueError("bad scale")

    def wrong(path):
        params, activations = kit.make_target("encodings").load(path)
        name = next(iter(activations))
        activations[name] = dataclasses.replace(
            activations[name], delta=activations[name].delta * 2
        )
        return params, activations

    seed = targets["encodings"].seeds()[0]
    for behaviour, expected in (
        (crash, "KeyError"),
        (hang, "hang"),
        (anonymous, "not naming the file"),
        (wrong, "silent wrong load"),
    ):
        broken = Broken(behaviour)
        outcome = kit.run_one(broken, seed.data, seed.suffix, timeout=2)
        assert outcome.status == "failure", behaviour.__name__
        assert expected in outcome.message, outcome.message


def test_a_refusal_that_changed_the_sim_is_a_failure(targets):
    class Partial(type(targets["sim_load"])):
        def load(self, path):
            wrapper = kit._sim().quant_wrappers()[0]
            wrapper.input_quantizers[0].enabled = False
            raise ValueError(f"{path}: refused after a change")

    seed = targets["sim_load"].seeds()[0]
    outcome = kit.run_one(Partial(), seed.data, seed.suffix)
    assert outcome.status == "failure"
    assert "the sim changed" in outcome.message
    # The next input starts from the sim's own grids again.
    assert kit.run_one(targets["sim_load"], seed.data, ".json").status == (
        "loaded"
    )


# ---------------------------------------------- what the messages say


def _refusal(target, doc_or_bytes, suffix=".json"):
    data = doc_or_bytes
    if not isinstance(data, bytes):
        data = json.dumps(doc_or_bytes).encode()
    outcome = kit.run_one(target, data, suffix)
    assert outcome.status == "refused", outcome
    return outcome.message


def _seed_doc(target, name):
    (seed,) = [s for s in target.seeds() if s.name == name]
    return json.loads(seed.data)


@pytest.mark.parametrize(
    "version, edit, words",
    [
        # A scalar scale in 1.0.0 raised TypeError.
        ("v1_0_0", ("param_encodings", 0, "scale", 0.01), ["scale", "list"]),
        # A fractional zero point was truncated silently.
        ("v2_0_0", ("encodings", 4, "y_zero_point", 0.5), ["y_zero_point"]),
        # A fractional bit width was truncated silently.
        (
            "v0_6_1",
            ("activation_encodings", "relu:0", 0, "bitwidth", 8.7),
            ["bitwidth", "whole"],
        ),
        # NaN scale.
        (
            "v0_6_1",
            ("activation_encodings", "relu:0", 0, "scale", float("nan")),
            ["scale", "finite"],
        ),
        # A string where a number belongs.
        (
            "v1_0_0",
            ("activation_encodings", 0, "offset", ["-143"]),
            ["offset", "number"],
        ),
    ],
)
def test_encodings_refusals_name_tensor_and_problem(
    targets, version, edit, words
):
    doc = _seed_doc(targets["encodings"], version)
    node = doc
    for key in edit[:-2]:
        node = node[key]
    node[edit[-2]] = edit[-1]
    message = _refusal(targets["encodings"], doc)
    assert "<file>" in message and "tensor" in message
    for word in words:
        assert word in message, message


def test_min_above_max_is_refused(targets):
    doc = _seed_doc(targets["encodings"], "v0_6_1")
    entry = doc["activation_encodings"]["fc:0"][0]
    entry["min"], entry["max"] = entry["max"], entry["min"]
    message = _refusal(targets["encodings"], doc)
    assert "'fc:0'" in message and "min" in message


def test_symmetric_flag_with_an_asymmetric_offset_is_refused(targets):
    """The sim would keep a symmetric grid, not the file's."""
    doc = _seed_doc(targets["encodings"], "v1_0_0")
    doc["param_encodings"][2]["offset"] = [-100]
    message = _refusal(targets["encodings"], doc)
    assert "'fc/kernel:0'" in message and "symmetric" in message


def test_raw_json_problems_name_the_file(targets):
    target = targets["encodings"]
    assert "twice" in _refusal(target, b'{"version": "0.6.1", "version": 1}')
    assert "deeper" in _refusal(target, b"[" * 100_000)
    assert "UTF-8" in _refusal(target, b'{"version": "\xc3\x28"}')


def test_a_refused_file_leaves_the_sim_as_it_was(targets):
    """The last param is refused after the others were set: all or nothing.
    (run_one compares the sim's quantizers before and after.)"""
    target = targets["sim_load"]
    doc = _seed_doc(target, "v0_6_1")
    doc["param_encodings"]["fc/bias:0"] = doc["param_encodings"]["conv/bias:0"]
    message = _refusal(target, doc)
    assert "'fc/bias:0'" in message and "per-tensor" in message


def test_a_grid_float32_cannot_hold_is_refused(targets):
    doc = _seed_doc(targets["sim_load"], "v0_6_1")
    entry = doc["activation_encodings"]["relu:0"][0]
    entry.update(scale=1e300, min=0.0, max=255e300)
    message = _refusal(targets["sim_load"], doc)
    assert "'relu:0'" in message and "float32" in message


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            ("op_type", "Softmax", "encoding_constraints", "min", float("nan")),
            ["finite"],
        ),
        (
            ("op_type", "Softmax", "encoding_constraints", "max", True),
            ["finite"],
        ),
        (("supergroups", 0, "op_list", 0, ["Conv"]), ["op type"]),
        (("params", "bias", "bitwidth", 32.5), ["bitwidth"]),
    ],
)
def test_config_refusals_name_the_key(targets, edit, words):
    target = targets["quantsim_config"]
    doc = _seed_doc(target, "tflite_int8")
    node = doc
    for key in edit[:-2]:
        node = node[key]
    node[edit[-2]] = edit[-1]
    message = _refusal(target, doc)
    assert "<file>" in message
    for word in words:
        assert word in message, message


def _npz(**arrays):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"x": np.full((2, 8, 8, 3), np.nan)}, ["NaN", "index 0"]),
        ({"x": np.full((2, 8, 8, 3), 1e39)}, ["float32"]),
        ({"x": np.zeros((2, 8, 8, 3)), "y": np.array([0.5, 1])}, ["labels"]),
        ({"x": np.zeros((4, 8, 8, 3)), "y": np.zeros((2, 2))}, ["labels"]),
        ({"x": np.zeros((2, 8, 8, 3), np.complex64)}, ["complex"]),
        ({"x": np.array(3.0)}, ["shape"]),
    ],
)
def test_data_refusals(targets, arrays, words):
    message = _refusal(targets["cli_data"], _npz(**arrays), ".npz")
    for word in words:
        assert word in message, message


def test_corrupt_archives_are_refused(targets):
    data = _npz(x=np.zeros((2, 8, 8, 3)))
    target = targets["cli_data"]
    assert "npz" in _refusal(target, data[:100], ".npz")
    assert "npz" in _refusal(target, b"PK" + data[2:40], ".npz")
    # A header that promises more data than the file holds.
    npy = data[data.index(b"\x93NUMPY") :]
    header_end = npy.index(b"\n") + 1
    assert "promises" in _refusal(target, npy[:header_end], ".npy")


def test_byte_mutator_is_deterministic():
    assert kit.byte_mutate(b"abc" * 50, random.Random(3)) == kit.byte_mutate(
        b"abc" * 50, random.Random(3)
    )
