#!/usr/bin/env bash
# The single-GPU measurements still owed, one device call each (carry .whl: README "Measurements (to be run on
# the GPU machine)" prepares it). Each part writes JSON + Markdown under $OUT and prints its table last.
#
#   bash benchmarks/gpu/owed.sh primal-profile   # issue 16: why K=0 decodes 2.7x slower than K=2..8 (~2 min)
#   bash benchmarks/gpu/owed.sh offload-auto     # issue 17 (a) again with the cap the guard picks (~4 min)
#   bash benchmarks/gpu/owed.sh offload-30b      # issue 17 (b): 30B shape, 40 layers, memory-mapped (not timed yet)
#   bash benchmarks/gpu/owed.sh ort-decode       # issue 13's second run, per-layer masks at batch 8/32 too (~6 min)
#   bash benchmarks/gpu/owed.sh gemma3-quality   # issue 14: Gemma3-270M side by side at block ratios 0.7 / 0.5 (and
#                                                #   0.9's missing baselines), one process per ratio; needs the models
#                                                #   shipped first: benchmarks/gpu/ship.sh prepare smollm2 gemma3
#   bash benchmarks/gpu/ablation_05.sh "3 4 5 6 7 8 9 10" baseline,reformed   # issue 15 (after ship.sh, see there)
#   bash benchmarks/gpu/owed.sh zeroshot         # issue 15: zero-shot on the seven full validation sets (dense, ours,
#                                                #   FLAP, Wanda-sp at 0.8 / 0.5) and AtMan side by side on 64 BoolQ
#                                                #   prompts, one process each; needs ship.sh prepare ... zeroshot;
#                                                #   resumable (state in $HOME/zs while the machine is warm)
#
# Run on one H200 on 2026-12-07 (results committed): primal-profile, offload-auto, offload-30b, screening.
# ort-decode needs onnxruntime-gpu and onnxruntime-genai first: `bash ../shared/tools/gpu-wheels.sh
# onnxruntime-genai-cuda==0.18.0` here, then one device call per part (shared/docs/GPU.md), the last one
# running `bash .gpuwheels/install.sh && bash benchmarks/gpu/owed.sh ort-decode` (it carries no .whl).
#
# Issue 13's ONNX Runtime CUDA runs need the onnxruntime-gpu wheels (shared/docs/GPU.md), see
# benchmarks/ort_decode.py; issue 17 (c) needs two GPUs (benchmarks/distributed_search.py under torchrun).
set -uo pipefail
if [ "${1:-}" = ort-decode ]; then  # the stack comes from the wheel parts (.gpuwheels/install.sh: $HOME/site)
  python3 -m pip install -q --no-index --no-deps --target "$HOME/site2" "$HOME"/gpuwheels/onnxruntime_gpu-*.whl \
      "$HOME"/gpuwheels/onnxruntime_genai_cuda-*.whl || exit 1
  export PYTHONPATH=$HOME/site:$PWD
else
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=$PYTHONPATH:$HOME/pkgs  # the built-in models and data, where benchmarks/gpu/ship.sh put them
export PYTHONUNBUFFERED=1 OPTIMUM_SUBNET_NO_PROGRESS=1 HF_HUB_OFFLINE=1
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
  ort-decode)  # the stop-19 run again (two runs: the "stable within 5%" bar), per-layer masks at every batch
    timeout 580 python3 benchmarks/ort_decode.py --out "$OUT/ort_decode" --layer-mask-batches 1,8,32 \
        --genai-pythonpath "$HOME/site2" --profile llama7b:dense,llama7b:0.5 --placement tinyllama:dense,tinyllama:0.5 \
        --time-budget 520 ;;
  gemma3-quality)  # same settings as benchmarks/results/quality_gemma3.json; merge with quality.py --merge
    common=(--model gemma3-270m --ratio-of blocks --windows-512 16 --windows-128 32 --lambada-windows 8 --tasks none
            --set data__eval_max_windows=2 search__screening_keep=0.25 search__screening_seq_len=128 --device cuda)
    all=(ours ours@pair flap flap@pair wanda-sp wanda-sp@pair magnitude random)
    timeout 570 python3 benchmarks/quality.py "${common[@]}" --ratios 0.7 --methods "${all[@]}" \
        --output "$OUT/quality_gemma3_07" > "$OUT/log_07.txt" 2>&1 &
    timeout 570 python3 benchmarks/quality.py "${common[@]}" --ratios 0.5 --methods "${all[@]}" \
        --output "$OUT/quality_gemma3_05" > "$OUT/log_05.txt" 2>&1 &
    timeout 570 python3 benchmarks/quality.py "${common[@]}" --ratios 0.9 \
        --methods flap@pair wanda-sp@pair magnitude random --output "$OUT/quality_gemma3_09" > "$OUT/log_09.txt" 2>&1 &
    wait; tail -5 "$OUT"/log_*.txt; cat "$OUT"/quality_gemma3_0*.md | grep -A12 "wiki@512" ;;
  zeroshot)  # quality.md's windows and settings; merge: quality.py --merge zs_ours_0.8.json (the dense entry) ...
    mkdir -p "$HOME/zs"
    common=(--windows-512 64 --windows-128 128 --lambada-windows 32 --set data__eval_max_windows=8 --tasks all
            --zero-shot-batch-size 64 --zero-shot-ratios 0.8 0.5 --device cuda --resume --checkpoints "$HOME/zs/ckpt")
    dense=--dense-zero-shot
    for job in "ours 0.8" "ours 0.5" "flap 0.8" "flap 0.5" "wanda-sp 0.8" "wanda-sp 0.5"; do
      set -- $job
      OMP_NUM_THREADS=2 timeout 510 python3 benchmarks/quality.py "${common[@]}" --methods "$1" --ratios "$2" $dense \
          --output "$HOME/zs/zs_$1_${2/./}" > "$HOME/zs/log_$1_$2.txt" 2>&1 &  # zs_ours_08 (a dot would be a suffix)
      dense=--no-dense-zero-shot
    done
    faith=(benchmarks/faithfulness_side_by_side.py --prompts 64 --device cuda)
    for method in ours flap wanda-sp; do  # one process (and work folder: no shared files) per method
      OMP_NUM_THREADS=2 timeout 500 python3 "${faith[@]}" --methods "$method" --work "$HOME/zs/faith_$method" \
          --output "$HOME/zs/faith_$method/out" > "$HOME/zs/log_faith_$method.txt" 2>&1 &
    done
    wait
    mkdir -p "$HOME/zs/faith" && cp "$HOME"/zs/faith_*/*.json "$HOME/zs/faith/"  # all finished entries + dense maps
    timeout 30 python3 "${faith[@]}" --work "$HOME/zs/faith" --output "$HOME/zs/faithfulness_smollm2" \
        > "$HOME/zs/log_faith.txt" 2>&1  # every entry done: only writes the table (a cut method shows up missing)
    (cd "$HOME/zs" && tar czf "$OUT/zeroshot.tgz" --exclude=ckpt .)  # one file: a call returns few
    for f in "$HOME"/zs/log_*.txt; do echo "== $f"; tail -n 2 "$f"; done; grep -h -A4 "^| model" "$HOME"/zs/*.md ;;
  *)
    echo "usage: bash benchmarks/gpu/owed.sh primal-profile|offload-auto|offload-30b|screening|ort-decode|gemma3-quality|zeroshot" >&2
    exit 2 ;;
esac
