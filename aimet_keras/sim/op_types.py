"""AIMET's op type names (ONNX's) for Keras layers, as a table.

AIMET's quantsim config names ops by ONNX type (``"Conv"``, ``"Gemm"``,
``"Relu"``); :func:`onnx_op_type` maps a Keras layer to that name. One row per
Keras class; the few layers whose type depends on their settings
(``ReLU(max_value=6)`` is ``Clip``, ``Activation`` goes by its function) are
resolved in :func:`onnx_op_type`.
"""

from __future__ import annotations

import difflib
import typing

if typing.TYPE_CHECKING:
    from collections.abc import Collection

    import keras

__all__ = [
    "KERAS_TO_ONNX",
    "KERNEL_LAYERS",
    "ONNX_OP_TYPES",
    "did_you_mean",
    "keras_class_name",
    "onnx_op_type",
]

# The Keras layers computing a linear map of their input with a kernel
# (what batch norms fold into and what compression counts and factorises).
KERNEL_LAYERS = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "Dense",
)


def keras_class_name(
    layer: keras.layers.Layer, names: Collection[str]
) -> str | None:
    """The first of ``layer``'s Keras classes (its own or a base) in ``names``.

    A subclass of a Keras layer (``class MyConv(Conv2D)``) answers as its
    Keras base; None when no Keras class of the layer is in ``names``.

    Example:

    >>> class MyConv(keras.layers.Conv2D):
    ...     pass
    >>> keras_class_name(MyConv(4, 3), {"Conv2D", "Dense"})
    'Conv2D'
    """
    for cls in type(layer).__mro__:
        if cls.__name__ in names and cls.__module__.startswith("keras."):
            return cls.__name__
    return None


def did_you_mean(name: str, choices: Collection[str]) -> str:
    """`` Did you mean 'X'?`` for the closest of ``choices``, or ``""``.

    Example:

    >>> did_you_mean("Comv", ONNX_OP_TYPES)
    " Did you mean 'Conv'?"
    """
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


KERAS_TO_ONNX = {
    "Conv1D": "Conv",
    "Conv2D": "Conv",
    "Conv3D": "Conv",
    "DepthwiseConv1D": "Conv",
    "DepthwiseConv2D": "Conv",
    "SeparableConv1D": "Conv",
    "SeparableConv2D": "Conv",
    "Conv1DTranspose": "ConvTranspose",
    "Conv2DTranspose": "ConvTranspose",
    "Conv3DTranspose": "ConvTranspose",
    "Dense": "Gemm",
    "EinsumDense": "MatMul",
    "MultiHeadAttention": "MultiHeadAttention",
    "Embedding": "Gather",
    "BatchNormalization": "BatchNormalization",
    "LayerNormalization": "LayerNormalization",
    "GroupNormalization": "GroupNormalization",
    "UnitNormalization": "LpNormalization",
    "ReLU": "Relu",
    "PReLU": "PRelu",
    "LeakyReLU": "LeakyRelu",
    "ELU": "Elu",
    "Softmax": "Softmax",
    "Add": "Add",
    "Subtract": "Sub",
    "Multiply": "Mul",
    "Average": "Mean",
    "Maximum": "Max",
    "Minimum": "Min",
    "Concatenate": "Concat",
    "MaxPooling1D": "MaxPool",
    "MaxPooling2D": "MaxPool",
    "MaxPooling3D": "MaxPool",
    "AveragePooling1D": "AveragePool",
    "AveragePooling2D": "AveragePool",
    "AveragePooling3D": "AveragePool",
    "GlobalAveragePooling1D": "GlobalAveragePool",
    "GlobalAveragePooling2D": "GlobalAveragePool",
    "GlobalAveragePooling3D": "GlobalAveragePool",
    "GlobalMaxPooling1D": "GlobalMaxPool",
    "GlobalMaxPooling2D": "GlobalMaxPool",
    "GlobalMaxPooling3D": "GlobalMaxPool",
    "Reshape": "Reshape",
    "Flatten": "Flatten",
    "Permute": "Transpose",
    "RepeatVector": "Tile",
    "UpSampling1D": "Upsample",
    "UpSampling2D": "Upsample",
    "UpSampling3D": "Upsample",
    "ZeroPadding1D": "Pad",
    "ZeroPadding2D": "Pad",
    "ZeroPadding3D": "Pad",
    "Cropping1D": "Slice",
    "Cropping2D": "Slice",
    "Cropping3D": "Slice",
    "Dropout": "Dropout",
    "SpatialDropout1D": "Dropout",
    "SpatialDropout2D": "Dropout",
    "SpatialDropout3D": "Dropout",
    "GaussianNoise": "Dropout",
    "GaussianDropout": "Dropout",
    "AlphaDropout": "Dropout",
    "Rescaling": "Mul",
    "Normalization": "Normalization",
    "Identity": "Identity",
    "LSTM": "LSTM",
    "GRU": "GRU",
    "SimpleRNN": "RNN",
    # keras.ops operations in functional models (class names; the shared
    # ones, Add, Concatenate, Reshape, Softmax..., are listed above).
    "Divide": "Div",
    "TrueDivide": "Div",
    "Matmul": "MatMul",
    "Einsum": "Einsum",
    "Transpose": "Transpose",
    "Mean": "ReduceMean",
    "Sum": "ReduceSum",
    "Max": "ReduceMax",
    "Min": "ReduceMin",
    "Sqrt": "Sqrt",
    "Rsqrt": "Sqrt",
    "Exp": "Exp",
    "Log": "Log",
    "Power": "Pow",
    "Square": "Mul",
    "Abs": "Abs",
    "Negative": "Neg",
    "ExpandDims": "Unsqueeze",
    "Squeeze": "Squeeze",
    "Take": "Gather",
    "Tanh": "Tanh",
    "Clip": "Clip",
    "Cast": "Cast",
    "Erf": "Erf",
    "Relu": "Relu",
    "Relu6": "Clip",
    "Sigmoid": "Sigmoid",
    "LogSoftmax": "LogSoftmax",
    "Gelu": "Gelu",
    "Silu": "Swish",
    "HardSigmoid": "HardSigmoid",
    "HardSilu": "HardSwish",
    "Elu": "Elu",
    "LeakyRelu": "LeakyRelu",
    "Softplus": "Softplus",
    # Indexing and broadcasting, as traced models and inlined layers
    # (aimet_keras.graph.inline) record them: x[:, 0] is a GetItem.
    "GetItem": "Slice",
    "Slice": "Slice",
    "BroadcastTo": "Expand",
    "Tile": "Tile",
    "Where": "Where",
    "Split": "Split",
}

