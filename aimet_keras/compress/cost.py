"""The cost model: multiply-accumulates and weight memory per layer.

Compression trades accuracy for cost, so it needs the cost first. As in
AIMET's cost calculator, a layer's memory is the number of elements of its
weight kernels (biases and normalization statistics left out) and its MACs
the multiply-accumulates of one forward pass on one example. Layers doing
no weight arithmetic (activations, pooling, adds) cost nothing here.

| layer                      | MACs                                        |
|----------------------------|---------------------------------------------|
| Conv1D/2D/3D               | out positions x O x (I / groups) x kernel   |
| DepthwiseConv1D/2D         | out positions x C x M x kernel              |
| SeparableConv1D/2D         | depthwise part + out positions x C x M x O  |
| Conv1D/2D/3DTranspose      | in positions x I x O x kernel               |
| Dense                      | leading positions x in x out                |
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np

from aimet_keras.graph import prepare as prepare_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    import keras

__all__ = ["LayerCost", "ModelCost", "model_cost"]

_KINDS = op_types.KERNEL_LAYERS


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer's cost.

    Attributes:
        name: the layer's name.
        layer_type: its Keras class.
        macs: multiply-accumulates per example, summed over the layer's
            calls.
        memory: weight elements (kernels only).
    """

    name: str
    layer_type: str
    macs: int
    memory: int

    def total(self, cost_metric: str) -> float:
        """The layer's ``"mac"`` or ``"memory"`` cost."""
        return _by_metric(self.macs, self.memory, cost_metric)


def _by_metric(macs, memory, cost_metric):
    if cost_metric == "mac":
        return macs
    if cost_metric == "memory":
        return memory
    raise ValueError(
        f"cost_metric={cost_metric!r}: the cost model counts 'mac' or "
        "'memory'; latency is measured (compress.LatencyTable)."
    )


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """The cost of every weighted layer of a model.

    Attributes:
        layers: a :class:`LayerCost` per layer, in graph order.
    """

    layers: tuple

    @property
    def macs(self) -> float:
        """The model's MACs per example."""
        return sum(layer.macs for layer in self.layers)

    @property
    def memory(self) -> float:
        """The model's weight elements."""
        return sum(layer.memory for layer in self.layers)

    def total(self, cost_metric: str) -> float:
        """The model's ``"mac"`` or ``"memory"`` cost."""
        return _by_metric(self.macs, self.memory, cost_metric)

    def __getitem__(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(
            f"No weighted layer {name!r}; the model's are "
            f"{[layer.name for layer in self.layers]}."
        )

    def to_markdown(self) -> str:
        """A table: a row per layer (with its share of MACs) and a total."""
        total = max(self.macs, 1)
        lines = [
            "| layer | type | MACs | share | memory |",
            "|-------|------|------|-------|--------|",
        ]
        for layer in self.layers:
            lines.append(
                f"| {layer.name} | {layer.layer_type} | {layer.macs:,} | "
                f"{layer.macs / total:.1%} | {layer.memory:,} |"
            )
        lines.append(f"| total | | {self.macs:,} | 100.0% | {self.memory:,} |")
        return "\n".join(lines)


def _spatial(shape, layer):
    """The spatial sizes of a feature map shape (batch dimension first)."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return shape[2:]
    return shape[1:-1]


def _positions(shape, layer, what):
    sizes = _spatial(shape, layer)
    if any(size is None for size in sizes):
        raise ValueError(
            f"Layer {layer.name!r}: its {what} shape {tuple(shape)} has an "
            "unknown spatial size; build the model with a fixed input size "
            "to count its MACs."
        )
    return int(np.prod(sizes, dtype=np.int64))


def _call_macs(layer, kind, input_shape, output_shape):
    kernel = getattr(layer, "kernel", None)
    if kind == "Dense":
        leading = [d for d in output_shape[1:-1]]
        if any(d is None for d in leading):
            raise ValueError(
                f"Layer {layer.name!r}: output shape {tuple(output_shape)} has "
                "an unknown size; fix it to count MACs."
            )
        return int(np.prod(leading, dtype=np.int64)) * int(
            np.prod(kernel.shape)
        )
    if kind.endswith("Transpose"):
        return _positions(input_shape, layer, "input") * int(
            np.prod(kernel.shape)
        )
    out = _positions(output_shape, layer, "output")
    if kind.startswith("Separable"):
        depthwise = int(np.prod(layer.depthwise_kernel.shape))
        pointwise = int(np.prod(layer.pointwise_kernel.shape))
        return out * (depthwise + pointwise)
    # Conv kernels (k..., I/groups, O) and depthwise ones (k..., C, M): one
    # MAC per kernel element per output position.
    return out * int(np.prod(kernel.shape))


def _memory(layer, kind):
    if kind.startswith("Separable"):
        names = ("depthwise_kernel", "pointwise_kernel")
    else:
        names = ("kernel",)
    return sum(int(np.prod(getattr(layer, n).shape)) for n in names)


def model_cost(model: keras.Model) -> ModelCost:
    """MACs and weight memory of every weighted layer of ``model``.

    A layer called several times (a shared layer) costs its MACs per call
    and its memory once. The caller's model is not changed.

    Args:
        model: a built ``keras.Model`` with fixed input sizes (any shape
            :func:`~aimet_keras.graph.prepare_model` takes).

    Returns:
        A :class:`ModelCost`.

    Raises:
        ValueError: for an unknown spatial size, naming the layer.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> outputs = keras.layers.Dense(2, name="fc")(x)
    >>> cost = model_cost(keras.Model(inputs, outputs))
    >>> cost["conv"].macs, cost["conv"].memory, cost["fc"].macs, cost.macs
    (6912, 108, 8, 6920)
    """
    prepared = prepare_lib.prepare_model(model)
    costs = {}
    for site in prepare_lib.walk(prepared):
        layer = site.operation
        kind = op_types.keras_class_name(layer, _KINDS)
        if kind is None:
            continue
        macs = _call_macs(
            layer, kind, site.inputs[0].shape, site.outputs[0].shape
        )
        if layer.name in costs:
            previous = costs[layer.name]
            costs[layer.name] = dataclasses.replace(
                previous, macs=previous.macs + macs
            )
            continue
        costs[layer.name] = LayerCost(
            layer.name, type(layer).__name__, macs, _memory(layer, kind)
        )
    return ModelCost(tuple(costs.values()))
