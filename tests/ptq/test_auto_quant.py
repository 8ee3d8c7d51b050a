"""AutoQuant: steps in AIMET's order, stopping at the target."""

import numpy as np

from aimet_keras import zoo
from aimet_keras.ptq import auto_quant


def test_w4_runs_every_step_and_keeps_the_best(tmp_path):
    model = zoo.load_model("resnet", compile=False)
    calibration = zoo.load_fashion_mnist_slice("calibration")[0][:256]
    images, labels = zoo.load_fashion_mnist_slice("test")

    def top1(m):
        predictions = m.predict(images[:300], verbose=0).argmax(-1)
        return float(np.mean(predictions == labels[:300]))

    result = auto_quant(
        model,
        calibration,
        top1,
        allowed_accuracy_drop=0.0,  # only FP32 accuracy stops it early
        default_param_bw=4,
        quant_scheme="tf",
        results_dir=tmp_path,
        adaround_iterations=30,
        verbose=False,
    )
    steps = [entry["step"] for entry in result.report]
    assert steps[0] == "batch_norm_fold"
    if result.report[0]["drop"] > 0:
        assert steps[1] == "cross_layer_equalization"
    assert result.accuracy == max(e["accuracy"] for e in result.report)
    assert result.encodings_path.is_file()
    assert (
        result.step
        == steps[[e["accuracy"] for e in result.report].index(result.accuracy)]
    )
