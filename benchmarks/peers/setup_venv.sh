#!/usr/bin/env bash
# Creates the DeepSparse peer's own venv (it pins onnx<1.15 and numpy<2, which must stay out of the
# test environment). deepsparse 1.9.0 is an empty end-of-life stub, so 1.8.0 is pinned; its wheels
# exist for CPython 3.8-3.11 only.
# It also creates VENV_DIR-export: a venv over this Python's own packages (torch, transformers) that adds
# only `onnx`, which torch.onnx.export needs and the test environment does not carry.
# usage: benchmarks/peers/setup_venv.sh [VENV_DIR]   (default /work/venvs/deepsparse)
set -euo pipefail
VENV="${1:-/work/venvs/deepsparse}"
PY="${PYTHON311:-python3.11}"
export NM_DISABLE_ANALYTICS=1   # DeepSparse sends usage analytics on import otherwise
if ! command -v "$PY" >/dev/null; then
  echo "setup_venv.sh: $PY not found; DeepSparse 1.8.0 needs CPython 3.8-3.11 (set PYTHON311=...)" >&2
  exit 2
fi
"$PY" -c 'import sys; assert (3, 8) <= sys.version_info[:2] <= (3, 11), sys.version' || {
  echo "setup_venv.sh: $PY is not CPython 3.8-3.11" >&2; exit 2; }
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "deepsparse==1.8.0" onnxruntime "onnx<1.15" "numpy<2"
"$VENV/bin/python" -c 'import os; os.environ["NM_DISABLE_ANALYTICS"]="1"; import deepsparse, onnxruntime, numpy; print("deepsparse", deepsparse.__version__, "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)'
EXPORT="$VENV-export"
HOSTPY="${HOSTPYTHON:-python3}"
if [ ! -x "$EXPORT/bin/python" ]; then
  "$HOSTPY" -m venv --system-site-packages "$EXPORT"
fi
# numpy and torch come from the host Python and stay as they are (pip sees them installed)
"$EXPORT/bin/python" -m pip install --quiet onnx
"$EXPORT/bin/python" -c 'import onnx, torch, numpy; print("export venv: onnx", onnx.__version__, "torch", torch.__version__, "numpy", numpy.__version__)'
echo "venvs ready: $VENV $EXPORT"
