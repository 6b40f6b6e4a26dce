#!/usr/bin/env bash
# GPU-machine command (after the wheel parts, see shared/docs/GPU.md): the ONNX Runtime attention benchmark.
set -uo pipefail
export PYTHONPATH=$HOME/site:$PWD/src PYTHONUNBUFFERED=1 OPTIMUM_SUBNET_NO_PROGRESS=1 HF_HUB_OFFLINE=1
log=$OUT/session.log
timeout 560 python3 benchmarks/ort_attention.py --device cuda --shape smollm2 --output $OUT/ort_smollm2 \
    --variants per-head shared16 --batch-sizes 1 8 --prompt-lengths 128 1024 --new-tokens 32 --repeats 3 >>$log 2>&1
echo "exit $?"
cat $OUT/ort_smollm2.md 2>/dev/null
grep -E "fusion:|Error|error" $log | tail -8
