"""Cross-layer equalization: equal ranges, same function, ReLU6 as ReLU."""

import keras
import numpy as np

from aimet_keras import zoo
from aimet_keras.graph import prepare_model
from aimet_keras.graph import rebuild
from aimet_keras.ptq import cross_layer_equalization as cle
from aimet_keras.ptq import equalize_model
from aimet_keras.ptq import find_cls_sets
from aimet_keras.ptq import fold_all_batch_norms
from tests.ptq.test_batch_norm_fold import _randomize_bn

L = keras.layers


def _with_relu(model):
    return rebuild(prepare_model(model), cle._relu6_to_relu)


def test_mobilenet_triples_are_equalized_and_outputs_kept():
    model = zoo.load_model("mobilenet_v2", compile=False)
    weights = [w.copy() for w in model.get_weights()]
    images = zoo.load_fashion_mnist_slice("test")[0][:200]
    equalized = equalize_model(model, high_bias_fold=False)
    assert not any(
        isinstance(x, L.ReLU) and x.max_value for x in equalized.layers
    )
    reference = _with_relu(model).predict(images, verbose=0)
    np.testing.assert_allclose(
        equalized.predict(images, verbose=0), reference, atol=1e-4
    )
    sets = find_cls_sets(equalized)
    triples = [names for names, _ in sets if len(names) == 3]
    assert len(triples) >= 5
    first, depthwise, last = (equalized.get_layer(n) for n in triples[0])
    # All three layers share one range per channel after scaling.
    np.testing.assert_allclose(
        cle._out_range(first), cle._out_range(depthwise), rtol=1e-4
    )
    np.testing.assert_allclose(
        cle._out_range(depthwise), cle._in_range(last), rtol=1e-4
    )
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_resnet_pairs_with_high_bias_fold_keep_predictions():
    model = zoo.load_model("resnet", compile=False)
    images = zoo.load_fashion_mnist_slice("test")[0][:500]
    equalized = equalize_model(model)
    assert len(find_cls_sets(equalized)) == 3
    a = model.predict(images, verbose=0)
    b = equalized.predict(images, verbose=0)
    assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.99


def test_high_bias_fold_without_relu_is_exact():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="a")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(5, 3, name="b")(x)  # valid padding: the fold is exact
    model = _randomize_bn(keras.Model(inputs, x))
    model.get_layer("bn").beta.assign(np.full(4, 3.0, "float32"))
    data = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    equalized = equalize_model(model)
    folded, _ = fold_all_batch_norms(model)
    # The first conv's bias lost the BN's beta (scaled), the second took it.
    assert (
        np.abs(equalized.get_layer("a").bias.numpy()).max()
        < np.abs(folded.get_layer("a").bias.numpy()).max()
    )
    np.testing.assert_allclose(
        equalized.predict(data, verbose=0),
        model.predict(data, verbose=0),
        rtol=1e-4,
        atol=1e-4,
    )
