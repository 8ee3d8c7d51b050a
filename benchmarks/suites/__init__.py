"""The benchmark suites, one module each.

A suite module ``benchmarks.suites.<name>`` defines ``run(quick=False)``,
which returns a :class:`benchmarks.harness.Report`. Modules are imported only
when their suite runs, so ``python -m benchmarks list`` starts no TensorFlow.
"""

import importlib

__all__ = ["SUITES", "get_suite"]

# Suite name (and module name) -> one-line description.
SUITES = {
    "analysis": (
        "QuantAnalyzer on the reference models at W8A8 and W4A8 and on a "
        "ResNet with an injected outlier channel: scores, the most harmful "
        "layers, time; the HTML report's screenshot"
    ),
    "analysis_amp": (
        "automatic mixed precision (A8W8/A8W4 by weight memory) on the "
        "ResNet and MobileNetV2 nets beside all-W8 and all-W4, with Pareto "
        "plots and AMP's time; int8 against fp8 (E4M3, E5M2), fp16 and bf16 "
        "at W/A on the reference nets and on a ResNet with an outlier "
        "channel; full test set"
    ),
    "aimet_onnx": (
        "AIMET itself (aimet-onnx, own venv): W4A8 and W4A4 per-channel "
        "nearest vs AdaRound on the ONNX-exported reference models"
    ),
    "aimet_conformance": (
        "AIMET's own readers (aimet-onnx, own venv) on our encodings files "
        "(validator, strict load, outputs) and ours on AIMET's, per "
        "encodings version and quantsim config, ResNet and MobileNetV2"
    ),
    "compression": (
        "the ResNet at half its MACs: spatial SVD then channel pruning "
        "(greedy ratios), then fine-tuned; full test set accuracy, TFLite "
        "and Keras latency vs FP32, per-layer ratios"
    ),
    "compression_data_free": (
        "spatial SVD of the ResNet to half its MACs with no refit data, "
        "with inputs distilled from its batch norms, and with real images: "
        "full test set top-1"
    ),
    "compression_real": (
        "keras.applications ResNet50, MobileNetV2 and VGG16 at 224x224 "
        "(weights=None): channel pruning, spatial SVD + pruning and weight "
        "SVD to half the MACs, pruning by measured time to half the TFLite "
        "time; MACs, TFLite batch 1 / 32 and model.predict time ratios"
    ),
    "compression_trained": (
        "a wider ResNet trained on Fashion-MNIST at 64x64 (49 MMACs): "
        "spatial SVD + channel pruning to half the MACs, fine-tuned 2 "
        "epochs; full test set top-1 before and after, TFLite batch 1 / 32 "
        "and model.predict time ratios"
    ),
    "export": (
        "integer TFLite (and QDQ ONNX) export of the W8A8 sim: agreement "
        "with the sim (full test set, fer on faces), TFLite latency and size "
        "vs FP32 and vs the TFLite converter's own PTQ"
    ),
    "fuzz": (
        "every loader (encodings 0.6.1/1.0.0/2.0.0, load into a sim, "
        "AdaRound's param file, quantsim configs, the CLI's data) fuzzed "
        "10 minutes, structured and byte-level (atheris): inputs tried, "
        "distinct errors, failures; failing inputs go to tests/fuzz/corpus"
    ),
    "grid": (
        "quantize_dequantize vs a plain clip-and-round op (XLA and not), and "
        "observer update/compute_encoding cost vs the FP32 forward passes"
    ),
    "memory": (
        "peak resident memory of FP32 inference, calibration (two data "
        "sizes), sim inference and AdaRound (caches in memory and spilled "
        "to disk) for ResNet50 at 224x224 and MiniLM; each step a fresh "
        "process"
    ),
    "minilm": (
        "all-MiniLM-L6-v2 (keras-hub BERT) at W8A8: per-group ablation of "
        "the embedding cosine by scheme, and recipes up to the residual "
        "stream at 16 bits (mixed precision) and W8A16"
    ),
    "minilm_tflite": (
        "all-MiniLM-L6-v2 (keras-hub BERT) as a fully integer int8 TFLite "
        "(tflite_int8 sim, 32 tokens) per calibration scheme: embedding "
        "cosine of TFLite to the sim and to FP32, nearest neighbours"
    ),
    "onnx_cpus": (
        "QDQ ONNX on other CPUs' integer kernels: uint8 vs int8 kernels' "
        "top-1 agreement with the sim natively (full test set) and on "
        "AVX2 / SSE4.2 CPUs emulated by qemu-user; onnxruntime latency"
    ),
    "ptq": (
        "post-training techniques: DFQ (BN fold, CLE, bias correction) at "
        "W8A8 per-tensor, AdaRound vs nearest at W4A8, W4A4 with range "
        "search and block reconstruction (full test set)"
    ),
    "qat": (
        "quantization-aware training with fit: W8A8 of the reference models "
        "and W4A4 ResNet (range learning, oscillation dampening, BN trained "
        "folded) against FP32; accuracy and step-time ratio vs tfmot"
    ),
    "qat_tfmot": (
        "the qat suite's side-by-side with tfmot alone: W8A8 QAT accuracy "
        "and step-time ratio of ours and tfmot's on ResNet and MobileNetV2"
    ),
    "quantsim": (
        "W8A8 QuantizationSimModel accuracy of the reference models with "
        "each shipped quantsim config (full test set); simulated inference "
        "and compute_encodings time against FP32; fer agreement on faces"
    ),
    "real_fidelity": (
        "stock keras.applications trained briefly on Fashion-MNIST (32x32): "
        "W8A8 top-1 against FP32 and the TFLite converter's own int8, "
        "TFLite and ONNX top-1 agreement with the sim"
    ),
    "real_fidelity_integer_kernels": (
        "real_fidelity's EfficientNetB0, EfficientNetV2B0 and MobileNetV2 "
        "rows and EfficientNetB0's 2-epoch QAT row again, after the sim "
        "took the integer kernels' arithmetic"
    ),
    "real_models": (
        "stock keras.applications at 224x224 end to end (sim, TFLite, "
        "ONNX): agreement with FP32 and of the exports with the sim, "
        "calibration time, peak memory and file sizes per model"
    ),
    "real_models_speed": (
        "ResNet50 at 224x224, batch 32: compute_encodings time and peak "
        "memory vs FP32 inference, the sim's file size, AdaRound W4A8's "
        "time per layer"
    ),
    "vs_aimet": (
        "side by side from stored results: our ptq AdaRound and W4A4 "
        "against aimet-onnx's, with issue 4's targets"
    ),
    "weights": (
        "weight-only per-channel quantization of the reference models at 8, "
        "6, 4 and 3 bits with each calibration scheme (full test set)"
    ),
    "zoo": (
        "reference models: Fashion-MNIST accuracy (full test set and shipped "
        "slice), parameters, file sizes; the fer model on LFW faces"
    ),
    "zoo_quantized": (
        "the model zoo's quantized variants (W8A8, W4A8 AdaRound, W4A4 block "
        "reconstruction) made from their recipes: accuracy, times, sizes; "
        "--update-results replaces the shipped files"
    ),
}


def get_suite(name):
    """Imports and returns the module of suite ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in SUITES:
        raise ValueError(
            f"Unknown suite {name!r}; use one of {sorted(SUITES)} "
            "(`python -m benchmarks list`)."
        )
    return importlib.import_module(f"benchmarks.suites.{name}")
