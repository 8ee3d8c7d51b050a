"""Channel pruning: drop a layer's input channels, then reconstruct it.

He et al. 2017 ("Channel Pruning for Accelerating Very Deep Neural
Networks"), as AIMET does it, for a Conv2D or Dense layer ``L``:

1. **Sample.** Run the data through the model; at random output positions
   (10 per image) take ``L``'s input patches ``X`` (from the model being
   pruned, so earlier prunings are seen) and ``L``'s output ``Y`` without
   bias (from the original model: the target).
2. **Select** the input channels to keep. Channel ``c`` contributes
   ``Z_c = X_c W_c`` to the output; the channels removed are chosen one at a
   time, each the one whose removal adds least to ``||Y - sum_kept Z_c||``
   (ThiNet's greedy rule, with the target from the original model).
3. **Winnow.** The matching output channels of the layers producing ``L``'s
   input go too: through channel-wise layers (batch norms, activations,
   pooling, padding, dropout, depthwise convolutions) back to the Conv2D or
   Dense layers that make them. A residual ``Add`` (or other element-wise
   merge) ties its inputs and its readers: the whole residual stream is one
   channel space, its producers all lose the same channels and every
   Conv2D / Dense layer reading it (directly, or after more Adds) is a
   consumer, chosen for and reconstructed together. A ``Concatenate``
   splits the channels among its inputs. Where the channels also reach a
   layer that cannot shrink (a Flatten, a model output, a custom layer),
   nothing is pruned.
4. **Reconstruct** each consumer's kernel for the kept channels by least
   squares, ``min ||Y - X_kept W'||``, so it makes up for what it lost.

Layers are pruned in graph order, each reconstructed against the original
model's output from the partly pruned model's input.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from aimet_keras.compress import reconstruction
from aimet_keras.graph import connections as connections_lib
from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import op_types

__all__ = ["ChannelPruner", "channel_pruning", "prunable_layers"]

# Stock layers that map channel c to channel c and hold no weights.
_PASS_THROUGH = frozenset(
    {
        "ReLU",
        "LeakyReLU",
        "ELU",
        "Activation",
        "Dropout",
        "SpatialDropout2D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "Identity",
        "MaxPooling2D",
        "AveragePooling2D",
        "ZeroPadding2D",
        "Cropping2D",
        "UpSampling2D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling2D",
    }
)
# Merges whose inputs share one channel axis: pruned together or not at all.
_TIES = frozenset(
    {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
)
_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


class NotPrunableError(ValueError):
    """A layer whose input channels cannot be pruned, and why."""


@dataclasses.dataclass(frozen=True)
class _Touched:
    """A layer whose channels ``[offset, offset + size)`` of the pruned
    channel space are its output (``kind="out"``) or pass through it
    (``"channelwise"``: batch norms and depthwise convolutions; ``"free"``:
    weightless layers, adds and concatenations)."""

    name: str
    kind: str
    offset: int
    size: int


@dataclasses.dataclass(frozen=True)
class _Group:
    """One channel space and what pruning it changes.

    Attributes:
        layer: the first consumer in graph order: the group's name.
        channels: the consumers' input channels.
        consumers: the Conv2D / Dense layers reading the space, each
            reconstructed after pruning; several when an Add ties them
            (a residual stream).
        touched: the producers and the layers on the way.
    """

    layer: str
    channels: int
    consumers: tuple
    touched: tuple

    def segments(self):
        """The distinct ``(offset, size)`` segments of the input."""
        return sorted({(t.offset, t.size) for t in self.touched})


def _stock_class(layer):
    """The layer's class name if it is a stock Keras layer, else None."""
    if not type(layer).__module__.startswith("keras."):
        return None
    return type(layer).__name__


def _is_prunable_kind(layer):
    kind = _stock_class(layer)
    if kind == "Conv2D":
        return layer.groups == 1 and layer.data_format == "channels_last"
    return kind == "Dense"


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _on_last_axis(layer, axis):
    """Whether ``axis`` (an int or a one-int list) is the layer's last axis.

    keras.applications writes the channel axis as 3 (``bn_axis = 3``) where
    other code writes -1; both name the channels of a 4-D tensor.
    """
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    rank = len(layer.output.shape)
    return axis in (-1, rank - 1)


