"""Channel pruning: winnowing through the graph, selection, reconstruction."""

import keras
import numpy as np
import pytest

from aimet_keras import zoo
from aimet_keras.compress import ChannelPruner
from aimet_keras.compress import channel_pruning
from aimet_keras.compress import compress_model
from aimet_keras.compress import model_cost
from aimet_keras.compress import prunable_layers


def _branchy_model():
    """Residual Add, BN, depthwise, pooling and a concatenation in front of
    the layer pruned (``c``)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((10, 10, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", name="a")(inputs)
    a = keras.layers.BatchNormalization(name="a_bn")(a)
    a = keras.layers.ReLU(name="a_relu")(a)
    a = keras.layers.DepthwiseConv2D(3, padding="same", name="a_dw")(a)
    b = keras.layers.Conv2D(6, 1, use_bias=False, name="b")(inputs)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.ReLU(name="add_relu")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    d = keras.layers.Conv2D(4, 2, strides=2, name="d")(inputs)
    x = keras.layers.Concatenate(name="concat")([x, d])
    x = keras.layers.Conv2D(5, 3, padding="same", name="c")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()]
            )
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(64, 10, 10, 3)).astype("f4")


def test_prunable_layers_of_the_reference_nets(images):
    resnet = zoo.load_model("resnet", compile=False)
    # Each residual stream is one channel space, listed by its first reader.
    assert prunable_layers(resnet) == {
        "stage1_a_conv": 16,
        "stage1_b_conv": 16,
        "stage2_b_conv": 32,
        "stage3_a_conv": 32,
        "stage3_b_conv": 64,
        "logits": 64,
    }
    pruner = ChannelPruner(resnet, images[:2, :28, :28, :1], 10)
    stream = pruner.group("stage2_a_conv")
    assert stream.layer == "stage1_a_conv"
    assert stream.consumers == (
        "stage1_a_conv",
        "stage2_a_conv",
        "stage2_proj_conv",
    )
    producers = {t.name for t in stream.touched if t.kind == "out"}
    assert producers == {"stem_conv", "stage1_b_conv"}
    mobilenet = zoo.load_model("mobilenet_v2", compile=False)
    assert {f"block{i}_project_conv" for i in range(1, 7)} <= set(
        prunable_layers(mobilenet)
    )
    assert "c" in prunable_layers(_branchy_model())


def test_winnowing_equals_zeroing_the_dropped_channels(images):
    """Without reconstruction, the pruned model computes what the original
    computes with the dropped input channels of ``c`` zeroed: every producer
    (through the Add, the BN, the depthwise conv and the concatenation)
    lost exactly the matching channels."""
    model = _branchy_model()
    pruner = ChannelPruner(model, images, 500, reconstruct=False)
    kept = pruner.select_channels("c", 5)
    pruned = pruner.prune({"c": 5})
    assert pruned.get_layer("a").filters + pruned.get_layer("d").filters == 5
    assert pruned.get_layer("b").filters == pruned.get_layer("a").filters
    assert pruned.get_layer("c").kernel.shape[-2] == 5
    zeroed = keras.models.clone_model(model)
    zeroed.set_weights(model.get_weights())
    kernel = zeroed.get_layer("c").kernel.numpy()
    kernel[:, :, np.setdiff1d(np.arange(10), kept), :] = 0
    zeroed.get_layer("c").kernel.assign(kernel)
    np.testing.assert_allclose(
        pruned.predict(images, verbose=0),
        zeroed.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_samples_are_the_layer_outputs_at_the_sampled_positions(images):
    model = _branchy_model()
    pruner = ChannelPruner(model, images, 300)
    inputs, targets = pruner.original_samples("c")
    layer = pruner.model.get_layer("c")
    full = layer(pruner.sampler.layer_input(pruner.model, "c")).numpy()
    full -= layer.bias.numpy()
    positions = pruner.sampler.positions("c", full.shape[:3])
    assert inputs.shape == (300, 9, 10)
    np.testing.assert_allclose(targets, full[positions], rtol=1e-4, atol=1e-4)


def _layer_error(model, pruned, images, name="stage2_b_conv"):
    def output(m):
        probe = keras.Model(m.inputs, m.get_layer(name).output)
        return probe.predict(images, verbose=0)

    return float(np.mean((output(model) - output(pruned)) ** 2))


def test_reconstruction_beats_dropping_channels():
    model = zoo.load_model("resnet", compile=False)
    images, _ = zoo.load_fashion_mnist_slice("calibration")
    fitted, held_out = images[:300], images[300:600]
    keep = {"stage2_b_conv": 12}
    with_ls = channel_pruning(model, keep, fitted, 3000)
    without = channel_pruning(model, keep, fitted, 3000, reconstruct=False)
    error_ls = _layer_error(model, with_ls, held_out)
    error_drop = _layer_error(model, without, held_out)
    assert error_ls < 0.5 * error_drop
    # Keeping every channel changes nothing.
    same = channel_pruning(model, {"stage2_b_conv": 32}, fitted, 3000)
    np.testing.assert_allclose(
        same.predict(held_out[:50], verbose=0),
        model.predict(held_out[:50], verbose=0),
        atol=2e-4,
    )


def test_later_layers_are_reconstructed_from_the_pruned_inputs():
    """Pruned in graph order: stage3's reconstruction sees stage2's pruning,
    so together they beat pruning each from the original's samples."""
    model = zoo.load_model("resnet", compile=False)
    images, labels = zoo.load_fashion_mnist_slice("calibration")
    keep = {"stage1_b_conv": 6, "stage2_b_conv": 12, "stage3_b_conv": 24}
    pruned = channel_pruning(model, keep, images[:400], 4000)
    logits = pruned.predict(images[400:], verbose=0)
    reference = model.predict(images[400:], verbose=0)
    agreement = np.mean(logits.argmax(1) == reference.argmax(1))
    assert agreement > 0.8
    for name, count in keep.items():
        assert pruned.get_layer(name).kernel.shape[-2] == count
    assert pruned.get_layer("stage1_a_conv").filters == 6
    assert model.get_layer("stage1_a_conv").filters == 16  # not mutated


