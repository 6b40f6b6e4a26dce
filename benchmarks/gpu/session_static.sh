#!/usr/bin/env bash
# GPU-machine command (after the wheel parts): fused vs fused + static in-place KV cache, dense vs subnet.
#   bash benchmarks/gpu/session_static.sh SHAPE TIMEOUT_S
set -uo pipefail
export PYTHONPATH=$HOME/site:$PWD/src PYTHONUNBUFFERED=1 OPTIMUM_SUBNET_NO_PROGRESS=1 HF_HUB_OFFLINE=1
shape=${1:-smollm2}
timeout ${2:-500} python3 benchmarks/ort_attention.py --device cuda --shape $shape --output $OUT/ort_static_$shape \
    --variants shared16 --modes fused fused-static --batch-sizes 1 8 --prompt-lengths 128 1024 \
    --new-tokens 32 --repeats 3 >>$OUT/session_$shape.log 2>&1
echo "exit $?"
cat $OUT/ort_static_$shape.md 2>/dev/null
grep -E "Error|error" $OUT/session_$shape.log | tail -5
