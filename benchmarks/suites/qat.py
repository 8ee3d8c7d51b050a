"""Quantization-aware training with ``fit``: accuracy and cost against FP32.

Three tables, on the full Fashion-MNIST training set (60,000) and test set
(10,000), unless ``--quick``:

* W8A8 QAT of each reference model for one epoch, against FP32 and the
  calibrated sim before training (issue 6's target: within 0.3 points);
* W4A4 QAT of the ResNet (per-channel weights) for three epochs, with and
  without range learning and with and without oscillation dampening plus
  iterative weight freezing, and with batch norm trained folded
  (statistics frozen after the first epoch) (target: within 1.5 points);
* our W8A8 QAT beside tensorflow-model-optimization's (the same
  architecture rebuilt in ``tf_keras`` with the same weights, the same data,
  epochs, batch size and learning rate): accuracy, and a training step's
  time over the FP32 step's time for each.

Every sim uses the ``htp`` config (per-channel symmetric weights,
asymmetric activations), calibrated with ``tf_enhanced`` (or its
range-learning scheme) on the first 1,000 training images. Batch norms are
folded before the sim (``ptq.fold_all_batch_norms``), as a deployed model
runs them, except in the row that trains them folded with statistics.
"""

import time

import numpy as np

from benchmarks import harness

BATCH_SIZE = 64
W8_EPOCHS = 1
W8_LEARNING_RATE = 1e-5
W4_EPOCHS = 3
W4_LEARNING_RATE = 3e-4
NUM_CALIBRATION = 1000
STEP_REPEATS = 7
STEPS_PER_REPEAT = 20
QUICK = {"train": 2000, "test": 1000, "calibration": 256}
FIXED = "tf_enhanced"
LEARNED = "training_range_learning_with_tf_enhanced_init"


def _data(quick):
    from aimet_keras import zoo

    train, train_labels = zoo.load_fashion_mnist("train")
    test, test_labels = zoo.load_fashion_mnist("test")
    calibration = train[:NUM_CALIBRATION]
    if quick:
        train, train_labels = (
            train[: QUICK["train"]],
            train_labels[: QUICK["train"]],
        )
        test, test_labels = test[: QUICK["test"]], test_labels[: QUICK["test"]]
        calibration = calibration[: QUICK["calibration"]]
    return train, train_labels, test, test_labels, calibration


def _compile(model, learning_rate, decay_steps=None):
    import keras

    if decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps
        )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _sim(model, calibration, bits, scheme, fold=True):
    from aimet_keras import ptq
    from aimet_keras.sim import QuantizationSimModel

    if fold:
        model, _ = ptq.fold_all_batch_norms(model)
    sim = QuantizationSimModel(
        model,
        quant_scheme=scheme,
        default_param_bw=bits,
        default_output_bw=bits,
        config_file="htp",
    )
    sim.compute_encodings(calibration)
    return sim


