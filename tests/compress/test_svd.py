"""Spatial SVD: exact at full rank, better with rank, costs as AIMET's."""

import keras
import numpy as np
import pytest

from aimet_keras import zoo
from aimet_keras.compress import max_spatial_svd_rank
from aimet_keras.compress import max_weight_svd_rank
from aimet_keras.compress import model_cost
from aimet_keras.compress import spatial_svd
from aimet_keras.compress import spatial_svd_layers
from aimet_keras.compress import svd_rank
from aimet_keras.compress import weight_svd
from aimet_keras.compress import weight_svd_layers
from aimet_keras.compress.reconstruction import LayerSampler


def _conv(input_shape=(12, 12, 4), **kwargs):
    conv = keras.layers.Conv2D(name="conv", **kwargs)
    conv.build((None, *input_shape))
    rng = np.random.default_rng(0)
    conv.kernel.assign(rng.normal(size=conv.kernel.shape).astype("float32"))
    if conv.use_bias:
        conv.bias.assign(rng.normal(size=conv.bias.shape).astype("float32"))
    x = rng.normal(size=(2, *input_shape)).astype("float32")
    return conv, x


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(filters=6, kernel_size=3, padding="same"),
        dict(filters=6, kernel_size=(3, 5), strides=2, padding="same"),
        dict(filters=5, kernel_size=3, strides=(2, 1), padding="valid"),
        dict(filters=6, kernel_size=3, dilation_rate=2, activation="relu"),
    ],
)
def test_full_rank_reproduces_the_layer(kwargs):
    conv, x = _conv(**kwargs)
    first, second = spatial_svd_layers(conv, max_spatial_svd_rank(conv))
    np.testing.assert_allclose(second(first(x)), conv(x), atol=1e-4)


def test_error_shrinks_as_the_rank_grows():
    conv, x = _conv(filters=8, kernel_size=3, padding="same")
    want = conv(x).numpy()
    errors = [
        np.mean((second(first(x)).numpy() - want) ** 2)
        for first, second in (
            spatial_svd_layers(conv, r) for r in (1, 4, 8, 12)
        )
    ]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-8


def test_model_level_svd_keeps_outputs_and_the_caller_model():
    model = zoo.load_model("resnet", compile=False)
    weights = [w.copy() for w in model.get_weights()]
    images = zoo.load_fashion_mnist_slice("test")[0][:16]
    conv = model.get_layer("stage2_b_conv")
    full = max_spatial_svd_rank(conv)
    factored = spatial_svd(model, {"stage2_b_conv": full})
    np.testing.assert_allclose(
        factored.predict(images, verbose=0),
        model.predict(images, verbose=0),
        atol=1e-4,
    )
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # AIMET's cost formula: (I*r*kh*stride_w + r*O*kw) * H_out * W_out.
    rank = 8
    cost = model_cost(spatial_svd(model, {"stage2_b_conv": rank}))
    kh, kw, channels_in, channels_out = conv.kernel.shape
    positions = 14 * 14
    assert (
        cost["stage2_b_conv_a"].macs + cost["stage2_b_conv_b"].macs
        == (channels_in * rank * kh + rank * channels_out * kw) * positions
    )


def test_bad_input_names_the_fix():
    model = zoo.load_model("resnet", compile=False)
    with pytest.raises(
        ValueError, match="no layer 'stage2_b_cnv'.*stage2_b_conv"
    ):
        spatial_svd(model, {"stage2_b_cnv": 4})
    with pytest.raises(ValueError, match="rank=0; use a whole number from 1"):
        spatial_svd(model, {"stage2_b_conv": 0})
    with pytest.raises(ValueError, match="is a Dense"):
        spatial_svd(model, {"logits": 2})


@pytest.mark.parametrize(
    "layer, input_shape",
    [
        (keras.layers.Dense(6, activation="relu", name="fc"), (5, 10)),
        (keras.layers.Conv2D(6, 1, strides=2, name="pw"), (8, 8, 10)),
    ],
)
def test_weight_svd_full_rank_reproduces_the_layer(layer, input_shape):
    layer.build((None, *input_shape))
    x = np.random.default_rng(1).normal(size=(2, *input_shape))
    x = x.astype("float32")
    first, second = weight_svd_layers(layer, max_weight_svd_rank(layer))
    np.testing.assert_allclose(second(first(x)), layer(x), atol=1e-5)
    low_first, low_second = weight_svd_layers(layer, 2)
    assert low_first.kernel.shape[-1] == 2
    assert not np.allclose(low_second(low_first(x)), layer(x), atol=1e-3)


def test_weight_svd_refuses_larger_kernels():
    conv = keras.layers.Conv2D(4, 3, name="c3")
    conv.build((None, 6, 6, 2))
    with pytest.raises(ValueError, match="'c3'.*larger than 1x1"):
        weight_svd_layers(conv, 1)


def test_svd_rank_meets_the_ratio_and_rounds_up():
    conv = keras.layers.Conv2D(32, 3, name="c")
    conv.build((None, 16, 16, 16))
    top = max_spatial_svd_rank(conv)
    for ratio in (0.1, 0.3, 0.5, 0.9):
        rank = svd_rank(conv, ratio)
        cost = rank * (16 * 3 + 32 * 3)
        assert cost <= ratio * 32 * 16 * 9 < (rank + 1) * (16 * 3 + 32 * 3)
        assert svd_rank(conv, ratio, multiplicity=8) % 8 == 0
    # Full rank (48) costs more than the layer: ratio 1 stops at equal cost.
    assert svd_rank(conv, 1.0) == 32 < top
    dense = keras.layers.Dense(8, name="d")
    dense.build((None, 24))
    assert svd_rank(dense, 0.5, scheme="weight_svd") == 3  # 3 * 32 <= 96
    with pytest.raises(ValueError, match="comp_ratio=0"):
        svd_rank(conv, 0)
    with pytest.raises(ValueError, match="cost_metric"):
        svd_rank(conv, 0.5, cost_metric="flops")
    assert isinstance(
        weight_svd(zoo.load_model("resnet"), {"logits": 4}), keras.Model
    )


def test_refit_on_data_beats_the_weight_only_factorisation():
    """Refitting the second factors in graph order on sampled activations
    brings the last block's output closer to the original's than SVD of
    the weights alone, on images the refit never saw."""
    model = zoo.load_model("resnet", compile=False)
    images, _ = zoo.load_fashion_mnist_slice("calibration")
    ranks = {"stage1_a_conv": 8, "stage2_b_conv": 16, "stage3_b_conv": 24}
    plain = spatial_svd(model, ranks)
    refit = spatial_svd(
        model, ranks, data=images[:300], num_reconstruction_samples=3000
    )

    def block_output(m):
        # The pooling's input: the last block's output in m's own graph.
        return LayerSampler(images[500:700]).layer_input(m, "pool")

    reference = block_output(model)
    error_plain = np.mean((block_output(plain) - reference) ** 2)
    error_refit = np.mean((block_output(refit) - reference) ** 2)
    assert error_refit < 0.5 * error_plain
    # Only the second factors change.
    np.testing.assert_array_equal(
        plain.get_layer("stage1_a_conv_a").kernel.numpy(),
        refit.get_layer("stage1_a_conv_a").kernel.numpy(),
    )
    dense = weight_svd(model, {"logits": 3}, data=images[:300])
    assert dense.get_layer("logits_b").kernel.shape == (3, 10)
