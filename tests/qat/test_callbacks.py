"""The QAT callbacks change what fit trains, and only when asked."""

import json

import keras
import numpy as np
import pytest

from aimet_keras import qat
from aimet_keras.sim import QuantizationSimModel

RANGE_LEARNING = "training_range_learning_with_tf_init"


def _model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="fc"),
        ]
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.random((96, 8, 8, 1)).astype("float32")
    labels = (images.mean(axis=(1, 2, 3)) * 30).astype(int) % 3
    return images, labels


def _sim(data, **kwargs):
    keras.utils.set_random_seed(0)
    sim = QuantizationSimModel(_model(), config_file="htp", **kwargs)
    sim.compute_encodings(data[0])
    sim.model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return sim


class _Record(keras.callbacks.Callback):
    """Reads a value at every epoch's start and end."""

    def __init__(self, read):
        super().__init__()
        self.read, self.values = read, []

    def on_epoch_begin(self, epoch, logs=None):
        self.values.append(self.read())

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(self.read())


def test_batch_norm_statistics_stop_moving_after_the_epoch(data):
    sim = _sim(data)
    bn = sim.model.get_layer("bn").layer
    record = _Record(lambda: bn.moving_mean.numpy().copy())
    gamma = bn.gamma.numpy().copy()
    sim.model.fit(
        *data,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[qat.FreezeBatchNormStatistics(after_epoch=1), record],
    )
    start0, end0, start1, end1 = record.values
    assert not np.allclose(start0, end0)  # epoch 0 tracks the batches
    np.testing.assert_array_equal(start1, end1)  # epoch 1 is frozen
    assert not np.allclose(bn.gamma.numpy(), gamma)  # scale still trains


def test_activation_grids_freeze_but_weight_grids_keep_learning(data):
    sim = _sim(data, quant_scheme=RANGE_LEARNING)
    relu = sim.model.get_layer("relu").output_quantizers[0]
    kernel = sim.model.get_layer("conv").param_quantizers["kernel"]
    record = _Record(
        lambda: (relu.encoding_max.numpy(), kernel.encoding_max.numpy())
    )
    sim.model.fit(
        *data,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[qat.FreezeActivationEncodings(after_epoch=1), record],
    )
    (a0, _), (a1, _), (b0, k0), (b1, k1) = record.values
    assert a0 != a1  # learned in epoch 0
    assert b0 == b1  # frozen in epoch 1
    assert not np.allclose(k0, k1)  # weight grids still learn


def test_dampening_loss_is_the_distance_to_bin_centres(data):
    sim = _sim(data, default_param_bw=4)
    wrapper = sim.model.get_layer("conv")
    quantizer = wrapper.param_quantizers["kernel"]
    kernel = wrapper.layer.kernel.numpy()
    # numpy reference: symmetric per-channel 4-bit grid from the stored max.
    step = quantizer.encoding_max.numpy() / 7  # 15 steps: M / floor(15/2)
    distance = kernel - np.clip(np.round(kernel / step), -8, 7) * step
    inside = np.abs(distance) <= 0.5 * step + 1e-7
    expected = np.sum(np.where(inside, distance, 0.0) ** 2)
    from aimet_keras.qat import callbacks as callbacks_lib

    loss = callbacks_lib._dampening_loss([("kernel", quantizer)])(wrapper)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def _distance_to_centres(sim):
    wrapper = sim.model.get_layer("conv")
    quantizer = wrapper.param_quantizers["kernel"]
    step = quantizer.encoding_max.numpy() / 7  # 15 steps: M / floor(15/2)
    kernel = wrapper.layer.kernel.numpy()
    return np.mean(np.abs(kernel / step - np.round(kernel / step)))


def test_dampening_pulls_weights_towards_bin_centres(data):
    distances = {}
    for strength in (0.0, 10.0):
        sim = _sim(data, default_param_bw=4)
        dampening = qat.OscillationDampening(strength=strength)
        sim.model.fit(
            *data, batch_size=16, epochs=3, verbose=0, callbacks=[dampening]
        )
        assert dampening.layers == ["conv", "fc"]
        assert float(dampening.current_strength) == pytest.approx(strength)
        # Removed after fit.
        assert not sim.model.get_layer("conv").__dict__["_training_losses"]
        distances[strength] = _distance_to_centres(sim)
    assert distances[10.0] < 0.8 * distances[0.0]


def test_oscillating_weights_freeze_on_their_average_grid_point(data):
    sim = _sim(data, default_param_bw=4)
    wrapper = sim.model.get_layer("conv")
    kernel = wrapper.layer.kernel
    step = wrapper.param_quantizers["kernel"].encoding_max.numpy() / 7
    freezing = qat.IterativeWeightFreezing(threshold=0.3, momentum=0.5)
    freezing.set_model(sim.model)
    freezing.on_train_begin()
    base = np.zeros(kernel.shape, "float32")
    for step_index in range(8):
        # Weight [0,0,0,0] flips between grid points 1 and 2; weight
        # [0,0,0,1] climbs one point per step (no oscillation).
        value = base.copy()
        value[0, 0, 0, 0] = (1.0 if step_index % 2 else 2.0) * step[0]
        value[0, 0, 0, 1] = min(step_index, 7) * step[1] * 0.99
        kernel.assign(value)
        freezing.on_train_batch_end(step_index)
    pinned = kernel.numpy()
    assert pinned[0, 0, 0, 0] / step[0] in (1.0, 2.0)
    moved = base + 0.4 * step  # the optimizer moves everything
    moved[0, 0, 0, 1] = 6.9 * step[1]  # still on grid point 7
    kernel.assign(moved)
    freezing.on_train_batch_end(8)
    after = kernel.numpy()
    assert after[0, 0, 0, 0] == pinned[0, 0, 0, 0]  # frozen: pinned back
    assert after[0, 0, 0, 1] == pytest.approx(6.9 * step[1])  # free
    total = np.prod(kernel.shape) + np.prod(
        sim.model.get_layer("fc").layer.kernel.shape
    )
    assert freezing.frozen_fraction == pytest.approx(1 / total)


