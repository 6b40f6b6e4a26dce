"""onnxruntime-genai's decode speed on a folder its model builder wrote (run in genai's own environment).

    PYTHONPATH=$HOME/site2 python3 benchmarks/genai_decode.py --model GENAI_FOLDER --batches 1 \\
        --prompts 128 --new-tokens 128 --repeats 2 --cuda-graph 1 --json result.json

Called by ``benchmarks/ort_decode.py`` as a subprocess (genai needs transformers 5 for its builder and its
own onnxruntime-gpu; see ``../shared/docs/GPU.md``). Times, per (batch, prompt): ``append_tokens`` of a
random prompt (prefill) and each ``generate_next_token`` after the first (decode steps), greedy, after one
warm-up generation, as genai's own ``benchmark_e2e.py`` does. ``--cuda-graph`` sets the CUDA provider's
``enable_cuda_graph`` in ``genai_config.json`` (genai refuses batch > 1 prompts with it: run those with 0).
Writes one JSON list of rows; a configuration that fails is a row with its error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from pathlib import Path


def set_cuda_graph(folder: Path, enabled: bool) -> None:
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {}).setdefault("provider_options", [])
    cuda = next((entry["cuda"] for entry in options if "cuda" in entry), None)
    if cuda is None:  # a CPU build (a test of this script): leave its providers alone
        return
    cuda["enable_cuda_graph"] = "1" if enabled else "0"
    path.write_text(json.dumps(config, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batches", default="1")
    parser.add_argument("--prompts", default="128")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cuda-graph", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    import numpy as np

    try:
        import onnxruntime

        onnxruntime.preload_dlls()
    except Exception:  # noqa: BLE001 - older builds: genai finds the libraries itself
        pass
    import onnxruntime_genai as og

    folder = Path(args.model)
    set_cuda_graph(folder, bool(args.cuda_graph))
    rows = []
    out = Path(args.json)
    model = og.Model(str(folder))
    rng = np.random.default_rng(0)
    for batch in [int(b) for b in args.batches.split(",")]:
        for prompt in [int(p) for p in args.prompts.split(",")]:
            row = {"engine": "onnxruntime-genai", "version": getattr(og, "__version__", "?"), "batch": batch,
                   "prompt": prompt, "new_tokens": args.new_tokens, "cuda_graph": bool(args.cuda_graph)}
            try:
                tokens = rng.integers(3, args.vocab, (batch, prompt)).astype(np.int32)
                params = og.GeneratorParams(model)
                params.set_search_options(do_sample=False, max_length=prompt + args.new_tokens + 2,
                                          batch_size=batch)
                prefill, steps = [], []
                for repeat in range(args.repeats + 1):  # the first is the warm-up (and the graph capture)
                    generator = og.Generator(model, params)
                    start = time.perf_counter()
                    generator.append_tokens(tokens)
                    appended = time.perf_counter()
                    generator.generate_next_token()  # samples the prompt's token, runs the first decode step
                    first = time.perf_counter()
                    for _ in range(args.new_tokens - 1):
                        generator.generate_next_token()
                    end = time.perf_counter()
                    del generator
                    if repeat:
                        prefill.append(appended - start)
                        steps.append((end - first) / (args.new_tokens - 1))
                row.update(prefill_ms_all=[1000 * p for p in prefill], ms_per_step_all=[1000 * s for s in steps],
                           tokens_per_s_all=[batch / s for s in steps],
                           prefill_ms=1000 * statistics.median(prefill),
                           decode_tokens_per_s=batch / statistics.median(steps))
                tok = row["tokens_per_s_all"]
                row["spread"] = (max(tok) - min(tok)) / statistics.median(tok) if len(tok) > 1 else 0.0
            except Exception as e:  # noqa: BLE001 - one failing configuration must not lose the others
                row["error"] = f"{type(e).__name__}: {e}"
                row["traceback"] = traceback.format_exc()[-2000:]
            rows.append(row)
            out.write_text(json.dumps(rows, indent=2))
            print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
