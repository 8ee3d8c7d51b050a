"""Layer by layer: where an exported TFLite model departs from its sim.

    python examples/compare_layer_outputs.py [--model resnet]
        [--samples 128] [--out DIR]

``aimet_keras.export.layer_outputs`` is AIMET's layer-output utility for
Keras: it runs the same images through the FP32 model, the sim and the
exported integer TFLite model, keys every layer's output by the Keras layer
name, and ``compare_layer_outputs`` reports per layer how far the target is
from the reference in steps of the layer's output grid, and the first layer
where more than 1% of the values are more than a step apart.

On a shipped Fashion-MNIST model, batch norms folded, calibrated on 256
training images, compared on ``--samples`` test images:

1. a W8A8 sim with the ``tflite_int8`` config, exported with
   ``export_tflite``: the config makes the sim compute what TFLite
   computes, so no layer departs;
2. the same model with the ``htp`` config (Qualcomm HTP: non-strict
   symmetric weights, float biases, a softmax grid on [0, 1]), exported to
   TFLite all the same: the exporter reports what TFLite changes
   (``changes``) and the comparison finds the first layer that departs;
3. the FP32 model against the ``tflite_int8`` sim, on the layers with an
   output grid: where quantization noise first exceeds a grid step on more
   than 1% of a layer's values.

The module has no ONNX runner (there is no ``onnx_layer_outputs``), so the
comparison is with TFLite only. It prints the ``tflite_int8`` table and
each comparison's first departure, saves every layer's output of the sim
and the TFLite model as ``.npy`` files, and writes ``summary.json`` to
``--out``.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from aimet_keras import export_tflite  # noqa: E402
from aimet_keras import ptq  # noqa: E402
from aimet_keras import zoo  # noqa: E402
from aimet_keras.export import layer_outputs  # noqa: E402
from aimet_keras.sim import QuantizationSimModel  # noqa: E402


def report_summary(report, changes=()):
    """The JSON form of a :class:`LayerOutputReport`."""
    return dict(
        first_departure=report.first_departure,
        tolerance=report.tolerance,
        compared_layers=len(report.rows),
        fused_layers=list(report.missing),
        worst_off_fraction=max(row.off_fraction for row in report.rows),
        changes=list(changes),
        rows=[dataclasses.asdict(row) for row in report.rows],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", choices=zoo.MODEL_NAMES)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument(
        "--out", default="artifacts/examples/compare_layer_outputs"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    out = pathlib.Path(args.out)
    calibration = zoo.load_fashion_mnist_slice("calibration")[0]
    calibration = calibration[: args.calibration]
    images = zoo.load_fashion_mnist_slice("test")[0][: args.samples]
    folded = ptq.fold_for_deployment(zoo.load_model(args.model, compile=False))

    comparisons, sims = {}, {}
    for config in ("tflite_int8", "htp"):
        sim = QuantizationSimModel(folded, config_file=config)
        sim.compute_encodings(calibration, verbose=0)
        exported = export_tflite(sim, out / f"{args.model}_{config}.tflite")
        simulated = layer_outputs.sim_layer_outputs(sim, images)
        integer = layer_outputs.tflite_layer_outputs(exported, images)
        report = layer_outputs.compare_layer_outputs(
            simulated, integer, layer_outputs.output_steps(sim)
        )
        comparisons[f"sim ({config}) vs TFLite"] = (report, exported.changes)
        sims[config] = (sim, simulated, integer)

    sim, simulated, integer = sims["tflite_int8"]
    # FP32 against the sim, on the layers that have an output grid (a
    # layer without one is compared exactly, and departs at once).
    steps = layer_outputs.output_steps(sim)
    float_outputs = layer_outputs.fp32_layer_outputs(sim, images)
    comparisons["FP32 vs sim (tflite_int8)"] = (
        layer_outputs.compare_layer_outputs(
            {k: v for k, v in float_outputs.items() if k in steps},
            simulated,
            steps,
        ),
        (),
    )
    saved = {
        "sim": layer_outputs.save_layer_outputs(simulated, out / "layers/sim"),
        "tflite": layer_outputs.save_layer_outputs(
            integer, out / "layers/tflite"
        ),
    }

    summary = dict(
        model=args.model,
        samples=len(images),
        calibration_images=len(calibration),
        comparisons={
            name: report_summary(report, changes)
            for name, (report, changes) in comparisons.items()
        },
        saved_layer_outputs={kind: len(paths) for kind, paths in saved.items()},
        onnx="not supported: aimet_keras.export.layer_outputs runs TFLite only",
        seconds=round(time.perf_counter() - started, 1),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    report, _ = comparisons["sim (tflite_int8) vs TFLite"]
    print(f"\n{args.model}, {len(images)} test images, sim (tflite_int8) vs")
    print("its integer TFLite model, layer by layer:\n")
    print(report.to_markdown())
    print("\nfirst layer more than a step apart on over 1% of its values:")
    for name, result in summary["comparisons"].items():
        first = result["first_departure"] or "none"
        print(
            f"  {name:28s} {first:20s} (worst layer: "
            f"{result['worst_off_fraction']:.2%} of values off)"
        )
    changes = summary["comparisons"]["sim (htp) vs TFLite"]["changes"]
    print(
        f"the htp sim's export reported {len(changes)} changes (logged above)"
    )
    print(
        f"layer outputs saved as .npy in {out / 'layers'}/ "
        f"({summary['seconds']:.0f} s)"
    )


if __name__ == "__main__":
    main()