# Keras's activation function names -> ONNX op types.
_ACTIVATIONS = {
    "relu": "Relu",
    "relu6": "Clip",
    "sigmoid": "Sigmoid",
    "hard_sigmoid": "HardSigmoid",
    "tanh": "Tanh",
    "softmax": "Softmax",
    "gelu": "Gelu",
    # keras-hub's BERT activation: keras.activations.gelu(approximate=True).
    "gelu_approximate": "Gelu",
    "swish": "Swish",
    "silu": "Swish",
    "hard_swish": "HardSwish",
    "hard_silu": "HardSwish",
    "elu": "Elu",
    "selu": "Selu",
    "leaky_relu": "LeakyRelu",
    "softplus": "Softplus",
    "softsign": "Softsign",
    "exponential": "Exp",
    "linear": "Identity",
}

# Every op type a config may name: the mapped ones plus those AIMET's
# shipped configs use for ops Keras has no layer for.
ONNX_OP_TYPES = (
    frozenset(KERAS_TO_ONNX.values())
    | frozenset(_ACTIVATIONS.values())
    | frozenset(
        {
            "BatchPermutation",
            "BatchToSpace",
            "ChannelShuffle",
            "Clip",
            "CropAndResize",
            "DepthToSpace",
            "Div",
            "Expand",
            "Gather",
            "GatherND",
            "InstanceNormalization",
            "MaxRoiPool",
            "Neg",
            "NonMaxSuppression",
            "NonZero",
            "Pow",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceSum",
            "Resize",
            "ScatterElements",
            "Shape",
            "Split",
            "Sqrt",
            "Squeeze",
            "SpaceToBatch",
            "SpaceToDepth",
            "TopK",
            "Unsqueeze",
            "Where",
            "Cast",
            "Erf",
            "Abs",
        }
    )
)


def onnx_op_type(layer: keras.layers.Layer) -> str:
    """AIMET's (ONNX) op type name of a Keras layer, or ``"Unknown"``.

    Args:
        layer: a ``keras.layers.Layer``.

    Returns:
        The op type string, e.g. ``"Conv"`` for ``Conv2D``, ``"Clip"`` for
        ``ReLU(max_value=6)`` and ``"Gelu"`` for ``Activation("gelu")``.

    Example:

    >>> import keras
    >>> onnx_op_type(keras.layers.ReLU(max_value=6.0))
    'Clip'
    >>> onnx_op_type(keras.layers.Activation("gelu"))
    'Gelu'
    """
    name = keras_class_name(layer, KERAS_TO_ONNX) or type(layer).__name__
    if name == "Activation":
        function = getattr(layer.activation, "__name__", str(layer.activation))
        return _ACTIVATIONS.get(function, "Unknown")
    if name == "ReLU" and getattr(layer, "max_value", None) is not None:
        return "Clip"
    return KERAS_TO_ONNX.get(name, "Unknown")
