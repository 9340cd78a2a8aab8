#!/usr/bin/env bash
# What only a GPU shows (issue "Ready for a real cluster"), in one table, in under 8 minutes on
# one CUDA GPU: fp32 vs bf16 quickstart epochs, a killed Train worker resuming on the GPU,
# --resume from a fresh process, and CRAIG's greedy at n = 100k on the GPU against the CPU.
#   bash scripts/gpu_check.sh        # needs the venv (make setup) and Fashion-MNIST
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { make setup >/dev/null; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec timeout 900 "$PY" scripts/gpu_check.py
