"""Suite ``aimet_conformance``: our files in AIMET's readers, AIMET's in ours.

For the ResNet- and MobileNetV2-style reference nets (BN folded), four
quantsim configs (``default``, ``tflite_int8``, ``tflite_16x8`` with 8-bit
activations, as ``export_onnx`` holds 8-bit grids, and ``per_channel``:
the default with per-channel weights) and the three encodings versions:

* ours -> AIMET: the Keras sim is calibrated and written with
  ``sim.export`` (names of the SavedModel) and ``export_onnx`` (the FP32
  ONNX copy and its encodings). aimet-onnx 2.42 (its own environment, as
  the ``aimet_onnx`` suite) runs its validator on both files, builds a
  ``QuantizationSimModel`` on the ONNX copy with the same config, loads the
  ONNX encodings with ``strict=True`` and runs the test images.
* AIMET -> ours: aimet-onnx calibrates its own sim (same config, min-max)
  and exports each version; ``load_encodings`` reads that file (ONNX names)
  into a Keras sim of the same config, which then runs the test images.

Agreement is top-1 of one sim against the other and the largest absolute
difference of the softmax outputs. The peer script
(``benchmarks/peers/aimet_onnx_conformance.py``) documents where aimet-onnx's
sim is made to quantize what ours does.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import warnings

from benchmarks import harness
from benchmarks.suites import aimet_onnx as aimet_onnx_suite

__all__ = ["run"]

MODELS = ("resnet", "mobilenet_v2")
CONFIGS = ("default", "tflite_int8", "tflite_16x8", "per_channel")
VERSIONS = ("0.6.1", "1.0.0", "2.0.0")
PEER_SCRIPT = (
    pathlib.Path(__file__).resolve().parent.parent
    / "peers"
    / "aimet_onnx_conformance.py"
)


def _config_file(name, folder):
    """The AIMET-readable config file of ``name``, and what our sim takes."""
    from aimet_keras.sim import config as config_lib

    shipped = pathlib.Path(config_lib.__file__).parent / "configs"
    if name != "per_channel":
        return shipped / f"{name}.json", name
    data = json.loads((shipped / "default.json").read_text())
    data["defaults"]["per_channel_quantization"] = "True"
    path = folder / "per_channel.json"
    path.write_text(json.dumps(data, indent=1))
    return path, str(path)


def _agreement(a, b):
    import numpy as np

    return (
        float(np.mean(np.argmax(a, -1) == np.argmax(b, -1))),
        float(np.max(np.abs(a - b))),
    )


def _sim(folded, config, calibration):
    from aimet_keras.sim import QuantizationSimModel

    sim = QuantizationSimModel(folded, config_file=config)
    sim.compute_encodings(calibration)
    return sim


def _run_peer(python, job_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run(
        [python, str(PEER_SCRIPT), str(job_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout.decode(errors="replace")[-8000:])
        raise RuntimeError(
            f"aimet-onnx conformance run failed ({job_path}), exit status "
            f"{completed.returncode}; its output's end is above."
        )


def _case(python, name, folded, config, folder, images, calibration):
    """One model and config: every version both ways; returns rows."""
    import numpy as np

    from aimet_keras import export_onnx
    from aimet_keras.sim.export import load_encodings

    aimet_config, ours_config = _config_file(config, folder)
    sim = _sim(folded, ours_config, calibration)
    ours = sim.model.predict(images, verbose=0)
    validate, load = [], {}
    for version in VERSIONS:
        result = export_onnx(
            sim, folder / f"{version}.onnx", encoding_version=version
        )
        sim.export(folder, f"keras_{version}", encoding_version=version)
        validate += [
            str(result.encodings_path),
            str(folder / f"keras_{version}.encodings"),
        ]
        load[version] = str(result.encodings_path)
    load["keras_2.0.0"] = str(_onnx_named(sim, folder, load["2.0.0"]))
    job = {
        "model": str(folder / "0.6.1.fp32.onnx"),
        "config": str(aimet_config),
        "data": str(folder.parent / "data.npz"),
        "out": str(folder),
        "validate": validate,
        "load": load,
        "export_versions": list(VERSIONS),
    }
    (folder / "job.json").write_text(json.dumps(job))
    _run_peer(python, folder / "job.json")
    peer = json.loads((folder / "result.json").read_text())
    theirs = np.load(folder / "aimet.npy")
    rows = []
    for version in VERSIONS:
        failures = [
            f"{pathlib.Path(path).name}: {error}"
            for path, error in peer["validate"].items()
            if error
            and f"_{version}." in path
            or error
            and f"/{version}." in path
        ]
        loaded = peer["load"][version]
        own = peer["own"][version]
        if "lenient" in loaded:  # aimet-onnx could not load it at all
            to_aimet = (float("nan"), float("nan"))
        else:
            to_aimet = _agreement(np.load(folder / f"{version}.npy"), ours)
        back = _sim(folded, ours_config, calibration)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            done = load_encodings(back, folder / f"aimet_{version}.encodings")
        from_aimet = _agreement(back.model.predict(images, verbose=0), theirs)
        said = [str(w.message) for w in caught]
        left_out = [m for m in said if "does not quantize, left out" in m]
        rows.append(
            dict(
                model=name,
                config=config,
                version=version,
                validator="pass" if not failures else "; ".join(failures),
                strict=_verdict(loaded),
                mismatches=loaded["mismatches"],
                lenient=loaded.get("lenient"),
                own=_verdict(own),
                own_mismatches=own["mismatches"],
                to_aimet=to_aimet,
                loaded=len(done),
                left_out=_left_out(left_out),
                left_out_said=left_out,
                disabled=[m for m in said if m not in left_out],
                keras_strict=(
                    _keras_verdict(peer["load"]["keras_2.0.0"], folder, ours)
                    if version == "2.0.0"
                    else ""
                ),
                keras_load=peer["load"]["keras_2.0.0"],
                from_aimet=from_aimet,
                aligned=peer.get("aligned", {}),
            )
        )
    return rows


def _onnx_named(sim, folder, onnx_file):
    """``sim.export``'s 2.0.0 file as entries of the ONNX copy.

    It names the SavedModel's tensors and holds the 32-bit biases of
    configs that quantize them; moved onto the ONNX copy, aimet-onnx's
    strict load checks its entries. A tensor takes the name (and a
    per-channel kernel the channel axis, in ONNX's layout) that
    ``export_onnx``'s file gives it; a Conv's bias, the ONNX copy's bias
    input. A Dense's bias is left out: tf2onnx makes it the constant of an
    Add, which aimet-onnx treats as an activation, not a bias (its own
    export writes no encoding for it).
    """
    from aimet_keras.export.onnx import onnx_tensor_names

    written = json.loads(pathlib.Path(onnx_file).read_text())["encodings"]
    written = {e["name"]: e for e in written}
    onnx_name = {}
    for name, ours in onnx_tensor_names(sim).items():
        if name in written or ours.endswith("/bias:0"):
            onnx_name.setdefault(ours, name)
    data = json.loads((folder / "keras_2.0.0.encodings").read_text())
    kept = []
    for entry in data["encodings"]:
        if entry["name"] not in onnx_name and entry["name"].endswith("/bias:0"):
            continue
        entry["name"] = onnx_name.get(entry["name"], entry["name"])
        if "axis" in entry and "axis" in written.get(entry["name"], {}):
            entry["axis"] = written[entry["name"]]["axis"]
        kept.append(entry)
    data["encodings"] = kept
    path = folder / "keras_2.0.0.onnx_names.encodings"
    path.write_text(json.dumps(data, indent=1))
    return path


def _keras_verdict(entry, folder, ours):
    """The strict load's verdict on sim.export's file, and the top-1
    agreement of the sim it gave (leniently loaded where refused)."""
    import numpy as np

    verdict = _verdict(entry)
    if "lenient" not in entry:
        top1 = _agreement(np.load(folder / "keras_2.0.0.npy"), ours)[0]
        verdict += f"; top-1 = {top1:.2%}"
    return verdict


def _left_out(messages):
    """'N copies, M extra' of load_encodings' warning on AIMET's entries
    for tensors the Keras sim does not quantize."""
    import re

    found = {"copies": 0, "extra": 0}
    for message in messages:
        for count, kind in re.findall(
            r"(\d+) (repeat the grid|are quantizers of AIMET)", message
        ):
            found["copies" if kind.startswith("repeat") else "extra"] += int(
                count
            )
    return ", ".join(f"{n} {k}" for k, n in found.items() if n) or "0"


def _verdict(entry):
    """'pass', or 'refused (N: what differs)' for a strict load's entry."""
    if entry["strict"] is None:
        return "pass"
    if "lenient" in entry:
        return "refused (could not load)"
    kinds = {}
    for mismatch in entry["mismatches"]:
        for key in mismatch:
            if key != "quantizer_name":
                kind = key.removesuffix("_mismatch")
                kinds[kind] = kinds.get(kind, 0) + 1
    said = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    return f"refused ({said})"


def run(quick=False, names=MODELS):
    """Runs the suite.

    Args:
        quick: 500 test images and 256 calibration images (default: the
            shipped slice's 2,000 and 1,000), the ResNet only.
        names: the models to run (``--only``). Defaults to both.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    import numpy as np

    from aimet_keras import ptq
    from aimet_keras import zoo

    python = aimet_onnx_suite._aimet_python()
    images = zoo.load_fashion_mnist_slice("test")[0]
    calibration = zoo.load_fashion_mnist_slice("calibration")[0]
    if quick:
        images, calibration = images[:500], calibration[:256]
    table = harness.Table(
        "Our encodings in aimet-onnx's readers, and AIMET's in ours "
        f"({len(images):,} test images)",
        [
            "model",
            "config",
            "version",
            "AIMET validator",
            "AIMET strict load",
            "AIMET's own file, strict",
            "ours->AIMET top-1 =",
            "ours->AIMET max diff",
            "sim.export 2.0.0, strict",
            "AIMET->ours loaded",
            "AIMET->ours left out",
            "AIMET->ours top-1 =",
            "AIMET->ours max diff",
        ],
        formats={
            "ours->AIMET top-1 =": "{:.2%}",
            "ours->AIMET max diff": "{:.1e}",
            "AIMET->ours top-1 =": "{:.2%}",
            "AIMET->ours max diff": "{:.1e}",
        },
    )
    raw = []
    with tempfile.TemporaryDirectory() as root:
        root = pathlib.Path(root)
        np.savez(
            root / "data.npz",
            images=images.astype(np.float32),
            calibration=calibration.astype(np.float32),
        )
        for name in names[:1] if quick else names:
            folded, _ = ptq.fold_all_batch_norms(zoo.load_model(name))
            for config in CONFIGS:
                folder = root / f"{name}-{config}"
                folder.mkdir()
                print(f"[aimet_conformance] {name} {config}", flush=True)
                for row in _case(
                    python, name, folded, config, folder, images, calibration
                ):
                    raw.append(row)
                    table.add_row(
                        row["model"],
                        row["config"],
                        row["version"],
                        row["validator"],
                        row["strict"],
                        row["own"],
                        row["to_aimet"][0],
                        row["to_aimet"][1],
                        row["keras_strict"],
                        row["loaded"],
                        row["left_out"],
                        row["from_aimet"][0],
                        row["from_aimet"][1],
                    )
    aligned = raw[-1]["aligned"] if raw else {}
    table.notes.extend(
        [
            "AIMET validator: aimet-onnx's quantsim._flatten_encodings on both "
            "files we write per version (sim.export's, naming the "
            "SavedModel's tensors, and export_onnx's .fp32.encodings).",
            "AIMET strict load: load_encodings_to_sim(strict=True) of "
            "export_onnx's encodings into aimet-onnx's QuantizationSimModel "
            "on export_onnx's FP32 ONNX copy, built with the same config "
            "file plus a MatMul+Add supergroup (tf2onnx writes a Keras Dense "
            "as MatMul then Add; the Keras sim quantizes only the sum). "
            "Also turned off in aimet-onnx's sim before loading: depthwise "
            "Conv outputs before their Relu/Clip (aimet-onnx keeps depthwise "
            "convolutions out of supergroups; the Keras sim and TFLite fuse "
            "them) and constant non-weight inputs (Clip bounds, the Dense "
            "bias after the MatMul). Cleared: the strict-symmetric flag of "
            "asymmetric quantizers (aimet-onnx sets a config's "
            "strict_symmetric on every quantizer, where it changes no "
            "asymmetric grid, then its strict load finds every asymmetric "
            "grid not strict and refuses even its own files: 16 of 16 "
            "activations on the ResNet with tflite_int8 before). Counts on "
            f"the last net: {aligned}.",
            "AIMET's own file, strict: the control, aimet-onnx's own export "
            "(below) loaded strictly into a sim built the same way. Its "
            "2.0.0 export holds 32-bit bias encodings (export_int32_bias, "
            "default for 2.0.0) for biases the config does not quantize, "
            "which its own strict load refuses ('enabled' mismatches).",
            "sim.export 2.0.0, strict: sim.export's 2.0.0 file (with the "
            "32-bit biases of configs that quantize biases), its tensors "
            "renamed to the ONNX copy's as export_onnx names them, in the "
            "same strict load (a Dense's 32-bit bias is left out: tf2onnx "
            "makes it an Add's constant, which aimet-onnx quantizes as an "
            "activation, and its own export writes none); top-1 = is its "
            "sim's agreement with ours, leniently loaded where refused. The "
            "TFLite configs' 32-bit biases meet aimet-onnx's disabled bias "
            "quantizers ('enabled' mismatches), as its own 2.0.0 files do.",
            "AIMET->ours: aimet-onnx calibrates its own sim (min-max, W8A8, "
            "same config and alignment) and exports each version with its "
            "default export_int32_bias (2.0.0 files hold 32-bit biases); "
            "load_encodings reads its ONNX tensor names through "
            "onnx_tensor_names; 'loaded' counts the Keras sim's quantizers "
            "set from the file (32-bit biases are skipped, as aimet-onnx "
            "does not simulate them). 'left out': entries naming tensors of "
            "the ONNX copy that the Keras sim does not quantize, which "
            "load_encodings leaves out with a warning listing them: "
            "'copies' repeat the grid of a tensor next to them across a "
            "Clip/Relu or value-moving op (aimet-onnx's 2.0.0 export "
            "derives them, _derive_data_movement_op_encodings: a Clip's "
            "output grid on its input, the Conv output the Keras sim fuses "
            "with the Relu6), 'extra' are quantizers only aimet-onnx's sim "
            "has. No quantizer of the Keras sim was left disabled unless "
            "the row's JSON lists a warning under 'disabled'.",
            "tflite_16x8 runs with 8-bit activations: export_onnx's QDQ "
            "model holds 8-bit grids.",
        ]
    )
    for row in raw:
        if row["version"] == "2.0.0" and "lenient" in row["keras_load"]:
            table.notes.append(
                f"{row['model']} {row['config']}: aimet-onnx could not load "
                f"sim.export's 2.0.0 file: {row['keras_load']['lenient']}"
            )
        if row["lenient"]:
            table.notes.append(
                f"{row['model']} {row['config']} {row['version']}: "
                f"aimet-onnx could not load the file: {row['lenient']}"
            )
    return harness.Report(
        suite="aimet_conformance",
        tables=[table],
        settings=dict(
            test_images=len(images),
            calibration_images=len(calibration),
            models=list(names[:1] if quick else names),
            configs=list(CONFIGS),
            versions=list(VERSIONS),
        ),
        quick=quick,
        extra={"rows": raw},
    )
