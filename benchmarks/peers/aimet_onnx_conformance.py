"""aimet-onnx reads our encodings files, and writes files for us to read.

Runs inside the aimet-onnx virtual environment (see ``setup_aimet_onnx.sh``),
not the project's; ``benchmarks.suites.aimet_conformance`` writes the job
file and reads the result. One job is one model (the FP32 ONNX copy
``export_onnx`` wrote) and one quantsim config:

1. Each listed encodings file through aimet-onnx's own validator
   (``quantsim._flatten_encodings``, which ``load_encodings_to_sim`` runs).
2. A ``QuantizationSimModel`` on the ONNX copy with the config, W8A8, made
   to quantize what the Keras sim quantizes (see ``_align``), then each
   ``.fp32.encodings`` file loaded with ``load_encodings_to_sim(...,
   strict=True)``; on a refusal, the mismatches a lenient load lists (and
   what differs in each). The sim's outputs on the test images go to
   ``<out>/<tag>.npy``.
3. Its own encodings: ``compute_encodings`` on the calibration images, then
   ``sim.export`` in each version with AIMET's default ``export_int32_bias``
   (32-bit bias encodings in 2.0.0 only) to ``<out>/aimet_<v>.encodings``
   and its outputs to ``<out>/aimet.npy``. The control: each of these files
   loaded with ``strict=True`` into a new sim built as in 2.

Usage::

    python aimet_onnx_conformance.py JOB.json

with ``{"model", "config", "data", "out", "validate": [files], "load":
{tag: file}, "export_versions": [...]}``; the result is ``<out>/result.json``.
"""

import copy
import dataclasses
import json
import logging
import os
import sys

import aimet_onnx
import numpy as np
import onnx
from aimet_onnx import quantsim as quantsim_lib
from aimet_onnx.quantsim import QuantizationSimModel
from aimet_onnx.quantsim import load_encodings_to_sim

THREADS = 2
EVAL_BATCH = 500


