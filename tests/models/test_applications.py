"""keras.applications architectures end to end.

The default run builds each architecture family with keras.applications'
own builder (the same blocks: bottlenecks, pre-activation, dense blocks,
MBConv and fused MBConv with squeeze-excite, ConvNeXt blocks with
LayerScale, NASNet cells) at a small depth, width and 32x32 input, so that
every layer kind and connection pattern the stock models have is run in
minutes. The stock models themselves, full depth, run in the ``slow`` tests
and in ``benchmarks/suites/real_models.py``.
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


def _nasnet():
    from keras.src.applications import nasnet

    return nasnet.NASNet(
        penultimate_filters=96,
        num_blocks=1,
        stem_block_filters=8,
        default_size=SIZE,
        **_common(),
    )


MINIATURES = {
    "ResNet50": lambda: _resnet(1),
    "ResNet50V2": lambda: _resnet(2),
    "DenseNet121": _densenet,
    "EfficientNetB0": _efficientnet,
    "EfficientNetV2B0": _efficientnet_v2,
    "ConvNeXtTiny": _convnext,
    "NASNetMobile": _nasnet,
    "MobileNetV2": lambda: keras.applications.MobileNetV2(
        alpha=0.35, **_common()
    ),
    "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(
        alpha=0.75, **_common()
    ),
}


@pytest.fixture(scope="module")
def photos():
    return photo_crops(32, SIZE)


@pytest.mark.parametrize("architecture", sorted(MINIATURES))
def test_architecture_runs_end_to_end(architecture, photos, tmp_path):
    keras.utils.set_random_seed(0)
    model = MINIATURES[architecture]()
    result = end_to_end(model, photos, tmp_path, adaround=True)
    print(architecture, result.tflite_agreement, result.onnx_agreement)
    assert result.tflite_agreement >= 0.9
    assert result.onnx_agreement >= 0.9