def _role(layer):
    """How ``layer`` relates its input channels to its output channels."""
    kind = _stock_class(layer)
    if _is_prunable_kind(layer):
        return "out"
    if kind == "DepthwiseConv2D":
        if layer.depth_multiplier == 1 and _channels_last(layer):
            return "channelwise"
        return None
    if kind == "BatchNormalization":
        return "channelwise" if _on_last_axis(layer, layer.axis) else None
    if kind in _PASS_THROUGH:
        activation = getattr(layer, "activation", None)
        name = getattr(activation, "__name__", "")
        if kind == "Activation" and name in _CHANNEL_MIXING_ACTIVATIONS:
            return None
        return "free" if _channels_last(layer) else None
    if kind in _TIES:
        return "tie"
    if kind == "Concatenate":
        return "concat" if _on_last_axis(layer, layer.axis) else None
    return None


class _GraphIndex:
    """Producers, consumers and call counts of a prepared model."""

    def __init__(self, model):
        self.model = model
        self.connections = connections_lib.layer_connections(model)
        self.order = [site.operation.name for site in prepare_lib.walk(model)]
        self.calls = {}
        for name in self.order:
            self.calls[name] = self.calls.get(name, 0) + 1

    def group(self, name):
        """The :class:`_Group` of the channel space ``name`` reads.

        The space is followed through the graph: back from each tensor to
        the Conv2D / Dense layers making it (through channel-wise layers,
        across each input of an Add, split across a Concatenate's inputs),
        and forward to every layer reading it (through channel-wise layers
        and Adds): the Conv2D / Dense layers reached are its consumers.

        Raises:
            NotPrunableError: saying which layer blocks it and why.
        """
        layer = self.model.get_layer(name)
        if not _is_prunable_kind(layer):
            raise NotPrunableError(
                f"Layer {name!r} is a {type(layer).__name__}; channel pruning "
                "prunes the input channels of Conv2D (groups=1, "
                "channels_last) and Dense layers."
            )
        self._check_single_call(name, name)
        channels = int(layer.kernel.shape[-2])
        walk = _SpaceWalk(self, name, channels)
        walk.claim(self.connections.producers[name][0], 0, channels)
        consumers = tuple(sorted(walk.consumers, key=self.order.index))
        touched = tuple(walk.touched[n] for n in sorted(walk.touched))
        return _Group(consumers[0], channels, consumers, touched)

    def _check_single_call(self, name, pruned):
        if self.calls.get(name, 0) != 1:
            raise NotPrunableError(
                f"Layer {pruned!r}: {name!r} is called "
                f"{self.calls.get(name, 0)} times; the channels of a shared "
                "layer cannot be pruned."
            )


class _SpaceWalk:
    """Follows one channel space through the graph (see ``group``)."""

    def __init__(self, index, pruned, channels):
        self.index = index
        self.pruned = pruned
        self.channels = channels
        self.seen = {}  # producer name -> (offset, size) of its output
        self.touched = {}
        self.consumers = set()

    def refuse(self, why):
        raise NotPrunableError(f"Layer {self.pruned!r}: {why}")

    def claim(self, name, offset, size):
        """Claims the output of ``name`` as ``[offset, offset + size)``."""
        if name is None:
            self.refuse(
                "its input channels come from a model input, which cannot "
                "lose channels."
            )
        if name in self.seen:
            if self.seen[name] != (offset, size):
                self.refuse(f"the output of {name!r} is used twice.")
            return
        self.seen[name] = (offset, size)
        index = self.index
        index._check_single_call(name, self.pruned)
        layer = index.model.get_layer(name)
        role = _role(layer)
        if role is None:
            self.refuse(
                f"its input channels pass through {name!r} "
                f"({type(layer).__name__}), which channel pruning cannot "
                "shrink."
            )
        if int(layer.output.shape[-1]) != size:
            self.refuse(f"{name!r} broadcasts along channels.")
        sources = index.connections.producers[name]
        self.touched[name] = _Touched(
            name,
            role if role in ("out", "channelwise") else "free",
            offset,
            size,
        )
        if role in ("channelwise", "free"):
            self.claim(sources[0], offset, size)
        elif role == "tie":
            for source in sources:
                self.claim(source, offset, size)
        elif role == "concat":
            start = offset
            for source in sources:
                # A model input (None) is refused by claim.
                layer = index.model.get_layer(source) if source else None
                width = int(layer.output.shape[-1]) if layer else 0
                self.claim(source, start, width)
                start += width
        self._follow_consumers(name, offset, size)

    def _follow_consumers(self, name, offset, size):
        index = self.index
        for consumer in dict.fromkeys(index.connections.consumers[name]):
            layer = index.model.get_layer(consumer)
            role = _role(layer)
            if role == "out":
                index._check_single_call(consumer, self.pruned)
                if (offset, size) != (0, self.channels) or (
                    int(layer.kernel.shape[-2]) != size
                ):
                    self.refuse(
                        f"{consumer!r} reads part of a concatenation's "
                        "channels."
                    )
                self.consumers.add(consumer)
            elif role in ("channelwise", "free", "tie"):
                self.claim(consumer, offset, size)
            elif consumer not in self.seen:
                self.refuse(
                    f"the channels also feed {consumer!r} "
                    f"({type(layer).__name__}), which channel pruning "
                    "cannot shrink, so they stay."
                )