def _validate(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        quantsim_lib._flatten_encodings(data)  # pylint: disable=protected-access
    except Exception as error:  # noqa: BLE001 - reported, not handled
        return f"{type(error).__name__}: {error}"
    return None


def _aimet_config(config, out):
    """Our config plus a MatMul+Add supergroup (see ``_align``)."""
    with open(config, encoding="utf-8") as f:
        data = json.load(f)
    groups = data.setdefault("supergroups", [])
    if {"op_list": ["MatMul", "Add"]} not in groups:
        groups.append({"op_list": ["MatMul", "Add"]})
    path = os.path.join(out, "aimet_config.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return path, data


def _align(sim, model, config):
    """Turns off the quantizers where aimet-onnx's reading of the config
    differs from the Keras sim's, and says which.

    * A depthwise Conv's output before its Relu/Clip: aimet-onnx 2.42 keeps
      depthwise convolutions out of supergroups
      (``_check_if_conv3d_or_depthwise_conv``); the Keras sim fuses them, as
      TFLite and QNN run them.
    * Constant inputs other than weights (a Clip's bounds, the bias a Keras
      Dense becomes in tf2onnx's MatMul + Add): aimet-onnx quantizes them as
      activations; the Keras layers have no such tensor.

    Cleared, not turned off: the strict-symmetric flag of asymmetric
    quantizers. aimet-onnx sets a config's ``strict_symmetric`` on every
    quantizer; it changes no asymmetric grid (``create_encoding_from_min_max``
    drops a level only for symmetric ones), but its strict load compares it
    with the file's grid, which is never strict for an asymmetric one, and
    so refuses its own files of such a config.
    """
    constants = {init.name for init in model.graph.initializer}
    readers = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    groups = {tuple(g["op_list"]) for g in config.get("supergroups", [])}
    off = {"depthwise_output": [], "constant_input": []}
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type != "Conv" or group == 1:
            continue
        after = readers.get(node.output[0], [])
        if len(after) == 1 and ("Conv", after[0].op_type) in groups:
            off["depthwise_output"].append(node.output[0])
    for name in sim.activation_names:
        if name in constants and name not in sim.param_names:
            off["constant_input"].append(name)
    for names in off.values():
        for name in names:
            quantizer = sim.qc_quantize_op_dict.get(name)
            if quantizer is not None:
                quantizer.enabled = False
    off["strict_flag_on_asymmetric"] = []
    for name, quantizer in sim.qc_quantize_op_dict.items():
        if (
            quantizer is not None
            and quantizer.enabled
            and quantizer.use_strict_symmetric
            and not quantizer.use_symmetric_encodings
        ):
            quantizer.use_strict_symmetric = False
            off["strict_flag_on_asymmetric"].append(name)
    return off


def _mismatches(found):
    """``[{quantizer, what differs: (sim, file)}]`` of a lenient load."""
    return [
        {
            key: value
            for key, value in dataclasses.asdict(m).items()
            if value is not None
        }
        for m in found
    ]


def _strict_load(sim, model, config_path, config, path):
    """``(sim with the file, entry)``: strict load, lenient on a refusal."""
    entry = {"strict": None, "mismatches": []}
    try:
        load_encodings_to_sim(sim, path, strict=True)
    except Exception as error:  # noqa: BLE001 - AssertionError/RuntimeError
        entry["strict"] = f"{type(error).__name__}: {str(error)[:300]}"
        sim, _ = _new_sim(model, config_path, config)
        try:
            found = load_encodings_to_sim(sim, path, strict=False)
        except Exception as error:  # noqa: BLE001 - reported
            entry["lenient"] = f"{type(error).__name__}: {error}"[:300]
            return None, entry
        entry["mismatches"] = _mismatches(found)
    return sim, entry


def _outputs(sim, name, images):
    return np.concatenate(
        [
            sim.session.run(None, {name: images[i : i + EVAL_BATCH]})[0]
            for i in range(0, len(images), EVAL_BATCH)
        ]
    )


def _new_sim(model, config_path, config):
    sim = QuantizationSimModel(
        copy.deepcopy(model),
        param_type="int8",
        activation_type="int8",
        quant_scheme="min_max",
        config_file=config_path,
        providers=["CPUExecutionProvider"],
        session_options_kwargs={
            "intra_op_num_threads": THREADS,
            "inter_op_num_threads": 1,
        },
    )
    return sim, _align(sim, model, config)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    logging.disable(logging.WARNING)
    out = job["out"]
    data = np.load(job["data"])
    images = data["images"].astype(np.float32)
    calibration = data["calibration"].astype(np.float32)
    model = onnx.load(job["model"])
    name = model.graph.input[0].name
    config_path, config = _aimet_config(job["config"], out)
    result = {
        "aimet_onnx": aimet_onnx.__version__,
        "validate": {path: _validate(path) for path in job["validate"]},
        "load": {},
    }
    for tag, path in job["load"].items():
        sim, off = _new_sim(model, config_path, config)
        result["aligned"] = {k: len(v) for k, v in off.items()}
        sim, result["load"][tag] = _strict_load(
            sim, model, config_path, config, path
        )
        if sim is not None:
            np.save(
                os.path.join(out, f"{tag}.npy"), _outputs(sim, name, images)
            )
    sim, _ = _new_sim(model, config_path, config)
    sim.compute_encodings(
        [
            {name: calibration[i : i + 64]}
            for i in range(0, len(calibration), 64)
        ]
    )
    np.save(os.path.join(out, "aimet.npy"), _outputs(sim, name, images))
    result["own"] = {}
    for version in job["export_versions"]:
        sim.export(
            out,
            f"aimet_{version}",
            export_model=False,
            encoding_version=version,
        )
        path = os.path.join(out, f"aimet_{version}.encodings")
        fresh, _ = _new_sim(model, config_path, config)
        result["own"][version] = _strict_load(
            fresh, model, config_path, config, path
        )[1]
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
