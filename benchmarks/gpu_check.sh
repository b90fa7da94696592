#!/usr/bin/env bash
# The GPU check of benchmarks/README.md: seconds per iteration and peak GPU memory of dm, idc, mtt, rtp and hmn
# on CIFAR-10-shaped inputs at IPC 1/10/50, plus one ensemble evaluation; about 8 minutes on one GPU.
# Usage (from the repository root, on a machine with CUDA): bash benchmarks/gpu_check.sh [--device cuda:1]
# With no virtual environment it installs the project into a temporary one first (torch must already be
# importable or installable there).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import condensation" 2>/dev/null; then
    PYTHON=.venv/bin/python
  elif python3 -c "import torch" 2>/dev/null; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the machine's torch, this checkout's library
    PYTHON=python3
  else
    echo "gpu_check: no python with torch found; set PYTHON=/path/to/python" >&2; exit 2
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
exec "$PYTHON" benchmarks/gpu_check.py "$@"
