"""Runs one fuzzer on one loader for a time budget; writes its statistics.

``python3 -m tests.fuzz.run_fuzzer --loader encodings --fuzzer bytes
--seconds 300 --out DIR`` writes ``DIR/<loader>-<fuzzer>.json``: inputs
tried, inputs loaded, distinct error messages, and every failure (saved to
``tests/fuzz/corpus/<loader>/`` so that the tests replay it). The
benchmark suite ``fuzz`` starts one process per loader and fuzzer.

Fuzzers:

* ``structured``: :func:`tests.fuzz.kit.structured_mutate` on the valid
  seeds and on every input that gave a new kind of error message (so
  mutations pile up on inputs that reach deeper checks).
* ``bytes``: atheris (libFuzzer's coverage-guided mutator over the
  instrumented ``aimet_keras`` loaders) when it is installed, else
  :func:`tests.fuzz.kit.byte_mutate` guided by messages as above.
"""

import argparse
import json
import os
import pathlib
import random
import sys
import time

from tests.fuzz import kit

__all__ = ["main"]

# The first byte of an atheris input picks the seed's kind (its suffix).
_STATS_EVERY_S = 2.0


class _Stats:
    """Counts outcomes; writes them out now and then (atheris may exit
    the process at any input)."""

    def __init__(self, loader, fuzzer, engine, path, corpus, seconds):
        self.deadline = time.time() + seconds
        self.path = path
        self.corpus = corpus
        self.loader = loader
        self.data = {
            "loader": loader,
            "fuzzer": fuzzer,
            "engine": engine,
            "inputs": 0,
            "loaded": 0,
            "refused": 0,
            "messages": [],
            "failures": [],
            "mutator_errors": [],
            "started": time.time(),
            "seconds": 0.0,
        }
        self.kinds = set()
        self.failure_kinds = set()
        self.written = 0.0

    def add(self, outcome, data, suffix):
        """Records an outcome; True when it was a new kind of message."""
        self.data["inputs"] += 1
        new = False
        if outcome.status == "failure":
            kind = kit.message_kind(outcome.message)
            path = kit.save_to_corpus(self.loader, data, suffix, self.corpus)
            if kind not in self.failure_kinds:
                self.failure_kinds.add(kind)
                self.data["failures"].append(
                    {"message": outcome.message[:500], "input": str(path)}
                )
            new = True
        else:
            self.data[outcome.status] += 1
            kind = kit.message_kind(outcome.message)
            if kind not in self.kinds:
                self.kinds.add(kind)
                self.data["messages"].append(kind[:300])
                new = True
        now = time.time()
        # Often near the end: atheris exits the process when time is up.
        near_end = now > self.deadline - 2 * _STATS_EVERY_S
        if now - self.written > (0.2 if near_end else _STATS_EVERY_S):
            self.write()
        return new

    def write(self):
        self.written = time.time()
        self.data["seconds"] = self.written - self.data["started"]
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1))
        os.replace(temporary, self.path)


def _guided(target, stats, seconds, mutate, rng):
    """Mutates seeds and inputs that gave new messages until time is up."""
    pool = [(s, s.data, s.suffix) for s in target.seeds()]
    deadline = time.time() + seconds
    while time.time() < deadline:
        seed, data, suffix = rng.choice(pool)
        try:
            data, suffix = mutate(target, seed, data, suffix, rng)
        except Exception as error:  # noqa: BLE001 - the mutator's, not a loader's
            stats.data["mutator_errors"].append(repr(error)[:200])
            continue
        outcome = kit.run_one(target, data, suffix)
        if stats.add(outcome, data, suffix) and len(pool) < 5000:
            pool.append((_with_data(seed, data, target), data, suffix))


def _with_data(seed, data, target):
    """A seed whose bytes are ``data`` and whose structure is parsed back
    when possible (structured mutation continues from it)."""
    doc = None
    if seed.suffix == ".json":
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            doc = None
    elif seed.doc is not None:
        doc = seed.doc
    return kit.Seed(seed.name, seed.suffix, doc, data)


def _structured(target, seed, data, suffix, rng):
    if seed.doc is not None:
        try:
            return kit.structured_mutate(target, seed, rng)
        except RecursionError:
            pass  # a document nested too deep to copy: mutate its bytes
    return kit.byte_mutate(data, rng), suffix


def _bytes(target, seed, data, suffix, rng):
    return kit.byte_mutate(data, rng), suffix


def _atheris(target, stats, seconds, corpus_dir):
    import atheris

    seeds = target.seeds()
    suffixes = sorted({s.suffix for s in seeds})
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        prefix = bytes([suffixes.index(seed.suffix)])
        (corpus_dir / f"seed-{seed.name}").write_bytes(prefix + seed.data)

    def one_input(data):
        if not data:
            return
        suffix = suffixes[data[0] % len(suffixes)]
        stats.add(kit.run_one(target, data[1:], suffix), data[1:], suffix)

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={int(seconds)}",
            "-timeout=0",  # run_one's alarm finds hangs (libFuzzer's
            # SIGALRM would clash with it)
            "-max_len=131072",
            "-rss_limit_mb=8192",
            str(corpus_dir),
        ],
        one_input,
    )
    atheris.Fuzz()


def _instrumented():
    """Imports the loaders under atheris' coverage instrumentation."""
    import atheris

    with atheris.instrument_imports(include=["aimet_keras"]):
        import aimet_keras.cli.data  # noqa: F401
        import aimet_keras.export.encodings  # noqa: F401
        import aimet_keras.sim.config  # noqa: F401
        import aimet_keras.sim.export  # noqa: F401


def main(argv=None):
    """Runs one fuzzer; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loader", required=True, choices=kit.LOADERS)
    parser.add_argument(
        "--fuzzer", required=True, choices=("structured", "bytes")
    )
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", default=str(kit.CORPUS_DIR))
    parser.add_argument(
        "--engine", choices=("auto", "atheris", "mutator"), default="auto"
    )
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = "mutator"
    if args.fuzzer == "bytes" and args.engine != "mutator":
        try:
            _instrumented()
            engine = "atheris"
        except ImportError:
            if args.engine == "atheris":
                raise
    target = kit.make_target(args.loader)
    target.seeds()  # builds the sim before the clock starts
    stats = _Stats(
        args.loader,
        args.fuzzer,
        engine,
        out / f"{args.loader}-{args.fuzzer}.json",
        args.corpus,
        args.seconds,
    )
    stats.write()
    rng = random.Random(args.seed)
    if engine == "atheris":
        _atheris(target, stats, args.seconds, out / f"atheris-{args.loader}")
    else:
        mutate = _structured if args.fuzzer == "structured" else _bytes
        _guided(target, stats, args.seconds, mutate, rng)
    stats.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
