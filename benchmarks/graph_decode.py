"""Decode speed with a static KV cache and CUDA-graph replay (PyTorch), dense vs subnets, in one run.

    PYTHONPATH=$PWD python benchmarks/graph_decode.py --output $OUT/graph_decode      # on the GPU machine
    PYTHONPATH=$PWD python benchmarks/graph_decode.py --shape tiny --device cpu --dtype float32 --ratios 0.8 0.6 \
        --output /tmp/g   # (0.5 is below the tiny shape's smallest subnet)

A LLaMA-7B-shaped model with random weights (fp16; timing depends on shapes, not values) and subnets
cut from it at 0.8 and 0.5 of its parameters: uniform ones (every layer the same widths) and
heterogeneous ones (the search space's global initial subnet from random scores: per-layer widths
differ, and per-KV-head channel masks). Each is decoded greedily with
``optimum_subnet.runtime.static_decoding.GreedyStaticDecoder`` eagerly and with each decode step replayed from a CUDA
graph, at the batch sizes and prompt lengths asked; prefill of one prompt is timed separately. The
bandwidth floor is the weight bytes over the device copy rate measured in the same run.

Writes ``<output>.json`` and ``<output>.md``; prints the table last.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

LOG = logging.getLogger("graph_decode")


def models_to_measure(model, args):
    from search_cost import uniform_spec

    from optimum_subnet import SubnetConfig
    from optimum_subnet.families import get_adapter
    from optimum_subnet.pipeline.stages import search_space
    import torch

    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    yield "dense", None, model
    generator = torch.Generator().manual_seed(0)
    scores_a = [torch.rand(shape.num_key_value_heads, shape.head_dim, generator=generator)
                for _ in range(shape.num_layers)]
    scores_m = [torch.rand(shape.intermediate_size, generator=generator) for _ in range(shape.num_layers)]
    from optimum_subnet.stages.surgery import extract_subnet

    for ratio in args.ratios:
        spec = uniform_spec(shape, ratio)
        yield f"uniform {ratio}", spec, extract_subnet(model, spec, adapter)
        if not args.skip_heterogeneous:
            space = search_space(shape, SubnetConfig.preset("paper", ratio), scores_a, scores_m,
                                 scores_a, scores_m)
            spec = space.to_spec(space.global_initial())
            yield f"heterogeneous {ratio}", spec, extract_subnet(model, spec, adapter)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.5])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompts", type=int, nargs="+", default=[128])
    parser.add_argument("--long-prompt", type=int, default=2048, help="also batch 1 at this prompt (0: no)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-heterogeneous", action="store_true")
    parser.add_argument("--skip-eager", action="store_true", help="only the CUDA-graph decode")
    parser.add_argument("--output", default="graph_decode")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch
    from search_cost import SHAPES, build

    from optimum_subnet.runtime.static_decoding import GreedyStaticDecoder

    if args.shape not in SHAPES:
        raise SystemExit(f"error: unknown shape {args.shape!r}; use one of {', '.join(sorted(SHAPES))}")
    dtype = getattr(torch, args.dtype)
    model = build(args.shape, args.device, dtype)
    device = next(model.parameters()).device
    from ort_decode import copy_rate  # the same measurement as the ONNX Runtime decode benchmark

    bandwidth = copy_rate(device)["bytes_per_s"]
    results = {"shape": args.shape, "dtype": args.dtype, "random_weights": True, "new_tokens": args.new_tokens,
               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "torch": torch.__version__,
               "copy_bandwidth_bytes_per_s": bandwidth, "rows": []}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = [(b, p) for p in args.prompts for b in args.batch_sizes]
    if args.long_prompt:
        settings.append((1, args.long_prompt))
    modes = ["graph"] if device.type == "cuda" else []
    if not args.skip_eager or not modes:
        modes.append("eager")
    for name, spec, sub in models_to_measure(model, args):
        params = sum(p.numel() for p in sub.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in sub.parameters())
        row = {"model": name, "params": params, "weight_bytes": weight_bytes,
               "inheriting_ratio": params / sum(p.numel() for p in model.parameters()), "decode": [],
               "head_dims": None if spec is None else sorted({layer.head_dim for layer in spec.layers}),
               "intermediate_sizes": None if spec is None else [min(layer.intermediate_size for layer in spec.layers),
                                                                max(layer.intermediate_size for layer in spec.layers)]}
        generator = torch.Generator().manual_seed(1)
        reference_tokens = None
        for batch, prompt in settings:
            ids = torch.randint(3, model.config.vocab_size, (batch, prompt), generator=generator).to(device)
            for mode in modes:
                decoder = GreedyStaticDecoder(sub, prompt + args.new_tokens + 1, use_graph=mode == "graph")
                decode, prefill = [], []
                for _ in range(args.repeats):
                    tokens = decoder.generate(ids, args.new_tokens)
                    decode.append(decoder.timing["decode_s"] / decoder.timing["decode_steps"])
                    prefill.append(decoder.timing["prefill_s"])
                entry = {"mode": mode, "batch": batch, "prompt": prompt,
                         "step_ms": 1e3 * statistics.median(decode), "prefill_ms": 1e3 * statistics.median(prefill),
                         "tokens_per_s": batch / statistics.median(decode)}
                if batch == 1 and prompt == settings[0][1]:
                    if reference_tokens is None:
                        reference_tokens = tokens
                    else:  # graph vs eager on the same prompt: the same greedy tokens?
                        entry["tokens_equal_other_mode"] = bool(torch.equal(tokens, reference_tokens))
                row["decode"].append(entry)
                LOG.info("%s %s b=%d p=%d: %.2f ms/step, %.1f tok/s, prefill %.1f ms", name, mode, batch, prompt,
                         entry["step_ms"], entry["tokens_per_s"], entry["prefill_ms"])
                del decoder
        results["rows"].append(row)
        if sub is not model:
            del sub
        if device.type == "cuda":
            torch.cuda.empty_cache()
        output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(results))
    sys.stdout.write(output.with_suffix(".md").read_text())
    return 0


def markdown(results: dict) -> str:
    rows = results["rows"]
    dense = rows[0]
    bw = results["copy_bandwidth_bytes_per_s"]
    lines = [f"# Static-cache greedy decode, dense vs subnets ({results['shape']} shape, {results['dtype']}, "
             f"{results['gpu'] or 'cpu'}, random weights)", "",
             f"`GreedyStaticDecoder`: transformers' StaticCache (per-layer shapes), a fixed 4D mask, each decode step "
             f"replayed from a CUDA graph (`graph`) or run eagerly (`eager`); {results['new_tokens']} new tokens, "
             "medians of repeated runs, warm-up steps excluded. Speedup = subnet tok/s / dense tok/s in the same "
             "setting; ideal = dense weight bytes / subnet weight bytes."
             + (f" Device copy rate {bw / 1e12:.2f} TB/s; floor = that rate / weight bytes." if bw else ""), "",
             "| model | ratio | GiB | mode | batch | prompt | ms/step | tok/s | floor tok/s | % floor | speedup | ideal | "
             "speedup / ideal | prefill ms | prefill speedup |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {(d["mode"], d["batch"], d["prompt"]): d for d in dense["decode"]}
    for row in rows:
        ideal = dense["weight_bytes"] / row["weight_bytes"]
        for d in row["decode"]:
            ref = base[(d["mode"], d["batch"], d["prompt"])]
            floor = bw / row["weight_bytes"] * d["batch"] if bw else None
            floor_text = "-" if floor is None else f"{floor:.0f}"
            share = "-" if floor is None else f"{100 * d['tokens_per_s'] / floor:.0f}%"
            speedup = d["tokens_per_s"] / ref["tokens_per_s"]
            lines.append(
                f"| {row['model']} | {row['inheriting_ratio']:.3f} | {row['weight_bytes'] / 2**30:.2f} | {d['mode']} | "
                f"{d['batch']} | {d['prompt']} | {d['step_ms']:.2f} | {d['tokens_per_s']:.1f} | "
                f"{floor_text} | {share} | {speedup:.2f}x | {ideal:.2f}x | "
                f"{speedup / ideal:.2f} | {d['prefill_ms']:.1f} | {ref['prefill_ms'] / d['prefill_ms']:.2f}x |")
    equal = [(r["model"], d["tokens_equal_other_mode"]) for r in rows for d in r["decode"] if "tokens_equal_other_mode" in d]
    if equal:
        lines += ["", "Greedy tokens, graph vs eager (batch 1, first prompt): "
                  + ", ".join(f"{m}: {'equal' if e else 'DIFFERENT'}" for m, e in equal) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