def _fit(model, data, epochs, learning_rate, callbacks=(), cosine=False):
    """Trains; returns (per-epoch test accuracies, seconds per epoch).

    With ``cosine``, the learning rate decays to 0 over the run.
    """
    import keras

    train, train_labels, test, test_labels, _ = data
    steps = epochs * -(-len(train) // BATCH_SIZE)
    _compile(model, learning_rate, steps if cosine else None)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    history = model.fit(
        train,
        train_labels,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        validation_data=(test, test_labels),
        validation_batch_size=500,
        callbacks=list(callbacks),
        verbose=0,
    )
    seconds = (time.perf_counter() - start) / epochs
    return [100 * a for a in history.history["val_accuracy"]], seconds


def _top1(model, images, labels):
    return 100 * harness.top1_accuracy(model, images, labels)


def _step_ms(models, images, labels):
    """Median ms per training step of each ``{name: model}``, interleaved.

    Like the tfmot peer: the compiled ``train_function`` (what ``fit`` runs
    each step) on fixed batches from memory, after warm-up.
    """
    import tensorflow as tf

    count = STEPS_PER_REPEAT * BATCH_SIZE
    order = np.arange(count) % len(images)
    dataset = (
        tf.data.Dataset.from_tensor_slices((images[order], labels[order]))
        .batch(BATCH_SIZE, drop_remainder=True)
        .repeat()
        .prefetch(2)
    )

    def stepper(model):
        _compile(model, W8_LEARNING_RATE)
        model.make_train_function()
        iterator = iter(dataset)

        def run():
            for _ in range(STEPS_PER_REPEAT):
                logs = model.train_function(iterator)
            float(logs["loss"])

        return run

    samples = harness.time_interleaved(
        {name: stepper(model) for name, model in models.items()},
        repeats=STEP_REPEATS,
        warmup=2,
    )
    return {
        name: float(np.median(times)) * 1000 / STEPS_PER_REPEAT
        for name, times in samples.items()
    }


def _w8_table(data, models):
    from aimet_keras import zoo

    train, train_labels, test, test_labels, calibration = data
    table = harness.Table(
        f"W8A8 QAT, {W8_EPOCHS} epoch (htp config, BN folded, tf_enhanced "
        "init)",
        [
            "model",
            "FP32 top-1",
            "W8A8 sim before QAT",
            "W8A8 after QAT",
            "QAT - FP32 (points)",
            "target >= -0.3",
            "s / epoch",
        ],
        formats={
            "FP32 top-1": "{:.2f}",
            "W8A8 sim before QAT": "{:.2f}",
            "W8A8 after QAT": "{:.2f}",
            "QAT - FP32 (points)": "{:+.2f}",
            "s / epoch": "{:.0f}",
        },
    )
    results = {}
    for name in models:
        model = zoo.load_model(name, compile=False)
        fp32 = _top1(model, test, test_labels)
        sim = _sim(model, calibration, 8, FIXED)
        before = _top1(sim.model, test, test_labels)
        accuracies, seconds = _fit(sim.model, data, W8_EPOCHS, W8_LEARNING_RATE)
        gap = accuracies[-1] - fp32
        table.add_row(
            name,
            fp32,
            before,
            accuracies[-1],
            gap,
            "met" if gap >= -0.3 else "not met",
            seconds,
        )
        results[name] = dict(fp32=fp32, qat=accuracies[-1], seconds=seconds)
    table.notes.append(
        f"Adam, learning rate {W8_LEARNING_RATE:g}, batch {BATCH_SIZE}, "
        f"{len(train):,} training images; accuracy on {len(test):,} test "
        "images after the last epoch (no epoch selection)."
    )
    return table, results


def _w4_rows():
    from aimet_keras import qat

    def dampen():
        return [qat.OscillationDampening(), qat.IterativeWeightFreezing()]

    return [
        ("fixed grids", FIXED, True, lambda: []),
        ("fixed grids + dampening + freezing", FIXED, True, dampen),
        ("range learning", LEARNED, True, lambda: []),
        ("range learning + dampening + freezing", LEARNED, True, dampen),
        (
            "range learning + dampening + freezing, BN trained folded "
            "(statistics frozen after epoch 1)",
            LEARNED,
            False,
            lambda: [
                *dampen(),
                qat.FreezeBatchNormStatistics(after_epoch=1),
            ],
        ),
    ]


def _w4_table(data):
    from aimet_keras import qat
    from aimet_keras import zoo

    train, train_labels, test, test_labels, calibration = data
    model = zoo.load_model("resnet", compile=False)
    fp32 = _top1(model, test, test_labels)
    columns = ["setup", "W4A4 before QAT"]
    columns += [f"epoch {i + 1}" for i in range(W4_EPOCHS)]
    columns += ["last - FP32 (points)", "target >= -1.5", "frozen weights"]
    columns += ["s / epoch"]
    table = harness.Table(
        f"W4A4 per-channel QAT of the ResNet, {W4_EPOCHS} epochs (FP32 "
        f"{fp32:.2f})",
        columns,
        formats={
            **{c: "{:.2f}" for c in columns[1 : 2 + W4_EPOCHS]},
            "last - FP32 (points)": "{:+.2f}",
            "frozen weights": "{:.2%}",
            "s / epoch": "{:.0f}",
        },
    )
    for label, scheme, fold_first, make_callbacks in _w4_rows():
        sim = _sim(model, calibration, 4, scheme, fold=fold_first)
        if not fold_first:
            qat.simulate_batch_norm_folding(sim)
        before = _top1(sim.model, test, test_labels)
        callbacks = make_callbacks()
        accuracies, seconds = _fit(
            sim.model,
            data,
            W4_EPOCHS,
            W4_LEARNING_RATE,
            callbacks,
            cosine=True,
        )
        if not fold_first:
            # What deployment runs: the folded layers, same grids.
            qat.finalize_batch_norm_folding(sim)
            accuracies[-1] = _top1(sim.model, test, test_labels)
        frozen = [
            c.frozen_fraction
            for c in callbacks
            if isinstance(c, qat.IterativeWeightFreezing)
        ]
        gap = accuracies[-1] - fp32
        table.add_row(
            label,
            before,
            *accuracies,
            gap,
            "met" if gap >= -1.5 else "not met",
            frozen[0] if frozen else "-",
            seconds,
        )
    table.notes.append(
        f"Adam, learning rate {W4_LEARNING_RATE:g} with cosine decay to 0 "
        f"over the run, batch {BATCH_SIZE}, "
        f"{len(train):,} training images; test accuracy after each epoch "
        "(the last one is the result: no epoch selection). Dampening: "
        "OscillationDampening() and IterativeWeightFreezing() defaults; "
        "'frozen weights' is the share of 4-bit kernel weights frozen at the "
        "end. The BN-folded-in-training row's last epoch is measured after "
        "finalize_batch_norm_folding (the plain folded layers)."
    )
    return table


def _tfmot_table(data, models, ours, quick):
    from aimet_keras import qat
    from aimet_keras import zoo
    from benchmarks.peers import tfmot_qat

    train, train_labels, test, test_labels, calibration = data
    table = harness.Table(
        f"Ours vs tensorflow-model-optimization: W8A8 QAT, {W8_EPOCHS} epoch",
        [
            "model",
            "FP32 top-1",
            "ours QAT",
            "tfmot QAT",
            "ours step / FP32 step",
            "ours, BN trained folded",
            "tfmot step / FP32 step",
            "accuracy >= tfmot",
            "ratio <= tfmot",
        ],
        formats={
            "FP32 top-1": "{:.2f}",
            "ours QAT": "{:.2f}",
            "tfmot QAT": "{:.2f}",
            "ours step / FP32 step": "{:.2f}",
            "ours, BN trained folded": "{:.2f}",
            "tfmot step / FP32 step": "{:.2f}",
        },
    )
    for name in models:
        model = zoo.load_model(name, compile=False)
        sim = _sim(model, calibration, 8, FIXED)
        with_bn = _sim(model, calibration, 8, FIXED, fold=False)
        qat.simulate_batch_norm_folding(with_bn)
        times = _step_ms(
            {"fp32": model, "qat": sim.model, "qat_bn": with_bn.model},
            train,
            train_labels,
        )
        ours_ratio = times["qat"] / times["fp32"]
        peer = tfmot_qat.run_tfmot_qat(
            name,
            epochs=W8_EPOCHS,
            batch_size=BATCH_SIZE,
            learning_rate=W8_LEARNING_RATE,
            train_limit=QUICK["train"] if quick else None,
        )
        peer_accuracy = 100 * peer["qat_accuracy"]
        if quick:
            # The peer evaluates on all 10,000 test images.
            peer_accuracy = float("nan")
        table.add_row(
            name,
            ours[name]["fp32"],
            ours[name]["qat"],
            peer_accuracy,
            ours_ratio,
            times["qat_bn"] / times["fp32"],
            peer["step_time_ratio"],
            "yes" if ours[name]["qat"] >= peer_accuracy else "no",
            "yes" if ours_ratio <= peer["step_time_ratio"] else "no",
        )
        table.notes.append(
            f"{name}: ours {times['qat']:.1f} (BN trained folded "
            f"{times['qat_bn']:.1f}) / {times['fp32']:.1f} ms per "
            f"step (Keras 3), tfmot {peer['qat_step_ms']:.1f} / "
            f"{peer['fp32_step_ms']:.1f} ms (tf_keras); weights copied to "
            f"tf_keras within {peer['weight_transfer_max_abs_diff']:.1e}."
        )
    table.notes.append(
        "tfmot: quantize_model's default 8-bit scheme (per-channel conv "
        "weights, BN kept unfolded), the same optimizer, learning rate, "
        "batch size, epochs and training images; it cannot quantize "
        "MultiHeadAttention, so the transformer has no tfmot row. Ours: "
        "the BN-folded W8A8 sim (what deploys; the FP32 model keeps its "
        "BNs), and with BN trained folded (simulate_batch_norm_folding, "
        "which keeps batch statistics as tfmot does). Step "
        "time: median of 7 rounds of 20 compiled training steps on fixed "
        "batches, each side against its own FP32 model in the same process."
    )
    return table


def run(quick=False):
    """Runs the suite.

    Args:
        quick: 2,000 training and 1,000 test images, 256 calibration images
            (a smoke run).

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    data = _data(quick)
    models = ["resnet", "mobilenet_v2", "transformer"]
    w8, ours = _w8_table(data, models)
    tables = [w8, _w4_table(data), _tfmot_table(data, models[:2], ours, quick)]
    settings = dict(
        training_images=len(data[0]),
        test_images=len(data[2]),
        calibration_images=len(data[4]),
        batch_size=BATCH_SIZE,
        w8_epochs=W8_EPOCHS,
        w8_learning_rate=W8_LEARNING_RATE,
        w4_epochs=W4_EPOCHS,
        w4_learning_rate=W4_LEARNING_RATE,
    )
    return harness.Report("qat", tables, settings, quick=quick)
