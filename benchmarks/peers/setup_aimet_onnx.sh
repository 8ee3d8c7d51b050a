#!/usr/bin/env bash
# Creates the aimet-onnx virtual environment that benchmarks/suites/aimet_onnx.py
# runs benchmarks/peers/aimet_onnx_adaround.py in. It is separate from the
# project's environment and no dependency of aimet_keras.
#
# Usage: benchmarks/peers/setup_aimet_onnx.sh [VENV]   (default
# /work/venvs/aimet-onnx). About 1.9 GB. Then point the suite at it with
# AIMET_ONNX_PYTHON=VENV/bin/python when VENV is not the default.
#
# aimet-onnx is installed without its dependencies: its full list pulls in
# CUDA builds and packages only some of its modules use (onnx2torch, for
# AdaScale); the list below is what quantsim, batch_norm_fold and adaround
# import. torch 2.13.0 resolves to the CPU wheel (2.13.0+cpu).
set -euo pipefail

VENV="${1:-/work/venvs/aimet-onnx}"

python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install torch==2.13.0
if "$PIP" list 2>/dev/null | grep '^nvidia-' >/dev/null; then
  echo "torch pulled CUDA packages; install the CPU wheel instead:" >&2
  echo "  $PIP install torch==2.13.0 --index-url" \
    "https://download.pytorch.org/whl/cpu" >&2
  exit 1
fi
"$PIP" install --no-deps aimet-onnx==2.42.0
"$PIP" install Jinja2 PyYAML 'bokeh>=3.3.0' 'hvplot>=0.10.0' jsonschema \
  numpy onnx 'onnx_ir>=0.1.16' 'onnxruntime>=1.19' 'onnxscript>=0.4.0' osqp \
  pandas psutil pybind11 scikit-learn scipy tqdm
"$VENV/bin/python" -c "import aimet_onnx; print('aimet-onnx', aimet_onnx.__version__)"
