"""AdaRound with quantized activations in the loop, block by block.

Layer-wise AdaRound (:mod:`aimet_keras.ptq.adaround`) fits each layer's
rounding with float activations around it: at 4-bit activations, what the
layer must undo is the activation error, which it never sees. Here the
rounding is fitted inside the simulation (the approach of BRECQ, Li et al.
2021, and QDrop, Wei et al. 2022):

- the model is cut into *blocks* at tensors every later layer depends on
  (a residual block, a run of convolutions), each holding a few layers with
  weights;
- each block runs as the sim runs it, activation quantizers on, with the
  kernels' AdaRound variables (the same rectified sigmoid, regulariser and
  annealing as AdaRound) and, optionally, its activation ranges trained
  (straight-through and LSQ gradients), to match the FP32 model's output of
  the block;
- the block's input is the sim's (quantized, earlier blocks already done),
  with each element replaced by the FP32 model's value at probability
  ``drop_probability`` (QDrop's random drop of activation quantization,
  applied at the block input), which keeps the fit from overfitting the
  calibration set's quantization noise.

Afterwards the sim's kernels are the hard-rounded weights and their grids are
frozen; ``sim.export`` writes them. Do not call ``compute_encodings`` again:
it would replace the fitted activation ranges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import typing

import keras
import numpy as np
import tensorflow as tf

from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.ptq import adaround as adaround_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    from aimet_keras.graph.prepare import CallSite
    from aimet_keras.ptq.adaround import AdaroundParameters
    from aimet_keras.sim.quantsim import QuantizationSimModel

__all__ = ["BlockResult", "find_blocks", "reconstruct_blocks"]

_LOG = logging.getLogger("aimet_keras")


@dataclasses.dataclass
class BlockResult:
    """What reconstruction did to one block.

    Attributes:
        layers: names of the layers whose kernels were rounded.
        error_before: the block's reconstruction error (sum over channels,
            mean over positions) with nearest rounding and the initial
            activation ranges, on the calibration data, quantized input.
        error_after: the same after reconstruction.
        seconds: time taken.
    """

    layers: list
    error_before: float
    error_after: float
    seconds: float


def _roundable(wrapper, calls):
    quantizer = getattr(wrapper, "param_quantizers", {}).get("kernel")
    return (
        quantizer is not None
        and quantizer.enabled
        and quantizer.data_type == "int"
        and quantizer.is_initialized
        and op_types.keras_class_name(wrapper.layer, adaround_lib._ROUNDABLE)
        and calls[wrapper.name] == 1
    )


def _cuts(sites, model):
    """Indices ``i`` after which one tensor carries all later computation."""
    last_use = {}
    for index, site in enumerate(sites):
        for tensor in site.inputs:
            last_use[id(tensor)] = index
    for tensor in keras.tree.flatten(model.outputs):
        last_use[id(tensor)] = len(sites)
    live = {id(t) for t in model.inputs if last_use.get(id(t), -1) >= 0}
    cuts = []
    for index, site in enumerate(sites):
        live |= {id(t) for t in site.outputs if id(t) in last_use}
        live = {t for t in live if last_use[t] > index}
        if len(live) == 1 and index < len(sites) - 1:
            cuts.append(index)
    return cuts


def find_blocks(
    sim: QuantizationSimModel, min_layers: int = 3
) -> list[list[CallSite]]:
    """Cuts a sim's graph into blocks for reconstruction.

    A cut falls after a layer whose output is the only tensor later layers
    need; consecutive pieces join until a block holds ``min_layers`` layers
    with roundable kernels (Conv, Depthwise, ConvTranspose, Dense), and a
    piece without one joins the block before it.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel`.
        min_layers: roundable layers per block, at least. Defaults to 3
            (a ResNet basic block with its shortcut, a MobileNetV2 inverted
            residual).

    Returns:
        A list of blocks, each a list of
        :class:`~aimet_keras.graph.prepare.CallSite` of ``sim.model``.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> sim = QuantizationSimModel(model)
    >>> sim._compute_param_encodings()
    >>> blocks = find_blocks(sim)
    >>> sum(len(b) for b in blocks) == len(prepare_lib.walk(sim.model))
    True
    """
    if min_layers < 1:
        raise ValueError(f"min_layers={min_layers}; use 1 or more.")
    sites = prepare_lib.walk(sim.model)
    calls = adaround_lib.call_counts(sites)
    pieces, start = [], 0
    for cut in [*_cuts(sites, sim.model), len(sites) - 1]:
        pieces.append(sites[start : cut + 1])
        start = cut + 1

    def count(piece):
        return sum(_roundable(s.operation, calls) for s in piece)

    blocks = []
    for piece in pieces:
        if blocks and (count(blocks[-1]) < min_layers or not count(piece)):
            blocks[-1] = blocks[-1] + piece
        else:
            blocks.append(piece)
    return blocks


def _boundary(sites, produced_before):
    """The tensors a block reads from earlier blocks (first-use order)."""
    inside = {id(t) for s in sites for t in s.outputs}
    seen, inputs = set(), []
    for site in sites:
        for tensor in site.inputs:
            if id(tensor) not in inside and id(tensor) not in seen:
                seen.add(id(tensor))
                inputs.append(tensor)
    return [t for t in inputs if id(t) in produced_before]


class _Block:
    """One block's reconstruction problem."""

    def __init__(self, sites, inputs, outputs, fp32, calls, params, options):
        self.sites, self.inputs, self.outputs = sites, inputs, outputs
        # The FP32 graph's sites and tensors that match the block's.
        self.fp32_sites, self.fp32_inputs, self.fp32_outputs = fp32
        self.params, self.options = params, options
        self.wrappers = [
            s.operation for s in sites if _roundable(s.operation, calls)
        ]
        self.roundings = {}
        for wrapper in self.wrappers:
            quantizer = wrapper.param_quantizers["kernel"]
            self.roundings[wrapper.name] = adaround_lib.SoftRounding(
                wrapper.layer.kernel.numpy(),
                quantizer.encoding,
                quantizer.axis,
                wrapper.name,
            )
        self.ranges = []
        if options["learn_activation_ranges"]:
            self.ranges = [
                q
                for s in sites
                if hasattr(s.operation, "output_quantizers")
                for q in _quantizers_to_learn(s.operation)
            ]
        self.alpha_optimizer = keras.optimizers.Adam(params.learning_rate)
        self.range_optimizer = keras.optimizers.Adam(
            options["activation_learning_rate"]
        )

    def run(self, inputs, kernels):
        """The block's outputs for input values, with kernels replacing."""
        computed = {id(t): x for t, x in zip(self.inputs, inputs)}
        with contextlib.ExitStack() as stack:
            for wrapper in self.wrappers:
                stack.enter_context(
                    wrapper.replaced_weights({"kernel": kernels[wrapper.name]})
                )
            prepare_lib.run_sites(self.sites, computed, _inference_call)
        return [computed[id(t)] for t in self.outputs]

    def run_fp32(self, *inputs):
        """The FP32 model's outputs of the block for its FP32 inputs."""
        computed = {id(t): x for t, x in zip(self.fp32_inputs, inputs)}
        prepare_lib.run_sites(self.fp32_sites, computed, _inference_call)
        return [computed[id(t)] for t in self.fp32_outputs]

    def run_hard(self, *inputs):
        """The block's outputs with its final (hard-rounded) kernels."""
        return self.run(list(inputs), self.hard)

    def error(self, inputs, targets, kernels):
        outputs = self.run(inputs, kernels)
        return tf.add_n(
            [
                adaround_lib.reconstruction_error(y, t)
                for y, t in zip(outputs, targets)
            ]
        )

    def step(self, quantized, fp32, targets, beta, reg_weight):
        p = self.options["drop_probability"]
        inputs = [
            tf.where(tf.random.uniform(tf.shape(q)) < p, f, q)
            for q, f in zip(quantized, fp32)
        ]
        alphas = [r.alpha for r in self.roundings.values()]
        ranges = [
            v for q in self.ranges for v in (q.encoding_min, q.encoding_max)
        ]
        with tf.GradientTape() as tape:
            # The ranges are not trainable variables outside range learning.
            tape.watch([v.value for v in ranges])
            kernels = {n: r.soft() for n, r in self.roundings.items()}
            rec = self.error(inputs, targets, kernels)
            reg = tf.add_n(
                [tf.constant(0.0)]
                + [r.regularizer(beta) for r in self.roundings.values()]
            )
            loss = rec + reg_weight * reg
        gradients = tape.gradient(loss, alphas + ranges)
        if alphas:
            self.alpha_optimizer.apply(gradients[: len(alphas)], alphas)
        if ranges:
            self.range_optimizer.apply(gradients[len(alphas) :], ranges)
        return rec

    def fit(self, quantized, fp32, targets, rng):
        """Runs the annealed optimisation; sets ``self.hard``."""
        for q in self.ranges:
            q.range_learning = True
        try:
            step = tf.function(self.step)
            n = len(quantized[0])
            size = min(self.params.batch_size, n)
            for beta, reg_weight in adaround_lib.annealing_schedule(
                self.params
            ):
                index = np.sort(rng.choice(n, size=size, replace=False))
                step(
                    [tf.constant(x[index]) for x in quantized],
                    [tf.constant(x[index]) for x in fp32],
                    [tf.constant(y[index]) for y in targets],
                    tf.constant(beta, tf.float32),
                    tf.constant(reg_weight, tf.float32),
                )
        finally:
            for q in self.ranges:
                q.range_learning = False
        self.hard = {n: r.hard() for n, r in self.roundings.items()}


def _quantizers_to_learn(wrapper):
    """A wrapper's per-tensor int activation quantizers with a grid.

    Grids fixed by the config (``encoding_constraints``) stay fixed.
    """
    return [
        q
        for q in [*wrapper.input_quantizers, *wrapper.output_quantizers]
        if q.enabled
        and q.data_type == "int"
        and q.axis is None
        and q.is_initialized
        and q.fixed_range is None
    ]


def _batched(function, arrays, batch_size=256):
    """``function`` over ``arrays`` in batches, outputs concatenated."""
    results = []
    for start in range(0, len(arrays[0]), batch_size):
        outputs = function(
            *[tf.constant(a[start : start + batch_size]) for a in arrays]
        )
        results.append([np.asarray(o) for o in outputs])
    return [np.concatenate(parts) for parts in zip(*results)]


def reconstruct_blocks(
    sim: QuantizationSimModel,
    params: AdaroundParameters,
    drop_probability: float = 0.5,
    learn_activation_ranges: bool = True,
    activation_learning_rate: float = 1e-3,
    min_layers: int = 3,
    verbose: bool = True,
) -> list[BlockResult]:
    """Fits a calibrated sim's weight rounding with its activations quantized.

    Args:
        sim: a :class:`~aimet_keras.sim.QuantizationSimModel` after
            ``compute_encodings`` (and, at low activation bit widths,
            :func:`~aimet_keras.ptq.optimize_activation_ranges`). Changed in
            place: its kernels become the rounded weights, their grids are
            frozen, and (with ``learn_activation_ranges``) its activation
            ranges are the fitted ones.
        params: :class:`~aimet_keras.ptq.AdaroundParameters`: the data,
            iterations per block, regularisation, annealing, batch size,
            learning rate of the rounding and the seed.
        drop_probability: chance that an element of a block's input is the
            FP32 value instead of the quantized one during fitting (QDrop);
            0 feeds the quantized input only. Defaults to 0.5.
        learn_activation_ranges: also fit the block's activation ranges.
            Defaults to True.
        activation_learning_rate: Adam's learning rate for the ranges.
            Defaults to 1e-3.
        min_layers: see :func:`find_blocks`. Defaults to 3.
        verbose: print one progress line per block. Defaults to True.

    Returns:
        A list of :class:`BlockResult`, one per block.

    Example:

    >>> from aimet_keras.ptq import AdaroundParameters
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    >>> x = keras.layers.Flatten()(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(3)(x))
    >>> data = np.random.default_rng(0).normal(size=(64, 8, 8, 1))
    >>> sim = QuantizationSimModel(model, default_param_bw=4,
    ...                            default_output_bw=4)
    >>> sim.compute_encodings(data.astype("float32"))
    >>> params = AdaroundParameters(data.astype("float32"), num_batches=2,
    ...                             default_num_iterations=20)
    >>> results = reconstruct_blocks(sim, params, verbose=False)
    >>> all(r.error_after <= r.error_before * 1.5 for r in results)
    True
    """
    if not 0.0 <= drop_probability <= 1.0:
        raise ValueError(
            f"drop_probability={drop_probability}; use a value in [0, 1]."
        )
    if any(
        not q.is_initialized
        for w in sim.quant_wrappers()
        for q in w.output_quantizers
        if q.enabled and q.data_type == "int"
    ):
        raise ValueError(
            "The sim is not calibrated: call sim.compute_encodings(data) "
            "before reconstruct_blocks."
        )
    samples = params.samples()
    reference = prepare_lib.prepare_model(sim._prepared)
    fp32_sites = prepare_lib.walk(reference)
    sim_sites = prepare_lib.walk(sim.model)
    # The sim's graph is the prepared model's, operation for operation.
    fp32_tensor = {id(a): b for a, b in zip(sim.model.inputs, reference.inputs)}
    fp32_site = {}
    for mine, theirs in zip(sim_sites, fp32_sites):
        fp32_site[id(mine.node)] = theirs
        for a, b in zip(mine.outputs, theirs.outputs):
            fp32_tensor[id(a)] = b
    calls = adaround_lib.call_counts(sim_sites)
    options = dict(
        drop_probability=float(drop_probability),
        learn_activation_ranges=learn_activation_ranges,
        activation_learning_rate=activation_learning_rate,
    )
    tf.random.set_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    # Quantized and FP32 values of every tensor a later block may read.
    quantized_values = {id(t): samples for t in sim.model.inputs}
    fp32_values = dict(quantized_values)
    blocks = find_blocks(sim, min_layers)
    results = []
    for number, sites in enumerate(blocks, 1):
        started = time.perf_counter()
        inputs = _boundary(sites, quantized_values)
        later = {id(t) for b in blocks[number:] for s in b for t in s.inputs}
        later |= {id(t) for t in keras.tree.flatten(sim.model.outputs)}
        outputs = [t for s in sites for t in s.outputs if id(t) in later]
        fp32 = (
            [fp32_site[id(s.node)] for s in sites],
            [fp32_tensor[id(t)] for t in inputs],
            [fp32_tensor[id(t)] for t in outputs],
        )
        block = _Block(sites, inputs, outputs, fp32, calls, params, options)
        fp32_in = [fp32_values[id(t)] for t in inputs]
        quantized_in = [quantized_values[id(t)] for t in inputs]
        targets = _batched(tf.function(block.run_fp32), fp32_in)
        nearest = {n: r.nearest() for n, r in block.roundings.items()}
        before = _mean_error(block, nearest, quantized_in, targets)
        block.fit(quantized_in, fp32_in, targets, rng)
        for wrapper in block.wrappers:
            wrapper.layer.kernel.assign(block.hard[wrapper.name])
            sim._frozen.add(id(wrapper.param_quantizers["kernel"]))
        after = _mean_error(block, block.hard, quantized_in, targets)
        new_values = _batched(tf.function(block.run_hard), quantized_in)
        for t, q_value, f_value in zip(outputs, new_values, targets):
            quantized_values[id(t)] = q_value
            fp32_values[id(t)] = f_value
        result = BlockResult(
            [w.name for w in block.wrappers],
            before,
            after,
            time.perf_counter() - started,
        )
        results.append(result)
        message = (
            f"Block [{number}/{len(blocks)}] {', '.join(result.layers) or '-'}"
            f": output error {before:.3g} (nearest) -> {after:.3g} "
            f"({result.seconds:.1f} s)"
        )
        _LOG.info(message)
        if verbose:
            print(message)
    sim._retrace()
    return results


def _inference_call(site, args, kwargs):
    if isinstance(site.operation, keras.layers.Layer):
        kwargs = {**kwargs, "training": False}
    return site.operation(*args, **kwargs)


def _mean_error(block, kernels, inputs, targets, batch_size=256):
    """The block's reconstruction error over all samples."""
    arity = len(inputs)
    evaluate = tf.function(
        lambda *xs: block.error(list(xs[:arity]), list(xs[arity:]), kernels)
    )
    total, count = 0.0, 0
    for start in range(0, len(inputs[0]), batch_size):
        xs = [tf.constant(x[start : start + batch_size]) for x in inputs]
        ys = [tf.constant(y[start : start + batch_size]) for y in targets]
        size = len(xs[0])
        total += float(evaluate(*xs, *ys)) * size
        count += size
    return total / count
