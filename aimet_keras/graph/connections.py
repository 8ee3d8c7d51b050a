"""Who feeds whom in a functional Keras model.

Built from the model's call sites (:func:`~aimet_keras.graph.walk`); input
layers are left out and a model input shows as the producer ``None``.
"""

from __future__ import annotations

import dataclasses

import keras

from aimet_keras.graph import prepare as prepare_lib

__all__ = ["Connections", "layer_connections"]


@dataclasses.dataclass(frozen=True)
class Connections:
    """The layer graph of a model.

    Attributes:
        producers: ``{layer name: [producer name or None per input]}``;
            None marks a model input.
        consumers: ``{layer name: [consumer names]}``.
        model_input_layers: names of layers fed by a model input.
        model_output_layers: names of layers whose output is a model output.
    """

    producers: dict
    consumers: dict
    model_input_layers: frozenset
    model_output_layers: frozenset

    def sole_consumer(self, name: str) -> str | None:
        """The only consumer of ``name``'s output, or None."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None


def layer_connections(model: keras.Model) -> Connections:
    """Maps producers and consumers of every operation of ``model``.

    A shared layer (called at several places) has the producers of its
    first call and the consumers of all its calls, so it is never the sole
    consumer or producer of anything; the spec rules that fuse a layer with
    its neighbour leave it alone.

    Args:
        model: a Functional or Sequential ``keras.Model`` (nested models
            appear as one operation: see
            :func:`~aimet_keras.graph.prepare_model`).

    Returns:
        A :class:`Connections`, keyed by layer and operation names.

    Example:

    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(3, name="a")(inputs)
    >>> model = keras.Model(inputs, keras.layers.ReLU(name="b")(hidden))
    >>> layer_connections(model).sole_consumer("a")
    'b'
    """
    sites = prepare_lib.walk(prepare_lib._as_functional(model))
    producer_of = {}
    for site in sites:
        for tensor in site.outputs:
            producer_of[id(tensor)] = site.operation.name
    producers, consumers = {}, {}
    model_input_layers, model_output_layers = set(), set()
    output_ids = {id(t) for t in keras.tree.flatten(model.outputs)}
    for site in sites:
        name = site.operation.name
        consumers.setdefault(name, [])
        sources = [producer_of.get(id(t)) for t in site.inputs]
        producers.setdefault(name, sources)
        for source in sources:
            if source is None:
                model_input_layers.add(name)
            else:
                consumers.setdefault(source, []).append(name)
        if any(id(t) in output_ids for t in site.outputs):
            model_output_layers.add(name)
    return Connections(
        producers,
        consumers,
        frozenset(model_input_layers),
        frozenset(model_output_layers),
    )
