#!/usr/bin/env bash
# The single-GPU measurements still owed, one device call each (carry .whl: README "Measurements (to be run on
# the GPU machine)" prepares it). Each part writes JSON + Markdown under $OUT and prints its table last.
#
#   bash benchmarks/gpu/owed.sh primal-profile   # issue 16: why K=0 decodes 2.7x slower than K=2..8 (~2 min)
#   bash benchmarks/gpu/owed.sh offload-auto     # issue 17 (a) again with the cap the guard picks (~4 min)
#   bash benchmarks/gpu/owed.sh offload-30b      # issue 17 (b): 30B shape, 40 layers, memory-mapped (not timed yet)
#   bash benchmarks/gpu/owed.sh screening        # issue 15: built vs masked screening at 7B paper settings (~5 min)
#
# Issue 13's ONNX Runtime CUDA runs need the onnxruntime-gpu wheels (shared/docs/GPU.md), see
# benchmarks/ort_decode.py; issue 17 (c) needs two GPUs (benchmarks/distributed_search.py under torchrun).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OPTIMUM_SUBNET_NO_PROGRESS=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
case "${1:-}" in
  primal-profile)
    timeout 560 python3 benchmarks/primal_gpu.py --package --package-profile --package-counts 0 2 0 \
        --seq-lens 1024 --primal-counts 0 --model-context 2048 --package-contexts 2048 --out "$OUT/primal_profile" ;;
  offload-auto)  # --limit-gib auto is the default: the guard's estimate + 25%
    timeout 560 python3 benchmarks/offload.py --output "$OUT/offload_7b_auto" ;;
  offload-30b)
    timeout 580 python3 benchmarks/offload.py --shape llama-30b --layers 40 --phases offload --generations 0 \
        --forward-repeats 1 --memory-map /tmp/llama30b --output "$OUT/offload_30b" ;;
  screening)  # does screening under channel masks (no subnet built) bring a generation near 12 s?
    timeout 560 python3 benchmarks/search_cost.py --output "$OUT/screening_methods" --engines current \
        --generations 2 --screening-keep 0.25 --screening-methods subnet,masked --skip-decode --reform-layers 0 ;;
  *)
    echo "usage: bash benchmarks/gpu/owed.sh primal-profile|offload-auto|offload-30b|screening" >&2; exit 2 ;;
esac
