#!/usr/bin/env bash
# Pipeline-level check, the way a deployment pipeline drives the plugin: search a subnet of the
# built-in model through optimum-cli, evaluate it, and check the report. Small settings (~3 min on CPU).
#   bash integration/search_and_evaluate.sh [WORKDIR]
set -euo pipefail
work="${1:-$(mktemp -d)}"
optimum-cli subnet search --model smollm2-135m --target-ratio 0.8 --output "$work/subnet" --overwrite \
    --preset fast --generations 1 --population 4 --num-samples 16 --seq-len 128 \
    --eval-seq-len 128 --eval-max-windows 8 --faithfulness-prompts 2
optimum-cli subnet evaluate --model "$work/subnet" --seq-len 128 --max-windows 8 --output "$work/eval.json" --overwrite
python - "$work" <<'PY'
import json, sys
work = sys.argv[1]
report = json.load(open(f"{work}/subnet/report.json"))
evaluation = json.load(open(f"{work}/eval.json"))
assert abs(report["subnet"]["inheriting_ratio"] - 0.8) <= 0.008, report["subnet"]["inheriting_ratio"]
assert evaluation["params"] == report["subnet"]["params"]
assert report["faithfulness"]["prompts"] == 2 and -1 <= report["faithfulness"]["spearman"] <= 1
print("integration OK:", report["subnet"]["ppl"], evaluation["ppl"])
PY
