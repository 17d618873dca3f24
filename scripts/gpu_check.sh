#!/usr/bin/env bash
# The GPU check (issue 18): parity of every option combination on the CUDA device against
# CPU float64 (within 1e-4), bf16/fp16 autocast, and the benchmarks (tokens/s, peak memory,
# MFU against a CUDA GEMM measured in the same run, the equal-size Llama beside ours).
# Runs in the hf environment in under 5 minutes on one GPU:
#   bash scripts/gpu_check.sh [extra gpu_check options, e.g. --length 16384]
# Writes gpu-check.md (or $OUT/gpu-check.md when OUT is set, as on the device machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venvs/hf/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
REPORT="${OUT:-$ROOT}/gpu-check.md"
exec timeout 300 "$PYTHON" -m mega_plugin.benchmarks.gpu_check --device "${DEVICE:-cuda}" --output "$REPORT" "$@"
