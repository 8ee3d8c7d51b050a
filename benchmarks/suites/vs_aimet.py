"""Suite ``vs_aimet``: aimet_keras's post-training results beside AIMET's.

Computes nothing: it reads the stored results of the ``ptq`` suite (ours) and
of the ``aimet_onnx`` suite (AIMET 2.42 itself, run in its own environment on
the same models converted with tf2onnx, with the same images, iterations and
threads), and sets them side by side against issue 4's targets:

- W4A8 AdaRound: our accuracy no more than 0.3 points below AIMET's, our
  time no more than AIMET's;
- W4A4: within 2 points of FP32 on the ResNet-style net and 10 on the
  MobileNetV2-style net, and ahead of AIMET.

Run ``ptq`` and ``aimet_onnx`` first (both full, or both ``--quick``).
"""

import json

from benchmarks import harness

__all__ = ["run"]

W4A4_LIMIT = {"resnet": 2.0, "mobilenet_v2": 10.0}


def _load(name, quick):
    path = harness.RESULTS_DIR / f"{name}{'-quick' if quick else ''}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m benchmarks run --suite {name}"
            f"{' --quick' if quick else ''}` first."
        )
    return json.loads(path.read_text())


def _rows(document, title_start):
    for table in document["tables"]:
        if table["title"].startswith(title_start):
            return table["rows"]
    raise ValueError(
        f"No table starting {title_start!r} in the {document['suite']} "
        "results; run that suite again."
    )


def _verdict(met):
    return "met" if met else "NOT met"


def run(quick=False):
    """Builds the side-by-side tables from the stored results.

    Args:
        quick: compare the ``-quick`` results.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    ours, theirs = _load("ptq", quick), _load("aimet_onnx", quick)
    peer = {
        (row["model"], row["bits"]): row for row in _rows(theirs, "aimet-onnx")
    }
    w4a8 = harness.Table(
        "W4A8 per-channel AdaRound: aimet_keras vs AIMET (aimet-onnx), top-1",
        [
            "model",
            "FP32",
            "ours",
            "AIMET",
            "ours - AIMET (points)",
            "ours s",
            "AIMET s",
            "accuracy >= AIMET - 0.3",
            "time <= AIMET",
        ],
        formats={
            "FP32": "{:.2%}",
            "ours": "{:.2%}",
            "AIMET": "{:.2%}",
            "ours - AIMET (points)": "{:+.2f}",
            "ours s": "{:.0f}",
            "AIMET s": "{:.0f}",
        },
    )
    for row in _rows(ours, "W4A8"):
        other = peer[(row["model"], "W4A8")]
        difference = 100 * (row["AdaRound"] - other["aimet-onnx AdaRound"])
        w4a8.add_row(
            row["model"],
            row["FP32"],
            row["AdaRound"],
            other["aimet-onnx AdaRound"],
            difference,
            row["AdaRound s"],
            other["AdaRound s"],
            _verdict(difference >= -0.3 - 1e-9),
            _verdict(row["AdaRound s"] <= other["AdaRound s"]),
        )
    w4a4 = harness.Table(
        "W4A4 (per-channel weights): aimet_keras's best vs AIMET's AdaRound "
        "flow, top-1",
        [
            "model",
            "FP32",
            "ours",
            "ours: technique",
            "ours drop (points)",
            "AIMET",
            "AIMET drop (points)",
            "within limit",
            "ahead of AIMET",
        ],
        formats={
            "FP32": "{:.2%}",
            "ours": "{:.2%}",
            "ours drop (points)": "{:+.2f}",
            "AIMET": "{:.2%}",
            "AIMET drop (points)": "{:+.2f}",
        },
    )
    rows = _rows(ours, "W4A4")
    for model in W4A4_LIMIT:
        candidates = [
            r for r in rows if r["model"] == model and r["seconds"] is not None
        ]
        best = max(candidates, key=lambda r: r["top-1"])
        fp32 = next(
            r["top-1"]
            for r in rows
            if r["model"] == model and r["technique"] == "FP32"
        )
        other = peer[(model, "W4A4")]
        drop = 100 * (fp32 - best["top-1"])
        w4a4.add_row(
            model,
            fp32,
            best["top-1"],
            best["technique"],
            drop,
            other["aimet-onnx AdaRound"],
            100 * (other["FP32 (ONNX)"] - other["aimet-onnx AdaRound"]),
            f"{_verdict(drop <= W4A4_LIMIT[model])} (<= {W4A4_LIMIT[model]:g})",
            _verdict(best["top-1"] > other["aimet-onnx AdaRound"]),
        )
    notes = [
        f"ours: benchmarks/results/ptq{'-quick' if quick else ''}.md "
        f"(run {ours['machine']['date_utc']}, load average "
        f"{ours['machine']['load_average_1m']}); AIMET: benchmarks/results/"
        f"aimet_onnx{'-quick' if quick else ''}.md (run "
        f"{theirs['machine']['date_utc']}, load average "
        f"{theirs['machine']['load_average_1m']}). Same test images, "
        "calibration images, iterations and 2 threads; AIMET runs on the "
        "tf2onnx export of the same Keras model (its FP32 accuracy in "
        "onnxruntime equals Keras's).",
    ]
    w4a8.notes.extend(notes)
    w4a4.notes.append(
        "ours: the most accurate of our W4A4 techniques in the ptq table; "
        "AIMET: BN fold, AdaRound, activation encodings on the same images."
    )
    settings = {f"ptq {key}": value for key, value in ours["settings"].items()}
    return harness.Report("vs_aimet", [w4a8, w4a4], settings, quick=quick)