def prunable_layers(model: keras.Model) -> dict[str, int]:
    """The channel spaces channel pruning can shrink, by first reader.

    A residual stream read by several layers is listed once, under the
    first of them; pruning it prunes every reader's input (see
    ``ChannelPruner.group(name).consumers``).

    Args:
        model: a built ``keras.Model``.

    Returns:
        ``{layer name: input channels}``, in graph order.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(8, 3, name="a")(inputs)
    >>> x = keras.layers.ReLU()(x)
    >>> x = keras.layers.Conv2D(4, 3, name="b")(x)
    >>> prunable_layers(keras.Model(inputs, x))
    {'b': 8}
    """
    index = _GraphIndex(prepare_lib.prepare_model(model))
    found = {}
    for name in index.order:
        try:
            group = index.group(name)
        except NotPrunableError:
            continue
        found[group.layer] = group.channels
    return found


class ChannelPruner:
    """Prunes input channels of a model's layers, with reconstruction.

    Holds the original model's samples per layer, so that trying many
    channel counts for one layer (as :func:`compress_model` does) samples
    once.

    Args:
        model: a built ``keras.Model``; not changed.
        data: model inputs for the samples: an array, or a ``tf.data``
            set of batches (or of ``(inputs, labels)``).
        num_reconstruction_samples: output positions sampled per layer,
            10 per image. Defaults to 5000.
        reconstruct: least-squares reconstruction of the pruned layers.
            Defaults to True; False only drops the channels (for
            comparison).
        seed: the positions' random seed. Defaults to 0.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(8, 3, name="a")(inputs)
    >>> x = keras.layers.Conv2D(4, 3, name="b")(x)
    >>> model = keras.Model(inputs, x)
    >>> pruner = ChannelPruner(model, np.random.rand(32, 8, 8, 3))
    >>> pruner.prune({"b": 5}).get_layer("a").filters
    5
    """

    def __init__(
        self,
        model: keras.Model,
        data: object,
        num_reconstruction_samples: int = 5000,
        reconstruct: bool = True,
        seed: int = 0,
    ) -> None:
        self.model = prepare_lib.prepare_model(model)
        self._index = _GraphIndex(self.model)
        self._order = [
            site.operation.name for site in prepare_lib.walk(self.model)
        ]
        self.sampler = reconstruction.LayerSampler(
            data, num_reconstruction_samples, seed
        )
        self._reconstruct = reconstruct
        self._groups = {}
        self._original_samples = {}
        self._original_terms = {}

    def group(self, name: str) -> _Group:
        """The channel space ``name`` reads, and what pruning it touches
        (cached; every consumer of a space gives the same group)."""
        if name not in self._groups:
            names = self._order
            if name not in names:
                raise ValueError(
                    f"The model has no layer {name!r}."
                    + op_types.did_you_mean(name, names)
                )
            group = self._index.group(name)
            for consumer in group.consumers:
                self._groups[consumer] = group
        return self._groups[name]

    def original_samples(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, Y)`` from the original model: input patches and the
        bias-free output at the same positions (cached)."""
        if name not in self._original_samples:
            inputs = self.sampler.inputs(self.model, name)
            kernel = reconstruction.kernel_matrix(self.model.get_layer(name))
            targets = np.einsum("nkc,kco->no", inputs, kernel)
            self._original_samples[name] = (inputs, targets)
        return self._original_samples[name]

    def _error_terms(self, consumer, inputs):
        """The greedy rule's terms for one consumer: ``<Z_c, Z_d>`` and
        ``2 <residual, Z_c> + <Z_c, Z_c>``, over its output energy.

        Those of the original model's samples are kept: the sensitivity
        table asks for them at every candidate channel count."""
        if inputs is None:
            if consumer not in self._original_terms:
                self._original_terms[consumer] = self._error_terms(
                    consumer, self.original_samples(consumer)[0]
                )
            return self._original_terms[consumer]
        targets = self.original_samples(consumer)[1]
        kernel = reconstruction.kernel_matrix(self.model.get_layer(consumer))
        positions, channels = kernel.shape[:2]
        # Channel c contributes Z_c = X_c W_c; the terms come from the
        # inputs' second moments, so that no (channels, samples, outputs)
        # array is made.
        design = inputs.reshape(len(inputs), -1)
        weights = kernel.reshape(positions * channels, -1)
        residual = targets - design @ weights
        moments = design.T @ design
        gram = (
            (moments * (weights @ weights.T))
            .reshape(positions, channels, positions, channels)
            .sum(axis=(0, 2))
        )
        overlap = ((design.T @ residual) * weights).sum(1)
        overlap = overlap.reshape(positions, channels).sum(0)
        energy = max(float(np.sum(targets**2)), 1e-30)
        return gram / energy, (2 * overlap + np.diag(gram)) / energy

    def select_channels(
        self, name: str, keep: int, inputs: np.ndarray | None = None
    ) -> np.ndarray:
        """The ``keep`` input channels of ``name``'s group to keep, sorted.

        Greedy: the channel removed next is the one whose contribution adds
        least to the consumers' output error (each relative to its output's
        energy); every segment of a concatenated input keeps at least one
        channel.

        Args:
            name: a consumer of the group.
            keep: channels to keep.
            inputs: ``{consumer: (samples, k, channels)}`` patches from the
                model being pruned. Defaults to the original model's.
        """
        group = self.group(name)
        _check_keep(name, keep, group.channels)
        gram = np.zeros((group.channels, group.channels))
        linear = np.zeros(group.channels)
        for consumer in group.consumers:
            terms = self._error_terms(consumer, (inputs or {}).get(consumer))
            gram += terms[0]
            linear += terms[1]
        segment_of = np.zeros(group.channels, int)
        left = {}
        for number, (offset, size) in enumerate(group.segments()):
            segment_of[offset : offset + size] = number
            left[number] = size
        removed = np.zeros(group.channels, bool)
        coupling = np.zeros(group.channels)
        for _ in range(group.channels - keep):
            cost = linear + 2 * coupling
            blocked = removed | np.array(
                [left[segment_of[c]] == 1 for c in range(group.channels)]
            )
            cost[blocked] = np.inf
            channel = int(np.argmin(cost))
            removed[channel] = True
            left[segment_of[channel]] -= 1
            coupling += gram[channel]
        return np.flatnonzero(~removed)

    def reconstructed_kernel(
        self, name: str, kept: np.ndarray, inputs: np.ndarray | None = None
    ) -> np.ndarray:
        """Least-squares kernel of consumer ``name`` for the ``kept``
        channels, from ``inputs`` (default: the original model's)."""
        original, targets = self.original_samples(name)
        inputs = original if inputs is None else inputs
        layer = self.model.get_layer(name)
        kernel = reconstruction.kernel_matrix(layer)[:, kept, :]
        shape = tuple(layer.kernel.shape[:-2]) + (len(kept),)
        shape += (kernel.shape[-1],)
        if self._reconstruct:
            return reconstruction.least_squares_kernel(
                inputs[:, :, kept], targets, shape, layer.kernel.dtype
            )
        return kernel.reshape(shape).astype(layer.kernel.dtype)

    def _plan_entry(self, name, keep, inputs=None):
        kept = self.select_channels(name, keep, inputs)
        kernels = {
            consumer: self.reconstructed_kernel(
                consumer, kept, (inputs or {}).get(consumer)
            )
            for consumer in self.group(name).consumers
        }
        return kept, kernels

    def prune_one(self, name: str, keep: int) -> keras.Model:
        """``name``'s group pruned to ``keep`` channels, from the original
        model's samples (what one entry of the sensitivity table needs)."""
        group = self.group(name)
        return self._build({group.layer: self._plan_entry(name, keep)})

    def prune(self, keep: dict[str, int]) -> keras.Model:
        """A new model with each named group pruned to its channel count.

        Args:
            keep: ``{layer name: input channels kept}``; a layer stands for
                its group (every consumer of its channel space).

        Returns:
            The pruned functional model.
        """
        by_group = {}
        for name, count in keep.items():
            group = self.group(name)
            _check_keep(name, count, group.channels)
            if group.layer in by_group:
                raise ValueError(
                    f"Layers {by_group[group.layer][0]!r} and {name!r} read "
                    "the same channels (tied by an Add); give one of them."
                )
            by_group[group.layer] = (name, count)
        plan = {}
        current = self.model
        for leader in sorted(by_group, key=self._order.index):
            inputs = None
            if plan:
                inputs = {
                    consumer: self.sampler.inputs(current, consumer)
                    for consumer in self.group(leader).consumers
                }
            plan[leader] = self._plan_entry(leader, by_group[leader][1], inputs)
            current = self._build(plan)
        return current

    def _build(self, plan):
        """The model with ``plan`` ``{group: (kept, {consumer: kernel})}``."""
        in_keep, out_keep, kernels = {}, {}, {}
        for leader, (kept, consumer_kernels) in plan.items():
            for consumer, kernel in consumer_kernels.items():
                in_keep[consumer] = kept
                kernels[consumer] = kernel
            for touched in self.group(leader).touched:
                local = (
                    kept[
                        (kept >= touched.offset)
                        & (kept < touched.offset + touched.size)
                    ]
                    - touched.offset
                )
                if touched.kind != "free":
                    out_keep[touched.name] = local
        changed = set(in_keep) | set(out_keep)

        def replace(operation):
            if operation.name not in changed:
                return operation
            return _shrunk(
                operation,
                in_keep.get(operation.name),
                out_keep.get(operation.name),
                kernels.get(operation.name),
            )

        return prepare_lib.rebuild(self.model, replace)


def _check_keep(name, keep, channels):
    if not isinstance(keep, (int, np.integer)) or not 1 <= keep <= channels:
        raise ValueError(
            f"Layer {name!r} keeps {keep!r} of its {channels} input "
            f"channels; use an int in [1, {channels}]."
        )


def _shrunk(layer, in_keep, out_keep, kernel):
    """A callable computing ``layer`` on fewer channels."""
    kind = _stock_class(layer)
    weights = layer.get_weights()
    config = layer.get_config()
    if kind in ("Conv2D", "Dense"):
        if kernel is not None:
            weights[0] = kernel
        if out_keep is not None:
            weights = [weights[0][..., out_keep]] + [
                w[out_keep] for w in weights[1:]
            ]
            config["filters" if kind == "Conv2D" else "units"] = len(out_keep)
    elif kind == "DepthwiseConv2D":
        weights = [weights[0][:, :, out_keep, :]] + [
            w[out_keep] for w in weights[1:]
        ]
    else:  # BatchNormalization
        weights = [w[out_keep] for w in weights]
    new = type(layer).from_config(config)

    def call(*args, **kwargs):
        if not new.built:
            new.build(keras.tree.map_structure(lambda x: x.shape, args[0]))
            new.set_weights(weights)
        return new(*args, **kwargs)

    return call


def channel_pruning(
    model: keras.Model,
    keep: dict[str, int],
    data: object,
    num_reconstruction_samples: int = 5000,
    reconstruct: bool = True,
) -> keras.Model:
    """A new model with the named layers' input channels pruned.

    Args:
        model: a built ``keras.Model``; not changed.
        keep: ``{layer name: input channels kept}``; see
            :func:`prunable_layers` for the layers that can be pruned.
        data: model inputs to sample activations from (an array, or a
            ``tf.data`` set of batches).
        num_reconstruction_samples: sampled output positions per layer.
            Defaults to 5000.
        reconstruct: reconstruct each pruned layer's kernel by least
            squares. Defaults to True.

    Returns:
        The pruned functional model.

    Raises:
        ValueError: for an unknown layer (naming close names), a layer that
            cannot be pruned (naming what blocks it) or a channel count out
            of range.

    Example:

    >>> model = zoo.load_model("resnet", compile=False)
    >>> images, _ = zoo.load_fashion_mnist_slice("calibration")
    >>> smaller = channel_pruning(model, {"stage1_b_conv": 8}, images[:100])
    >>> smaller.get_layer("stage1_a_conv").filters
    8
    """
    pruner = ChannelPruner(
        model, data, num_reconstruction_samples, reconstruct=reconstruct
    )
    return pruner.prune(keep)
