"""The reference architectures for Fashion-MNIST (28x28x1 in, 10 classes out).

Each builder returns an untrained functional Keras model made only of stock
Keras layers, so every later tool (simulation, folding, AdaRound, export)
meets the layer types real users have: Conv+BN+ReLU with residual adds
(:func:`resnet`), expand / depthwise / project inverted residuals with ReLU6
(:func:`mobilenet_v2`), and patch embedding, multi-head attention, layer
normalization, GELU and softmax (:func:`transformer`). The trained weights
ship as ``.keras`` files; see :func:`aimet_keras.zoo.load_model`.
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["ARCHITECTURES", "mobilenet_v2", "resnet", "transformer"]

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def _conv_bn(x, filters, kernel_size, strides, name, activation="relu"):
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation == "relu":
        x = layers.ReLU(name=f"{name}_relu")(x)
    elif activation == "relu6":
        x = layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
    return x


def _classifier_head(x):
    x = layers.Dense(NUM_CLASSES, name="logits")(x)
    return layers.Softmax(name="probabilities")(x)


def resnet(
    widths: tuple[int, int, int] = (16, 32, 64),
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    stem_strides: int = 1,
) -> keras.Model:
    """A small ResNet: a stem, then one basic residual block per stage.

    Args:
        widths: channels of the three stages; stages two and three halve the
            resolution. Defaults to ``(16, 32, 64)``.
        input_shape: ``(height, width, channels)`` of the images. Defaults
            to Fashion-MNIST's ``(28, 28, 1)``.
        stem_strides: the stem convolution's strides; 2 halves the
            resolution before the first stage (for larger inputs).

    Returns:
        An untrained functional ``keras.Model`` named ``resnet``.

    Example:

    >>> model = resnet()
    >>> model.output_shape
    (None, 10)
    >>> wide = resnet((32, 64, 128), input_shape=(64, 64, 1), stem_strides=2)
    >>> wide.get_layer("stage1_a_conv").output.shape
    (None, 32, 32, 32)
    """
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, widths[0], 3, stem_strides, "stem")
    for stage, width in enumerate(widths):
        strides = 1 if stage == 0 else 2
        name = f"stage{stage + 1}"
        shortcut = x
        y = _conv_bn(x, width, 3, strides, f"{name}_a")
        y = _conv_bn(y, width, 3, 1, f"{name}_b", activation=None)
        if strides != 1 or shortcut.shape[-1] != width:
            shortcut = _conv_bn(
                shortcut, width, 1, strides, f"{name}_proj", activation=None
            )
        x = layers.Add(name=f"{name}_add")([shortcut, y])
        x = layers.ReLU(name=f"{name}_out")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _classifier_head(x), name="resnet")


def mobilenet_v2(expansion: int = 4) -> keras.Model:
    """A small MobileNetV2: inverted residual blocks with ReLU6.

    Each block is a 1x1 expand conv, a 3x3 depthwise conv and a linear 1x1
    projection, all followed by batch normalization; blocks that keep shape
    add their input back.

    Args:
        expansion: the expand ratio of every block. Defaults to 4.

    Returns:
        An untrained functional ``keras.Model`` named ``mobilenet_v2``.

    Example:

    >>> model = mobilenet_v2()
    >>> model.output_shape
    (None, 10)
    """
    # (output channels, stride) per block.
    blocks = ((16, 1), (24, 1), (24, 1), (32, 2), (32, 1), (32, 1))
    inputs = keras.Input(INPUT_SHAPE, name="image")
    # A strided stem, as in MobileNetV2, keeps the 1x1 expansions at 14x14.
    x = _conv_bn(inputs, 16, 3, 2, "stem", activation="relu6")
    for index, (channels, strides) in enumerate(blocks):
        name = f"block{index + 1}"
        y = _conv_bn(
            x, x.shape[-1] * expansion, 1, 1, f"{name}_expand", "relu6"
        )
        y = layers.DepthwiseConv2D(
            3,
            strides=strides,
            padding="same",
            use_bias=False,
            name=f"{name}_dw",
        )(y)
        y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
        y = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu6")(y)
        y = _conv_bn(y, channels, 1, 1, f"{name}_project", activation=None)
        if strides == 1 and x.shape[-1] == channels:
            y = layers.Add(name=f"{name}_add")([x, y])
        x = y
    x = _conv_bn(x, 96, 1, 1, "head", activation="relu6")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _classifier_head(x), name="mobilenet_v2")


def transformer(
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_dim: int = 128,
    patch: int = 4,
) -> keras.Model:
    """A small vision transformer.

    4x4 patches are embedded by a strided conv; a depthwise 3x3 conv over the
    7x7 token grid, added back, gives the tokens their position (a
    conditional position encoding, Chu et al. 2021) with stock layers only.
    Then ``depth`` pre-norm blocks of multi-head self-attention and a GELU
    MLP, a final layer norm, mean pooling and a softmax classifier.

    Args:
        dim: token width. Defaults to 64.
        depth: number of transformer blocks. Defaults to 2.
        heads: attention heads. Defaults to 4.
        mlp_dim: hidden width of each MLP. Defaults to 128.
        patch: patch size in pixels. Defaults to 4.

    Returns:
        An untrained functional ``keras.Model`` named ``transformer``.

    Example:

    >>> model = transformer()
    >>> model.output_shape
    (None, 10)
    """
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(inputs)
    position = layers.DepthwiseConv2D(3, padding="same", name="pos_embed")(x)
    x = layers.Add(name="pos_add")([x, position])
    grid = INPUT_SHAPE[0] // patch
    x = layers.Reshape((grid * grid, dim), name="tokens")(x)
    for index in range(depth):
        name = f"block{index + 1}"
        y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(x)
        y = layers.MultiHeadAttention(
            heads, dim // heads, name=f"{name}_attention"
        )(y, y)
        x = layers.Add(name=f"{name}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(x)
        y = layers.Dense(mlp_dim, name=f"{name}_mlp1")(y)
        y = layers.Activation("gelu", name=f"{name}_gelu")(y)
        y = layers.Dense(dim, name=f"{name}_mlp2")(y)
        x = layers.Add(name=f"{name}_add2")([x, y])
    x = layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, _classifier_head(x), name="transformer")


ARCHITECTURES = {
    "resnet": resnet,
    "mobilenet_v2": mobilenet_v2,
    "transformer": transformer,
}
