"""Only the ``qat`` suite's side-by-side with tfmot (about 15 minutes).

Our W8A8 QAT of the ResNet and MobileNetV2 (its table from the ``qat``
suite) and the comparison with tensorflow-model-optimization: accuracy and
training step time over FP32 step time. For re-measuring the comparison
without the 40-minute W4A4 table.
"""

from benchmarks import harness
from benchmarks.suites import qat

MODELS = ["resnet", "mobilenet_v2"]


def run(quick=False):
    """Runs the suite.

    Args:
        quick: as the ``qat`` suite's quick mode.

    Returns:
        A :class:`benchmarks.harness.Report`.
    """
    data = qat._data(quick)
    w8, ours = qat._w8_table(data, MODELS)
    tables = [w8, qat._tfmot_table(data, MODELS, ours, quick)]
    settings = dict(
        training_images=len(data[0]),
        test_images=len(data[2]),
        calibration_images=len(data[4]),
        batch_size=qat.BATCH_SIZE,
        epochs=qat.W8_EPOCHS,
        learning_rate=qat.W8_LEARNING_RATE,
    )
    return harness.Report("qat_tfmot", tables, settings, quick=quick)
