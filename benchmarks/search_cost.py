"""Cost of a paper-setting search at LLaMA-7B shape, and PyTorch decode speed of dense vs subnets.

    python benchmarks/search_cost.py --output $OUT/search_cost        # on the GPU machine
    python benchmarks/search_cost.py --shape tiny --device cpu --generations 1 --population 6

    # the search engine before issue 15 against today's, in one run (a few minutes on one H100/H200):
    python benchmarks/search_cost.py --output $OUT/search_engines --engines reference,current \
        --generations 3 --screening-keep 0.25 --skip-decode --reform-layers 0

Timing depends on shapes, not values, and no large trained checkpoint can be fetched here, so the
model is a **LLaMA-7B-shaped model with random weights**, built directly on the device (fp16 by
default). What is measured:

* the search engine of the pass (``EvolutionarySearch`` + ``PerplexityFitness``: physical surgery of
  every candidate and its perplexity on the fitness windows), with the paper's settings (population
  100, 2048-token windows) for ``--generations`` generations; a whole search (50 generations) is
  extrapolated from the measured per-generation cost (first generation + 49 x the median later one:
  the report says so); with ``--screening-keep F`` the search screens candidates
  (``search.screening_keep``), and ``--plain-generations N`` times N unscreened generations first, in
  the same run, for the ratio. ``--engines reference,current`` runs the same measurement with the engine
  of main at 58474c2 (``benchmarks/reference_engine``: its mutation, repair, keys and one-spec-per-call
  fitness, each candidate built again for its full evaluation) and with today's, one after the other;
  both use today's surgery. Each engine's time per generation is split into the fitness and screening
  calls and the rest (producing candidates);
* decode steps per second in PyTorch (SDPA, KV cache, batch 1) of the dense model and of subnets at
  0.8 and 0.5 inheriting ratio, cut uniformly (the per-layer widths only matter for speed through
  their sum), as the reference a user would otherwise run.

Writes ``<output>.json`` and ``<output>.md``; prints a short table last.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_engine (python benchmarks/search_cost.py)
from shapes import LLAMA_7B, SMOLLM2_135M, TINY  # noqa: E402

SHAPES = {"llama-7b": LLAMA_7B, "smollm2": SMOLLM2_135M, "tiny": TINY}


def build(shape: str, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{"tie_word_embeddings": False, **SHAPES[shape]})
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():  # small random weights keep fp16 activations finite through 32 layers
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    return model.eval()


def measure_search(model, args, generations: int, screening_keep: float, engine: str = "current",
                   screening_method: str = "subnet") -> dict:
    import torch

    from optimum_subnet import SubnetConfig
    from optimum_subnet.families import get_adapter
    from optimum_subnet.pipeline.fitness import PerplexityFitness
    from optimum_subnet.pipeline.stages import search_space

    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    config = SubnetConfig.preset("paper", args.ratio)
    s = config.search.__class__(**{**config.search.__dict__, "population_size": args.population,
                                   "num_mutations": args.population // 2, "num_crossovers": 3 * args.population // 10,
                                   "top_k": max(2, args.population // 10), "generations": generations,
                                   "screening_keep": screening_keep, "screening_method": screening_method})
    config = config.replace(search=s.__dict__)
    generator = torch.Generator().manual_seed(0)
    scores_a = [torch.rand(shape.num_key_value_heads, shape.head_dim, generator=generator) for _ in range(shape.num_layers)]
    scores_m = [torch.rand(shape.intermediate_size, generator=generator) for _ in range(shape.num_layers)]
    windows = torch.randint(3, shape.vocab_size, (args.fitness_windows, args.fitness_seq_len), generator=generator)
    screening = windows[: args.screening_windows, : args.screening_seq_len] if screening_keep < 1 else None
    settings = config.search
    times = []

    def on_progress(generation, evaluations, best):
        times.append((generation, evaluations, time.perf_counter()))

    if engine == "reference":  # one spec per call; nothing built is kept between screening and evaluation
        from reference_engine import EvolutionarySearch, SearchSpace

        space = SearchSpace(shape, scores_a, scores_m, args.ratio, attention_range=s.attention_range,
                            mlp_range=s.mlp_range, head_dim_multiple=s.head_dim_multiple, mlp_multiple=s.mlp_multiple,
                            depth_search=args.ratio <= 0.7, min_depth=round(s.min_depth_ratio * shape.num_layers),
                            tolerance=s.ratio_tolerance)
        fitness = PerplexityFitness(model, adapter, windows, args.fitness_batch_size, screening, keep_built_bytes=0)
        search = EvolutionarySearch(space, settings, fitness.score, seed=0, progress=on_progress,
                                    screen=fitness.screen if screening is not None else None)
    else:
        from optimum_subnet.search import EvolutionarySearch

        space = search_space(shape, config, scores_a, scores_m)
        fitness = PerplexityFitness(model, adapter, windows, args.fitness_batch_size, screening,
                                    masked_screening=screening_method == "masked")
        search = EvolutionarySearch(space, settings, fitness, seed=0, progress=on_progress,
                                    screen=fitness.screen_many if screening is not None else None)
    start = time.perf_counter()
    result = search.run(space.initial())
    seconds = time.perf_counter() - start
    per_generation = [h["seconds"] for h in result.history]
    increments = [b - a for a, b in zip([0.0] + per_generation[:-1], per_generation)]
    steady = statistics.median(increments[1:]) if len(increments) > 1 else increments[0]
    scoring = result.evaluation_seconds + result.screening_seconds
    return {
        "engine": engine,
        "screening_keep": screening_keep,
        "screening_method": screening_method,
        "screening": None if screening is None else {"windows": int(screening.shape[0]),
                                                     "seq_len": int(screening.shape[1]),
                                                     "screenings": result.screenings,
                                                     "seconds": result.screening_seconds},
        "population": args.population, "generations_run": generations, "evaluations": result.evaluations,
        "fitness_windows": args.fitness_windows, "fitness_seq_len": args.fitness_seq_len,
        "fitness_batch_size": args.fitness_batch_size, "seconds": seconds,
        "seconds_per_evaluation": result.seconds_per_evaluation, "seconds_per_generation": increments,
        "fitness_and_screening_seconds": scoring, "outside_fitness_seconds": seconds - scoring,
        "subnets_built": fitness.builds, "subnets_reused": fitness.reused,
        "extrapolated_50_generations_minutes": (increments[0] + 49 * steady) / 60,
        "extrapolation": "first generation + 49 x the median later generation (measured generations only)",
    }


def uniform_spec(shape, ratio: float):
    """A subnet cut uniformly to ``ratio`` of all parameters: every layer keeps the same head size (the
    first pairs of every head) and MLP width (multiples of 8 and 64)."""
    from optimum_subnet.core.spec import SubnetSpec

    spec = SubnetSpec.dense(shape)
    if ratio >= 1.0:
        return spec
    block = (ratio * shape.dense_params() - shape.embedding_params()) / shape.dense_block_params()
    hd = max(8, int(round(shape.head_dim * block / 8)) * 8)
    half = shape.head_dim // 2
    channels = sorted(list(range(hd // 2)) + [c + half for c in range(hd // 2)])
    for layer in spec.layers:
        layer.attention_channels = [channels] * shape.num_key_value_heads
    per_layer = (block * shape.dense_block_params() / shape.num_layers - shape.norm_params()
                 - shape.attention_params(shape.num_key_value_heads, hd))
    width = max(64, int(per_layer / (3 * shape.hidden_size)) // 64 * 64)
    for layer in spec.layers:
        layer.mlp_channels = list(range(width))
    return spec.validate()


def measure_decode(model, args) -> list[dict]:
    import torch

    from optimum_subnet.families import get_adapter
    from optimum_subnet.stages.surgery import extract_subnet

    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    rows = []
    for ratio in (1.0, 0.8, 0.5):
        spec = uniform_spec(shape, ratio)
        sub = extract_subnet(model, spec, adapter) if ratio < 1.0 else model
        ids = torch.randint(3, shape.vocab_size, (1, args.prompt), device=model.device)
        with torch.no_grad():
            out = sub(ids, use_cache=True)

            def steps(n):
                past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
                import copy

                past = copy.deepcopy(past)
                for _ in range(n):
                    step = sub(token, past_key_values=past, use_cache=True)
                    past, token = step.past_key_values, step.logits[:, -1:].argmax(-1)

            steps(4)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            samples = []
            for _ in range(3):
                start = time.perf_counter()
                steps(args.new_tokens)
                if model.device.type == "cuda":
                    torch.cuda.synchronize()
                samples.append(time.perf_counter() - start)
        params = spec.params()
        rows.append({"ratio": ratio, "model": "dense" if ratio == 1.0 else "subnet (subnet_llama)",
                     "inheriting_ratio": spec.inheriting_ratio(), "params": params,
                     "weight_bytes": params * next(model.parameters()).element_size(),
                     "decode_tokens_per_s": args.new_tokens / statistics.median(samples),
                     "head_dim": spec.layers[0].head_dim, "intermediate_size": spec.layers[0].intermediate_size})
        if sub is not model:
            del sub
        if ratio < 1.0 and args.plain_reference:
            # the same widths as a stock LlamaForCausalLM (uniform layers need no subnet_llama): separates the
            # cost of the widths from the cost of subnet_llama's per-layer code (rotary channel selection)
            from transformers import LlamaConfig, LlamaForCausalLM

            layer = spec.layers[0]
            plain_config = LlamaConfig(**{**SHAPES[args.shape], "head_dim": layer.head_dim,
                                          "intermediate_size": layer.intermediate_size}, tie_word_embeddings=False)
            plain_config._attn_implementation = "sdpa"
            with torch.device(model.device):
                plain = LlamaForCausalLM(plain_config).to(next(model.parameters()).dtype).eval()
            with torch.no_grad():
                for p in plain.parameters():
                    if p.dim() == 2:
                        p.normal_(0, 0.02)
                out = plain(ids, use_cache=True)
                sub = plain
                steps(4)
                samples = []
                for _ in range(3):
                    if model.device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    steps(args.new_tokens)
                    if model.device.type == "cuda":
                        torch.cuda.synchronize()
                    samples.append(time.perf_counter() - start)
            rows.append({**rows[-1], "model": "stock LlamaForCausalLM, same widths",
                         "decode_tokens_per_s": args.new_tokens / statistics.median(samples)})
            del plain, sub
    dense = rows[0]
    for row in rows:
        row["speedup"] = row["decode_tokens_per_s"] / dense["decode_tokens_per_s"]
        row["ideal_speedup"] = dense["weight_bytes"] / row["weight_bytes"]
    return rows


def measure_reformation(args, dtype) -> dict:
    """Importance + reformation of a truncated model with the shape's layer widths (``--reform-layers``
    layers, ``--reform-samples`` x 2048-token windows); a whole model is extrapolated per layer (the
    driver runs block by block, so time is linear in layers and memory bounded by one block)."""
    import torch

    from optimum_subnet.families import get_adapter
    from optimum_subnet.stages.importance import compute_importance
    from optimum_subnet.pipeline.stages import search_space
    from optimum_subnet import SubnetConfig
    from optimum_subnet.stages.reformation import reform
    from optimum_subnet.stages.surgery import extract_subnet

    full_layers = SHAPES[args.shape]["num_hidden_layers"]
    shape_args = dict(SHAPES[args.shape], num_hidden_layers=args.reform_layers)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape_args, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    windows = torch.randint(3, shape.vocab_size, (args.reform_samples, args.fitness_seq_len),
                            generator=torch.Generator().manual_seed(1))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    scores = compute_importance(model, adapter, windows, 4, args.device)
    importance_s = time.perf_counter() - start
    attention, mlp, att_alloc, mlp_alloc = scores.for_search("fluctuation", shape)
    space = search_space(shape, SubnetConfig.preset("paper", args.ratio), attention, mlp, att_alloc, mlp_alloc)
    spec = space.to_spec(space.global_initial())
    subnet = extract_subnet(model, spec, adapter)
    start = time.perf_counter()
    result = reform(model, subnet, spec, adapter, windows, 4, args.device)
    reform_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
    return {"layers_run": args.reform_layers, "samples": args.reform_samples, "seq_len": args.fitness_seq_len,
            "importance_seconds": importance_s, "reformation_seconds": reform_s,
            "peak_memory_bytes": peak, "weights_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "extrapolated_full_model_minutes_at_128_samples":
                (importance_s + reform_s) / args.reform_layers * full_layers * (128 / args.reform_samples) / 60,
            "extrapolation": "per layer, linear in layers and in samples (the solves do not grow with samples: an "
                             "upper bound)",
            "method": result.method}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-7b", choices=sorted(SHAPES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--fitness-windows", type=int, default=4)
    parser.add_argument("--fitness-seq-len", type=int, default=2048)
    parser.add_argument("--fitness-batch-size", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--engines", default="current",
                        help="comma-separated: current (today's engine), reference (main at 58474c2, frozen in "
                             "benchmarks/reference_engine); each is measured in turn on the same model")
    parser.add_argument("--screening-keep", type=float, default=1.0,
                        help="successive halving: fraction of each generation fully evaluated (1: the paper)")
    parser.add_argument("--screening-methods", default="subnet",
                        help="comma-separated, today's engine with --screening-keep < 1: subnet (each candidate "
                             "built) and/or masked (the dense model under channel masks, search.screening_method)")
    parser.add_argument("--screening-windows", type=int, default=1)
    parser.add_argument("--screening-seq-len", type=int, default=512)
    parser.add_argument("--plain-generations", type=int, default=0,
                        help="with --screening-keep < 1: also time this many generations without screening, "
                             "in the same run, for the ratio")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--plain-reference", action="store_true",
                        help="also time a stock LlamaForCausalLM with each subnet's (uniform) widths")
    parser.add_argument("--reform-layers", type=int, default=2, help="0: skip the reformation measurement")
    parser.add_argument("--reform-samples", type=int, default=16)
    parser.add_argument("--output", default="search_cost")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    model = build(args.shape, args.device, dtype)
    results = {"shape": args.shape, "dtype": args.dtype, "device": args.device, "random_weights": True,
               "build_seconds": time.perf_counter() - start,
               "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
               "torch": torch.__version__}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not args.skip_decode:
        results["decode"] = measure_decode(model, args)
        output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    if not args.skip_search:
        for engine in args.engines.split(","):
            suffix = "" if engine == "current" else f"_{engine}"
            if args.screening_keep < 1 and args.plain_generations > 0:
                results["search_plain" + suffix] = measure_search(model, args, args.plain_generations, 1.0, engine)
                output.with_suffix(".json").write_text(json.dumps(results, indent=2))
            methods = args.screening_methods.split(",") if engine == "current" and args.screening_keep < 1 else ["subnet"]
            for method in methods:
                key = "search" + suffix + ("" if method == "subnet" else f"_{method}")
                results[key] = measure_search(model, args, args.generations, args.screening_keep, engine, method)
                output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    if args.reform_layers > 0:
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        results["reformation"] = measure_reformation(args, dtype)
        output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    output.with_suffix(".md").write_text(markdown(results))
    sys.stdout.write(output.with_suffix(".md").read_text())
    return 0


def markdown(results: dict) -> str:
    lines = [f"# Search cost and PyTorch decode at {results['shape']} shape ({results['gpu'] or results['device']}, "
             f"{results['dtype']}, random weights: timing depends on shapes only)", "",
             ]
    if results.get("decode"):
        lines += ["| model | inheriting ratio | weights GiB | decode tok/s (PyTorch SDPA, batch 1) | speedup | ideal |",
                  "|---|---:|---:|---:|---:|---:|"]
    for row in results.get("decode", []):
        lines.append(f"| {row.get('model', 'dense' if row['ratio'] == 1.0 else 'subnet')} | {row['inheriting_ratio']:.3f} | "
                     f"{row['weight_bytes'] / 2**30:.2f} | {row['decode_tokens_per_s']:.1f} | {row['speedup']:.2f}x | "
                     f"{row['ideal_speedup']:.2f}x |")
    for key in ("search_plain_reference", "search_reference", "search_plain", "search", "search_masked"):
        search = results.get(key)
        if not search:
            continue
        screening = search.get("screening")
        how = ("no screening (the paper)" if not screening else
               f"screening: every candidate ranked on {screening['windows']} x {screening['seq_len']} tokens "
               f"({screening['screenings']} screenings, {screening['seconds']:.1f} s, "
               f"{'under channel masks' if search.get('screening_method') == 'masked' else 'each built'}), the best "
               f"{search['screening_keep']:.0%} fully evaluated")
        engine = {"reference": "engine of main at 58474c2", "current": "today's engine"}[search.get("engine", "current")]
        split = (f" Outside the fitness and screening calls (producing candidates): "
                 f"{search['outside_fitness_seconds']:.1f} s of {search['seconds']:.1f} s; subnets built "
                 f"{search['subnets_built']}, reused from the screening {search['subnets_reused']}."
                 if "outside_fitness_seconds" in search else "")
        lines += ["", f"Search ({engine}), {how} (population {search['population']}, fitness {search['fitness_windows']} x "
                      f"{search['fitness_seq_len']} tokens, batch {search['fitness_batch_size']}): "
                      f"{search['evaluations']} full evaluations in {search['seconds']:.1f} s over "
                      f"{search['generations_run']} generations ({search['seconds_per_evaluation']:.3f} s each); "
                      f"per generation {', '.join(f'{s:.1f}' for s in search['seconds_per_generation'])} s; "
                      f"50 generations extrapolated: **{search['extrapolated_50_generations_minutes']:.1f} min** "
                      f"({search['extrapolation']})." + split]
    ref = results.get("reformation")
    if ref:
        peak = f", peak memory {ref['peak_memory_bytes'] / 2**30:.1f} GiB" if ref["peak_memory_bytes"] else ""
        lines += ["", f"Importance + reformation, {ref['layers_run']} layers x {ref['samples']} windows of "
                      f"{ref['seq_len']} tokens: {ref['importance_seconds']:.1f} s + {ref['reformation_seconds']:.1f} s"
                      f"{peak}; a whole model at 128 samples extrapolated: "
                      f"**{ref['extrapolated_full_model_minutes_at_128_samples']:.1f} min** ({ref['extrapolation']})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