def test_finalize_keeps_learned_ranges_and_recomputes_fixed_ones(data):
    sim = _sim(data)
    quantizer = sim.model.get_layer("conv").param_quantizers["kernel"]
    sim.model.fit(
        *data,
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[qat.FinalizeEncodings(sim)],
    )
    kernel = sim.model.get_layer("conv").layer.kernel.numpy()
    # Fixed symmetric per-channel grids end on the trained kernel's range.
    np.testing.assert_allclose(
        quantizer.encoding_max.numpy(),
        np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0),
        rtol=0.05,
    )
    learned = _sim(data, quant_scheme=RANGE_LEARNING)
    relu = learned.model.get_layer("relu").output_quantizers[0]
    learned.model.fit(*data, batch_size=16, epochs=1, verbose=0)
    trained = relu.encoding
    qat.finalize_encodings(learned, calibration_data=data[0])
    for field in ("min", "max"):
        np.testing.assert_allclose(
            getattr(relu.encoding, field), getattr(trained, field), rtol=1e-6
        )


def test_export_best_epoch_restores_and_exports_the_best(data, tmp_path):
    sim = _sim(data)
    qat.simulate_batch_norm_folding(sim)
    sim.model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    snapshots = []
    snapshot = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(
            sim.model.get_layer("fc").layer.kernel.numpy().copy()
        )
    )
    best = qat.ExportBestEpoch(
        sim, tmp_path, "best", monitor="loss", formats=("aimet", "onnx")
    )
    history = sim.model.fit(
        *data, batch_size=32, epochs=3, verbose=0, callbacks=[snapshot, best]
    )
    losses = history.history["loss"]
    assert best.best_epoch == int(np.argmin(losses))
    # The sim now holds the best epoch's weights, folded for deployment.
    np.testing.assert_array_equal(
        sim.model.get_layer("fc").layer.kernel.numpy(),
        snapshots[best.best_epoch],
    )
    assert type(sim.model.get_layer("conv").layer).__name__ == "Conv2D"
    encodings = json.loads(best.paths["aimet"]["encodings"].read_text())
    assert encodings["param_encodings"]
    assert best.paths["onnx"].qdq_path.exists()


def test_export_best_epoch_never_picks_a_nan_epoch(data, caplog):
    sim = _sim(data)
    best = qat.ExportBestEpoch(sim, ".", "x", monitor="val_loss")
    best.set_model(sim.model)
    for epoch, value in enumerate([float("nan"), 0.5, float("inf"), 0.7]):
        best.on_epoch_end(epoch, {"val_loss": value})
    assert (best.best_epoch, best.best_value) == (1, 0.5)
    assert "val_loss is nan at epoch 0" in caplog.text


def test_bad_arguments_name_the_fix(data):
    with pytest.raises(ValueError, match="after_epoch=-1"):
        qat.FreezeBatchNormStatistics(after_epoch=-1)
    with pytest.raises(ValueError, match="formats"):
        qat.ExportBestEpoch(None, ".", "x", formats=("pdf",))
    sim = _sim(data)
    best = qat.ExportBestEpoch(sim, ".", "x")
    with pytest.raises(ValueError, match="validation_data"):
        sim.model.fit(*data, epochs=1, verbose=0, callbacks=[best])


class _TrainFunctions(keras.callbacks.Callback):
    """Records the train function fit runs in each epoch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.train_function)


def test_freezing_switches_need_no_retrace(data):
    from aimet_keras.qat import simulate_batch_norm_folding

    sim = _sim(data, quant_scheme=RANGE_LEARNING)
    simulate_batch_norm_folding(sim)
    sim.model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    wrapper = sim.model.get_layer("conv")
    bn = wrapper.layer.batch_norm
    relu = sim.model.get_layer("relu").output_quantizers[0]
    moving = _Record(lambda: bn.moving_mean.numpy().copy())
    grid = _Record(lambda: float(relu.encoding_max.numpy()))
    functions = _TrainFunctions()
    sim.model.fit(
        *data,
        batch_size=32,
        epochs=3,
        verbose=0,
        callbacks=[
            qat.FreezeBatchNormStatistics(after_epoch=1),
            qat.FreezeActivationEncodings(after_epoch=2),
            moving,
            grid,
            functions,
        ],
    )
    # One traced step served all three epochs...
    assert functions.seen[0] is functions.seen[1] is functions.seen[2]
    # ...and still each switch took effect at its epoch.
    assert not np.allclose(moving.values[0], moving.values[1])
    np.testing.assert_array_equal(moving.values[2], moving.values[5])
    assert grid.values[2] != grid.values[3]
    assert grid.values[4] == grid.values[5]
    assert not relu.encoding_max.trainable  # stays frozen for a later fit


def test_activation_grids_freeze_with_several_steps_per_call(data):
    sim = _sim(data, quant_scheme=RANGE_LEARNING)
    sim.model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=3,
    )
    relu = sim.model.get_layer("relu").output_quantizers[0]
    record = _Record(lambda: float(relu.encoding_max.numpy()))
    sim.model.fit(
        *data,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[qat.FreezeActivationEncodings(after_epoch=1), record],
    )
    assert record.values[0] != record.values[1]
    assert record.values[2] == record.values[3]
