"""Suite ``fuzz``: every loader fuzzed for minutes; zero failures expected.

Loaders (see :mod:`tests.fuzz.kit`): ``encodings`` (``read_encodings`` on
0.6.1, 1.0.0, 2.0.0 and the older split 2.0.0 layout), ``sim_load``
(``load_encodings_to_sim`` on the same files), ``adaround``
(``set_and_freeze_param_encodings`` on AdaRound's flat param file),
``quantsim_config`` (``load_quantsim_config`` on the shipped configs, then
a sim built with the config) and ``cli_data`` (the CLI's ``load_data`` on
``.npz``, ``.npy``, an image folder and a TFRecord). Each loader gets
``BUDGET_S`` seconds of fuzzing, half structured (valid files mutated as
data: wrong types, missing keys, NaN and inf, bit widths, min above max,
duplicated and unknown names, per-channel lists of the wrong length) and
half byte-level (atheris, libFuzzer's coverage-guided mutator over the
instrumented loaders, when installed; else the kit's byte mutator).

A failure is any input that raises something other than a ``ValueError``
naming the file, hangs past ``HANG_SECONDS``, loads values the file does
not hold, or is refused after changing the sim. Every failing input is
saved to ``tests/fuzz/corpus/<loader>/``, which the tests replay.

Each fuzzer runs in its own process (``tests/fuzz/run_fuzzer.py``),
``PARALLEL`` at a time; input counts are those written by the process's
last statistics update (every 2 s).
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import time

from benchmarks import harness

__all__ = ["run"]

BUDGET_S = 600  # per loader, structured and byte-level together
QUICK_BUDGET_S = 20
PARALLEL = 2
FUZZERS = ("structured", "bytes")
# A process gets its budget plus this for starting (TensorFlow, the sim)
# before it counts as hung.
STARTUP_S = 240


def _jobs(budget, names):
    from tests.fuzz import kit

    unknown = sorted(set(names or ()) - set(kit.LOADERS))
    if unknown:
        raise ValueError(
            f"--only {unknown}: the fuzz suite's loaders are {kit.LOADERS}."
        )
    return [
        (loader, fuzzer, budget / len(FUZZERS))
        for loader in kit.LOADERS
        if not names or loader in names
        for fuzzer in FUZZERS
    ]


def _start(loader, fuzzer, seconds, out):
    log = open(out / f"{loader}-{fuzzer}.log", "w")  # noqa: SIM115
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.run_fuzzer",
        "--loader",
        loader,
        "--fuzzer",
        fuzzer,
        "--seconds",
        str(seconds),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=pathlib.Path(__file__).parents[2],
    )
    return process, log, time.time() + seconds + STARTUP_S


def _run_all(jobs, out):
    """Runs the fuzzers, PARALLEL at a time; ``{(loader, fuzzer): note}``
    for processes that failed or were killed."""
    pending, running, notes = list(jobs), [], {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            loader, fuzzer, seconds = pending.pop(0)
            print(f"fuzz: {loader} {fuzzer} for {seconds:.0f} s", flush=True)
            running.append(
                ((loader, fuzzer), *_start(loader, fuzzer, seconds, out))
            )
        time.sleep(1.0)
        for job in list(running):
            key, process, log, deadline = job
            code = process.poll()
            if code is None and time.time() > deadline:
                process.kill()
                process.wait()
                notes[key] = "hang: the process ran past its budget, killed"
            elif code is None:
                continue
            elif code != 0:
                notes[key] = f"the fuzzer process exited with {code}"
            log.close()
            running.remove(job)
    return notes


def run(quick=False, names=None):
    """Fuzzes every loader (or those in ``names``); returns the report."""
    budget = QUICK_BUDGET_S if quick else BUDGET_S
    jobs = _jobs(budget, names)
    out = pathlib.Path(tempfile.mkdtemp(prefix="fuzz-bench-"))
    notes = _run_all(jobs, out)
    table = harness.Table(
        f"Fuzzing, {budget:.0f} s per loader",
        [
            "loader",
            "fuzzer",
            "engine",
            "seconds",
            "inputs tried",
            "loaded",
            "distinct error messages",
            "failures",
            "first failure",
        ],
        formats={"seconds": "{:.0f}"},
    )
    messages, failures, mutator_errors = {}, [], 0
    for loader, fuzzer, _ in jobs:
        stats_path = out / f"{loader}-{fuzzer}.json"
        stats = {}
        if stats_path.is_file():
            stats = json.loads(stats_path.read_text())
        found = list(stats.get("failures", []))
        if (loader, fuzzer) in notes:
            found.append({"message": notes[(loader, fuzzer)], "input": None})
        messages[f"{loader}-{fuzzer}"] = stats.get("messages", [])
        mutator_errors += len(stats.get("mutator_errors", []))
        failures += [{"loader": loader, "fuzzer": fuzzer, **f} for f in found]
        table.add_row(
            loader,
            fuzzer,
            stats.get("engine"),
            stats.get("seconds"),
            stats.get("inputs"),
            stats.get("loaded"),
            len(stats.get("messages", [])),
            len(found),
            found[0]["message"][:120] if found else "",
        )
    table.notes.append(
        "A failure: an exception other than a ValueError naming the file, "
        "a ValueError without the file's name, no answer within "
        "tests.fuzz.kit.HANG_SECONDS, a load whose values differ from the "
        "file's, or a refused file that changed the sim. Failures are "
        "counted once per kind of message; every failing input is saved "
        "to tests/fuzz/corpus/<loader>/ and replayed by the tests."
    )
    table.notes.append(
        "Distinct error messages: refusals with numbers, names and values "
        "blanked (tests.fuzz.kit.message_kind), a rough measure of how "
        "many checks the inputs reached."
    )
    table.notes.append(
        f"Mutations the mutator itself could not make (skipped, not loader "
        f"failures): {mutator_errors}."
    )
    from tests.fuzz import kit

    return harness.Report(
        suite="fuzz",
        tables=[table],
        settings={
            "budget_s_per_loader": budget,
            "fuzzers": list(FUZZERS),
            "parallel_processes": PARALLEL,
            "hang_seconds": kit.HANG_SECONDS,
        },
        quick=quick,
        extra={"failures": failures, "messages": messages},
    )
