"""One call for the exact rewrites integer runtimes need."""

from aimet_keras.graph import depthwise as depthwise_lib
from aimet_keras.graph import prepare as prepare_lib


def split_for_deployment(model):
    """``model`` rewritten into the layers integer runtimes compute.

    Exact rewrites, each computing what the model computes: activations
    fused into a layer that TFLite does not fuse (a Dense with softmax)
    become layers of their own (:func:`split_activations`), separable
    convolutions a depthwise and a pointwise one
    (:func:`split_separable_convolutions`; Xception, NASNet), and
    depthwise grouped convolutions ``DepthwiseConv2D``
    (:func:`depthwise_from_grouped`; ConvNeXt). Simulate the result so
    that the sim rounds where the runtime does.

    Args:
        model: any model :func:`~aimet_keras.graph.prepare_model` takes.

    Returns:
        A new functional ``keras.Model``; the caller's model is unchanged.

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> outputs = keras.layers.Dense(3, activation="softmax")(inputs)
    >>> split = split_for_deployment(keras.Model(inputs, outputs))
    >>> [type(layer).__name__ for layer in split.layers[1:]]
    ['Dense', 'Activation']
    """
    model = prepare_lib.split_activations(model)
    model = prepare_lib.split_separable_convolutions(model)
    return depthwise_lib.depthwise_from_grouped(model)
