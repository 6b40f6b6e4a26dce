#!/usr/bin/env bash
# One GPU-machine command for issues 3 and 7 (shared/docs/GPU.md: the wheel parts precede it).
# Writes results under $OUT (at most 8 files come back) and one combined log; prints short tables last.
set -uo pipefail
export PYTHONPATH=$HOME/site:$PWD/src PYTHONUNBUFFERED=1 OPTIMUM_SUBNET_NO_PROGRESS=1 HF_HUB_OFFLINE=1
log=$OUT/session.log
python3 - >>$log 2>&1 <<'PY'
import onnxruntime as ort, torch, transformers, optimum
ort.preload_dlls()
print("ort", ort.__version__, ort.get_available_providers())
print("torch", torch.__version__, torch.cuda.get_device_name(), "transformers", transformers.__version__)
PY
echo "== gpu tests" >>$log
timeout 180 python3 -m pytest -q -p no:cacheprovider -m gpu tests/unit/test_gpu.py >>$log 2>&1
echo "== ort attention benchmark" >>$log
timeout 260 python3 benchmarks/ort_attention.py --device cuda --shape smollm2 --output $OUT/ort_smollm2 \
    --batch-sizes 1 8 --prompt-lengths 128 1024 --new-tokens 64 --repeats 5 >>$log 2>&1
echo "== atman memory benchmark" >>$log
timeout 150 python3 benchmarks/atman_memory.py --output $OUT/atman_smollm2 >>$log 2>&1
grep -E "passed|failed|error" $log | tail -5
cat $OUT/ort_smollm2.md 2>/dev/null
tail -14 $log