def test_a_residual_stream_is_pruned_in_all_its_layers():
    """Without reconstruction, pruning the stage-1 stream computes what the
    original computes with those channels zeroed in all three readers."""
    model = zoo.load_model("resnet", compile=False)
    images, _ = zoo.load_fashion_mnist_slice("calibration")
    pruner = ChannelPruner(model, images[:100], 1000, reconstruct=False)
    kept = pruner.select_channels("stage1_a_conv", 10)
    pruned = pruner.prune({"stage2_proj_conv": 10})  # any reader names it
    for name in ("stem_conv", "stage1_b_conv"):
        assert pruned.get_layer(name).filters == 10
    zeroed = keras.models.clone_model(model)
    zeroed.set_weights(model.get_weights())
    dropped = np.setdiff1d(np.arange(16), kept)
    for name in ("stage1_a_conv", "stage2_a_conv", "stage2_proj_conv"):
        kernel = zeroed.get_layer(name).kernel.numpy()
        kernel[:, :, dropped, :] = 0
        zeroed.get_layer(name).kernel.assign(kernel)
    np.testing.assert_allclose(
        pruned.predict(images[100:164], verbose=0),
        zeroed.predict(images[100:164], verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="read the same channels"):
        pruner.prune({"stage1_a_conv": 8, "stage2_a_conv": 8})


def test_tied_and_unprunable_layers_are_refused(images):
    model = _branchy_model()
    with pytest.raises(ValueError, match="'a'.*model input"):
        channel_pruning(model, {"a": 2}, images)
    with pytest.raises(ValueError, match="no layer 'cc'.*'c'"):
        channel_pruning(model, {"cc": 2}, images)
    with pytest.raises(ValueError, match="keeps 11 of its 10"):
        channel_pruning(model, {"c": 11}, images)
    # Channels that also reach a Flatten stay whole.
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="first")(inputs)
    y = keras.layers.Conv2D(3, 3, name="second")(x)
    flat = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, [y, flat])
    with pytest.raises(ValueError, match="'second'.*'flat'.*cannot shrink"):
        channel_pruning(model, {"second": 2}, images[:4, :6, :6, :2])


def test_compress_model_with_channel_pruning_lands_on_the_target(tmp_path):
    model = zoo.load_model("resnet", compile=False)
    weights = [w.copy() for w in model.get_weights()]
    images, labels = zoo.load_fashion_mnist_slice("calibration")
    calls = []

    def evaluate(candidate, iterations):
        calls.append(1)
        predictions = candidate.predict(images[:200], verbose=0)
        return float(np.mean(predictions.argmax(1) == labels[:200]))

    def run():
        return compress_model(
            model,
            evaluate,
            1,
            0.7,
            scheme="channel_pruning",
            num_comp_ratio_candidates=4,
            # The stage-1 stream's first reader: the stream stays whole.
            modules_to_ignore=["stage1_a_conv"],
            eval_scores_path=str(tmp_path / "scores.json"),
            data=images[200:400],
            num_reconstruction_samples=2000,
        )

    pruned, stats = run()
    assert len(calls) == 1 + 5 * 3  # five channel spaces
    assert pruned.get_layer("stem_conv").filters == 16
    assert 0.69 < stats.achieved_comp_ratio <= 0.7
    measured = model_cost(pruned).macs / model_cost(model).macs
    assert measured == pytest.approx(stats.achieved_comp_ratio)
    assert set(stats.kept_channels) <= set(stats.ratios)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    calls.clear()
    run()
    assert calls == []  # the table was reused
    with pytest.raises(ValueError, match="needs data"):
        compress_model(model, evaluate, 1, 0.7, scheme="channel_pruning")


def test_selection_drops_the_channels_that_contribute_least(images):
    model = _branchy_model()
    kernel = model.get_layer("c").kernel.numpy()
    # Channels 1, 4 and 8 feed c nothing; 6 barely anything.
    kernel[:, :, [1, 4, 8], :] = 0
    kernel[:, :, 6, :] *= 1e-3
    model.get_layer("c").kernel.assign(kernel)
    pruner = ChannelPruner(model, images, 500)
    kept = pruner.select_channels("c", 6)
    assert set(range(10)) - set(kept.tolist()) == {1, 4, 6, 8}
