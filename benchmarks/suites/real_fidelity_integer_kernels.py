"""Suite ``real_fidelity_integer_kernels``: ``real_fidelity``'s rows that
the sim's integer kernels changed most, measured again.

The sim's convolutions and Dense layers compute as the exports' integer
kernels do in inference (:mod:`aimet_keras.sim.integer_accumulation`).
This suite reruns, with ``real_fidelity``'s settings and cached trained
weights, the rows where that mattered (EfficientNetB0 and EfficientNetV2B0,
whose squeeze-excite gates amplified one-step differences, and
MobileNetV2 as a control) and EfficientNetB0 after two epochs of QAT,
without the hours the full suite takes on two cores.
"""

import tempfile

from benchmarks.suites import real_fidelity
from benchmarks.suites import real_models

__all__ = ["RUNS", "run"]

RUNS = (
    ("EfficientNetB0",),
    ("EfficientNetV2B0",),
    ("MobileNetV2",),
    ("EfficientNetB0", 2),
)


def run(quick=False):
    """Runs the suite (``quick``: the PTQ rows only).

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    runs = [r for r in RUNS if len(r) == 1] if quick else RUNS
    rows = []
    with tempfile.TemporaryDirectory(prefix="real_fidelity_") as folder:
        for name, *qat in runs:
            rows.append(
                real_models.run_child(
                    "benchmarks.suites.real_fidelity", name, folder, *qat
                )
            )
    report = real_fidelity.report(rows, quick)
    report.suite = "real_fidelity_integer_kernels"
    for table in report.tables:
        table.notes.insert(
            0,
            "Rows rerun after the sim's convolutions and Dense layers took "
            "the integer kernels' arithmetic (aimet_keras.sim."
            "integer_accumulation); the other architectures' rows in "
            "real_fidelity.md predate it.",
        )
    return report
