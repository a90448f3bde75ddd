#!/usr/bin/env bash
# The trainer on one GPU beside PyTorch, in under 8 minutes: tokens/s, model FLOP/s and MFU (against the
# bf16 matmul peak measured in the same run) for d=512..2048 at sequence 1024-2048; the same model in
# PyTorch (torch.compile, SDPA, bf16 autocast) when torch is importable. Runs from the working tree, no
# install: PYTHONPATH points at it. Each framework runs in its own process (their allocators would fight
# over the device), under its own time limit.
#
#   bash benchmarks/gpu_check.sh           # on a GPU machine
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # CPU-sized shapes: checks the script's logic only
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX takes memory as it needs it, so nothing is held back from the torch process that follows.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
tiny=()
if [ -n "${GPU_CHECK_TINY:-}" ]; then tiny=(--tiny); fi
budget="${GPU_CHECK_BUDGET_S:-180}"     # seconds per framework (two parts, each killed at +40 s: under 8 min in all); the sizes left when it runs low are skipped
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
start=$SECONDS
echo "gpu_check: $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
timeout "$((budget + 40))" python3 benchmarks/bench_gpu.py --part jax --budget-s "$budget" "${tiny[@]}" > "$out/jax.json" \
  || echo "gpu_check: the JAX part stopped with status $?"
timeout "$((budget + 40))" python3 benchmarks/bench_gpu.py --part torch --budget-s "$budget" "${tiny[@]}" > "$out/torch.json" \
  || echo "gpu_check: the torch part stopped with status $?"
python3 benchmarks/bench_gpu.py --part report "${tiny[@]}" "$out/jax.json" "$out/torch.json"
echo "gpu_check wall_s=$((SECONDS - start))"
