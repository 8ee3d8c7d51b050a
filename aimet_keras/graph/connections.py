"""Who feeds whom in a functional Keras model, from its public API.

Built from each layer's ``input``/``output`` KerasTensors, so it needs a
Functional (or Sequential) model whose layers are each called once; a layer
called at several places raises with the fix. Nested models appear as one
layer here.
"""

import dataclasses

import keras

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

    def sole_consumer(self, name):
        """The only consumer of ``name``'s output, or None."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None


def _flat(tensors):
    return keras.tree.flatten(tensors)


def layer_connections(model):
    """Maps producers and consumers of every layer of ``model``.

    Args:
        model: a built Functional or Sequential ``keras.Model``.

    Returns:
        A :class:`Connections`.

    Raises:
        ValueError: for a layer used at more than one place, naming it.

    Example:

    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(3, name="a")(inputs)
    >>> model = keras.Model(inputs, keras.layers.ReLU(name="b")(hidden))
    >>> layer_connections(model).sole_consumer("a")
    'b'
    """
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    producer_of = {}
    for layer in model.layers:
        if len(getattr(layer, "_inbound_nodes", [])) > 1:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is called at "
                f"{len(layer._inbound_nodes)} places; give each call its own "
                "layer (clone it) so each place can have its own quantizers."
            )
        for tensor in _flat(layer.output):
            producer_of[id(tensor)] = (
                None
                if isinstance(layer, keras.layers.InputLayer)
                else layer.name
            )
    producers, consumers = {}, {layer.name: [] for layer in layers}
    model_input_layers = set()
    for layer in layers:
        sources = [producer_of.get(id(t)) for t in _flat(layer.input)]
        producers[layer.name] = sources
        for source in sources:
            if source is None:
                model_input_layers.add(layer.name)
            else:
                consumers[source].append(layer.name)
    output_ids = {id(t) for t in _flat(model.outputs)}
    model_output_layers = {
        layer.name
        for layer in layers
        if any(id(t) in output_ids for t in _flat(layer.output))
    }
    return Connections(
        producers,
        consumers,
        frozenset(model_input_layers),
        frozenset(model_output_layers),
    )
