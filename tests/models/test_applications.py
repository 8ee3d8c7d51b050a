"""keras.applications architectures end to end.

The default run builds each architecture family with keras.applications'
own builder (the same blocks: bottlenecks, pre-activation, dense blocks,
MBConv and fused MBConv with squeeze-excite, ConvNeXt blocks with
LayerScale, MobileNetV3's hard-swish blocks) at a small depth, width and
32x32 input, so that every layer kind and connection pattern the stock
models have is run in minutes. The stock models themselves, full depth
(NASNetMobile, MobileNetV2 and Xception only there: their cells take
minutes even small), run in the ``slow`` tests and in
``benchmarks/suites/real_models.py``.
"""

import keras
import pytest

from tests.models import end_to_end
from tests.models import photo_crops

SIZE = 32
CLASSES = 10


def _common(**kwargs):
    return dict(
        include_top=True,
        weights=None,
        input_shape=(SIZE, SIZE, 3),
        classes=CLASSES,
        **kwargs,
    )


def _resnet(version):
    # keras.applications' private builders: the stock models are these
    # functions with more blocks and channels.
    from keras.src.applications import resnet

    stack = {
        1: resnet.stack_residual_blocks_v1,
        2: resnet.stack_residual_blocks_v2,
    }[version]

    def stack_fn(x):
        x = stack(x, 8, 2, stride1=1, name="conv2")
        return stack(x, 16, 2, name="conv3")

    return resnet.ResNet(
        stack_fn,
        preact=version == 2,
        use_bias=True,
        name=f"resnet_v{version}_mini",
        **_common(),
    )


def _densenet():
    from keras.src.applications import densenet

    return densenet.DenseNet([1, 1, 1, 1], name="densenet_mini", **_common())


def _efficientnet():
    from keras.src.applications import efficientnet

    return efficientnet.EfficientNet(
        0.25, 0.1, SIZE, name="efficientnet_mini", **_common()
    )


def _efficientnet_v2():
    from keras.src.applications import efficientnet_v2

    return efficientnet_v2.EfficientNetV2(
        # The builder looks its block settings up by name.
        0.25,
        0.1,
        SIZE,
        name="efficientnetv2-b0",
        **_common(),
    )


def _convnext():
    from keras.src.applications import convnext

    return convnext.ConvNeXt(
        depths=[1, 1, 1, 1],
        projection_dims=[8, 16, 24, 32],
        default_size=SIZE,
        name="convnext_mini",
        **_common(),
    )


def _mobilenet_v3():
    from keras.src.applications import mobilenet_v3

    block = mobilenet_v3._inverted_res_block

    def stack_fn(x, kernel, activation, se_ratio):
        # MobileNetV3's three kinds of block: ReLU with squeeze-excite and
        # stride 2, ReLU expanding, hard-swish with squeeze-excite and a
        # residual.
        x = block(x, 1, 8, 3, 2, se_ratio, mobilenet_v3.relu, 0)
        x = block(x, 4, 16, 3, 2, None, mobilenet_v3.relu, 1)
        return block(x, 3, 16, kernel, 1, se_ratio, activation, 2)

    return mobilenet_v3.MobileNetV3(
        stack_fn,
        64,
        model_type="small",
        name="mobilenet_v3_mini",
        **_common(),
    )


MINIATURES = {
    "ResNet50": lambda: _resnet(1),
    "ResNet50V2": lambda: _resnet(2),
    "DenseNet121": _densenet,
    "EfficientNetB0": _efficientnet,
    "EfficientNetV2B0": _efficientnet_v2,
    "ConvNeXtTiny": _convnext,
    "MobileNetV3": _mobilenet_v3,
}

# AdaRound is the same per-layer optimisation on every architecture: the
# default run rounds ResNet's bottlenecks (and mtcnn's PReLU nets), the
# slow run every stock model.
ADAROUND = ("ResNet50",)

# Fraction of outputs within one step of the sim, per architecture, where
# below 0.9; random weights amplify one-step differences downstream.
# DenseNet: TFLite requires a CONCATENATION's inputs on its output grid,
# so a tensor both concatenated and used elsewhere is requantized there.
AGREEMENT = {"DenseNet121": 0.7}

# Architectures exported to ONNX only (none: ConvNeXt's LayerNormalization
# runs as integer ops under the tflite configs, see aimet_keras.sim.layer_norm).
NO_TFLITE = ()


@pytest.fixture(scope="module")
def photos():
    return photo_crops(32, SIZE)


@pytest.mark.parametrize("architecture", sorted(MINIATURES))
def test_architecture_runs_end_to_end(architecture, photos, tmp_path):
    keras.utils.set_random_seed(0)
    model = MINIATURES[architecture]()
    result = end_to_end(
        model,
        photos,
        tmp_path,
        adaround=architecture in ADAROUND,
        tflite=architecture not in NO_TFLITE,
    )
    least = AGREEMENT.get(architecture, 0.9)
    if architecture not in NO_TFLITE:
        assert result.tflite_agreement >= least
    assert result.onnx_agreement >= least


STOCK = {
    "MobileNetV2": lambda: keras.applications.MobileNetV2(
        alpha=0.35, **_common()
    ),
    "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(
        **_common()
    ),
    "MobileNetV3Large": lambda: keras.applications.MobileNetV3Large(
        **_common()
    ),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(**_common()),
    "EfficientNetV2B0": lambda: keras.applications.EfficientNetV2B0(
        **_common()
    ),
    "ResNet50": lambda: keras.applications.ResNet50(**_common()),
    "ResNet50V2": lambda: keras.applications.ResNet50V2(**_common()),
    "DenseNet121": lambda: keras.applications.DenseNet121(**_common()),
    "ConvNeXtTiny": lambda: keras.applications.ConvNeXtTiny(**_common()),
    "NASNetMobile": lambda: keras.applications.NASNetMobile(**_common()),
}


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(STOCK))
def test_stock_architecture_runs_end_to_end(architecture, photos, tmp_path):
    keras.utils.set_random_seed(0)
    result = end_to_end(
        STOCK[architecture](),
        photos,
        tmp_path,
        tflite=architecture not in NO_TFLITE,
    )
    assert result.onnx_agreement >= 0.5


@pytest.mark.slow
def test_stock_xception_runs_end_to_end(tmp_path):
    # Xception takes 71x71 and more.
    model = keras.applications.Xception(
        include_top=True, weights=None, input_shape=(71, 71, 3), classes=10
    )
    result = end_to_end(model, photo_crops(16, 71), tmp_path)
    assert result.tflite_agreement >= 0.5
