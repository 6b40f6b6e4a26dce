#!/usr/bin/env bash
# Issue 15: the 0.5 search on SmolLM2-135M, today's engine against the engine before issue 15, for several
# seeds at once (one process per seed; the GPU is mostly idle under one). After ship.sh receive (smollm2):
#   source benchmarks/gpu/ship.sh env && bash benchmarks/gpu/ablation_05.sh "3 4 5 6 7 8 9 10" [variants]
# Writes $OUT/ablation_05.tgz (every seed's JSON + Markdown, its work folder's results) and prints each seed's table.
set -uo pipefail
seeds=${1:-"3 4 5 6 7 8 9 10"}
variants=${2:-baseline,reference_engine}
limit=${LIMIT_S:-540}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "from optimum_subnet.loading import load_model; load_model('smollm2-135m')" || exit 1
mkdir -p "$HOME/abl"
for s in $seeds; do
  timeout "$limit" python3 benchmarks/generalization_ablation.py --ratios 0.5 --seed "$s" --variants "$variants" \
      --device cuda --work "$HOME/abl/work-s$s" --output "$HOME/abl/generalization_ablation_05_s$s" \
      > "$HOME/abl/log-s$s.txt" 2>&1 &
done
wait
# compressed, without the search states (8 seeds x 4 variants of them passed the 16 MiB a returned file may have)
cd "$HOME/abl" && tar czf "$OUT/ablation_05.tgz" generalization_ablation_05_s* log-s*.txt work-s*/r0.5/prefix.json \
    work-s*/r0.5/*.stages.json
for s in $seeds; do echo "== seed $s"; tail -3 "log-s$s.txt"; grep -E "^\| 0.5" "generalization_ablation_05_s$s.md" 2>/dev/null | cut -c1-200; done
