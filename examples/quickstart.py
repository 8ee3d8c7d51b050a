"""Quickstart: quantize a shipped model to W8A8 and export it for devices.

    python examples/quickstart.py [--zoo-model resnet] [--out DIR]

The same as ``aimet-keras demo``: loads a trained Fashion-MNIST model and the
shipped data slice, folds its batch norms, builds a ``QuantizationSimModel``
with the TFLite-style config (8-bit per-channel symmetric weights, 8-bit
asymmetric activations after fused Conv+ReLU), calibrates it with the
``tf_enhanced`` scheme on 1,000 training images and evaluates FP32 and
simulated W8A8 on 2,000 test images. Then it exports to ``--out``: the FP32
SavedModel, the simulated ``.keras`` model and the AIMET 0.6.1 encodings; an
integer TFLite model and a QDQ ONNX model on the sim's grids (plus the FP32
ONNX model and its encodings for Qualcomm's converter), and runs both on the
same test images. It prints every accuracy and size, and writes
``summary.json`` beside them. ``aimet-keras --help`` lists the flags.
"""

import sys

from aimet_keras import cli

if __name__ == "__main__":
    cli.run([sys.argv[0], "demo", *sys.argv[1:]])
