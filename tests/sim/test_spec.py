"""The quantsim config resolved per layer on the reference models."""

import keras
import pytest

from aimet_keras import zoo
from aimet_keras.sim import resolve_layer_specs
from aimet_keras.sim import weight_channel_axis


@pytest.fixture(scope="module")
def resnet():
    return zoo.load_model("resnet", compile=False)


def _outputs_on(spec):
    return [q.enabled for q in spec.outputs]


def test_default_config_on_resnet(resnet):
    specs = resolve_layer_specs(resnet)
    # Conv+BN pair, then the Conv+Relu supergroup through the paired BN.
    assert _outputs_on(specs["stem_conv"]) == [False]
    assert _outputs_on(specs["stem_bn"]) == [False]
    assert _outputs_on(specs["stem_relu"]) == [True]
    # A BN feeding an Add keeps its output; Add+Relu fuses the Add.
    assert _outputs_on(specs["stage1_b_bn"]) == [True]
    assert _outputs_on(specs["stage1_add"]) == [False]
    assert _outputs_on(specs["stage1_out"]) == [True]
    # Model input quantized at its consumer only.
    assert [q.enabled for q in specs["stem_conv"].inputs] == [True]
    assert [q.enabled for q in specs["stage1_a_conv"].inputs] == [False]
    kernel = specs["stem_conv"].params["kernel"]
    assert kernel.enabled and kernel.is_symmetric and kernel.axis is None
    assert not specs["logits"].params["bias"].enabled
    bn = specs["stem_bn"].params
    assert not any(q.enabled for q in bn.values())
    assert _outputs_on(specs["probabilities"]) == [True]
    assert not any(q.is_symmetric for q in specs["stem_relu"].outputs)


def test_tflite_config_on_mobilenet():
    model = zoo.load_model("mobilenet_v2", compile=False)
    specs = resolve_layer_specs(model, "tflite_int8")
    assert specs["block1_dw"].params["kernel"].axis == (-2, -1)
    assert specs["stem_conv"].params["kernel"].axis == -1
    assert specs["stem_conv"].params["kernel"].strict_symmetric
    logits = specs["logits"].params
    assert logits["kernel"].axis is None  # per-tensor Dense
    assert logits["bias"].enabled and logits["bias"].bitwidth == 32
    assert _outputs_on(specs["block1_dw_relu6"]) == [True]
    assert _outputs_on(specs["block1_dw_bn"]) == [False]


def test_htp_supergroup_names_the_bn(resnet):
    specs = resolve_layer_specs(resnet, "htp")
    assert _outputs_on(specs["stem_bn"]) == [False]
    assert specs["stem_conv"].params["kernel"].axis == -1


def test_bitwidths_and_float_type(resnet):
    specs = resolve_layer_specs(
        resnet, default_output_bw=16, default_param_bw=4
    )
    assert specs["stem_conv"].params["kernel"].bitwidth == 4
    assert specs["stem_relu"].outputs[0].bitwidth == 16
    fp16 = resolve_layer_specs(resnet, default_data_type="float")
    assert fp16["stem_relu"].outputs[0].data_type == "float"
    assert fp16["stem_relu"].outputs[0].bitwidth == 16


def test_op_type_overrides_defaults():
    inputs = keras.Input((8,))
    outputs = keras.layers.Dropout(0.1, name="drop")(
        keras.layers.Dense(4, name="dense")(inputs)
    )
    model = keras.Model(inputs, outputs)
    specs = resolve_layer_specs(
        model,
        {
            "defaults": {"ops": {"is_output_quantized": "True"}},
            "op_type": {
                "Dropout": {"is_output_quantized": "False"},
                "Gemm": {"is_input_quantized": "True", "is_symmetric": "True"},
            },
            "model_output": {"is_output_quantized": "True"},
        },
    )
    assert specs["dense"].inputs[0].enabled
    assert specs["dense"].outputs[0].is_symmetric
    # model_output comes last and wins over op_type.
    assert _outputs_on(specs["drop"]) == [True]


@pytest.mark.parametrize(
    "layer,name,axis",
    [
        (keras.layers.Conv2D(2, 3), "kernel", -1),
        (keras.layers.Dense(2), "kernel", -1),
        (keras.layers.DepthwiseConv2D(3), "kernel", (-2, -1)),
        (keras.layers.SeparableConv2D(2, 3), "depthwise_kernel", (-2, -1)),
        (keras.layers.SeparableConv2D(2, 3), "pointwise_kernel", -1),
        (keras.layers.Conv2DTranspose(2, 3), "kernel", -2),
        (keras.layers.Conv2DTranspose(2, 3), "bias", -1),
    ],
)
def test_weight_channel_axis(layer, name, axis):
    assert weight_channel_axis(layer, name) == axis
