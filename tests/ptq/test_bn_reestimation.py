"""BN re-estimation: moving statistics become the data's, and come back."""

import keras
import numpy as np

from aimet_keras.ptq import reestimate_bn_stats
from aimet_keras.sim import QuantizationSimModel


def _model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="fc")(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))


def test_statistics_are_the_average_of_batch_statistics():
    model = _model()
    data = np.random.default_rng(0).normal(2.0, 3.0, (256, 6)).astype("f4")
    bn = model.get_layer("bn")
    old_mean = bn.moving_mean.numpy().copy()
    handle = reestimate_bn_stats(model, data, bn_num_batches=4, batch_size=64)
    hidden = model.get_layer("fc")(data).numpy().reshape(4, 64, 4)
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), hidden.mean(1).mean(0), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), hidden.var(1).mean(0), rtol=1e-3
    )
    assert bn.momentum == 0.99  # put back
    handle.remove()
    np.testing.assert_array_equal(bn.moving_mean.numpy(), old_mean)


def test_wrapped_batch_norms_of_a_sim_are_reestimated():
    model = _model()
    data = np.random.default_rng(1).normal(1.0, 2.0, (128, 6)).astype("f4")
    sim = QuantizationSimModel(model)
    sim.compute_encodings(data)
    bn = sim.model.get_layer("bn").layer
    reestimate_bn_stats(sim.model, data, bn_num_batches=2, batch_size=64)
    assert np.abs(bn.moving_mean.numpy()).max() > 0.1
