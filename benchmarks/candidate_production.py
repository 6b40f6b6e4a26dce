"""Cost of producing search candidates (no model): today's engine against the one before issue 15.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/candidate_production.py            # LLaMA-7B shape, paper settings
    python benchmarks/candidate_production.py --shape tiny --generations 2 --population 8  # a smoke test

A search generation is: produce candidates (mutation, crossover, budget repair, content keys), turn
each into a spec, and score the specs. This measures everything but the scoring, at the model's
*shape* only: importance scores are random and the fitness is a synthetic landscape (the importance,
under another random draw, of the channels a candidate drops), which costs a few milliseconds and is
timed apart. Both engines run the same settings (the paper's: population 100, 50 mutations, 30
crossovers, top 10) for ``--generations`` generations, one after the other in this process;
``reference`` is the engine of main at 58474c2, frozen in ``benchmarks/reference_engine``.

Writes ``<output>.json`` and ``<output>.md``; prints the table last. Timings on a shared CPU are
indicative only.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/shapes.py
from shapes import LLAMA_7B, SMOLLM2_135M, TINY, model_shape_fields  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {name: model_shape_fields(shape) for name, shape in
          (("llama-7b", LLAMA_7B), ("smollm2-135m", SMOLLM2_135M), ("tiny", TINY))}


def synthetic_fitness(shape, seed: int = 1):
    """Importance (another random draw) of what a spec drops: lower is better, a few ms per spec."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mlp = rng.random((shape.num_layers, shape.intermediate_size))
    attention = rng.random((shape.num_layers, shape.num_key_value_heads, shape.head_dim))
    total = float(mlp.sum() + attention.sum())

    def score(spec) -> float:
        kept = 0.0
        for layer in spec.layers:
            kept += float(mlp[layer.source_index][np.asarray(layer.mlp_channels)].sum())
            rows = attention[layer.source_index][np.asarray(layer.kv_heads)]
            kept += float(np.take_along_axis(rows, np.asarray(layer.attention_channels), axis=1).sum())
        return total - kept

    return score


def run_engine(name: str, shape, args) -> dict:
    import torch

    from optimum_subnet import SubnetConfig
    from optimum_subnet.search.space import paper_ranges  # noqa: F401  (both engines share the budget module)

    config = SubnetConfig.preset("paper", args.ratio)
    settings = config.search.__class__(**{**config.search.__dict__, "population_size": args.population,
                                          "num_mutations": args.population // 2,
                                          "num_crossovers": 3 * args.population // 10,
                                          "top_k": max(2, args.population // 10), "generations": args.generations})
    generator = torch.Generator().manual_seed(0)
    attention = [torch.rand(shape.num_key_value_heads, shape.head_dim, generator=generator)
                 for _ in range(shape.num_layers)]
    mlp = [torch.rand(shape.intermediate_size, generator=generator) for _ in range(shape.num_layers)]
    space_args = dict(head_dim_multiple=settings.head_dim_multiple, mlp_multiple=settings.mlp_multiple,
                      depth_search=args.ratio <= 0.7, min_depth=round(settings.min_depth_ratio * shape.num_layers),
                      tolerance=settings.ratio_tolerance)
    score = synthetic_fitness(shape)
    scoring = {"seconds": 0.0, "calls": 0}

    def timed(specs):
        start = time.perf_counter()
        values = [score(s) for s in specs]
        scoring["seconds"] += time.perf_counter() - start
        scoring["calls"] += len(specs)
        return values

    if name == "reference":
        from reference_engine import EvolutionarySearch, SearchSpace

        space = SearchSpace(shape, attention, mlp, args.ratio, **space_args)
        search = EvolutionarySearch(space, settings, lambda spec: timed([spec])[0], seed=0)
    else:
        from optimum_subnet.search import EvolutionarySearch, SearchSpace

        space = SearchSpace(shape, attention, mlp, args.ratio, **space_args)
        search = EvolutionarySearch(space, settings, timed, seed=0)
    initial = space.initial()
    start = time.perf_counter()
    result = search.run(initial)
    seconds = time.perf_counter() - start
    ends = [h["seconds"] for h in result.history]
    per_generation = [b - a for a, b in zip([0.0] + ends[:-1], ends)]
    # scoring time per generation: the history does not split it, so the total is spread by evaluations
    evaluated = [h["evaluated"] for h in result.history]
    per_score = scoring["seconds"] / max(1, scoring["calls"])
    production = [g - n * per_score for g, n in zip(per_generation, evaluated)]
    return {
        "engine": name, "generations": args.generations, "population": args.population,
        "candidates_per_generation": [h["candidates"] for h in result.history],
        "seconds": seconds, "seconds_per_generation": per_generation,
        "scoring_seconds": scoring["seconds"], "scoring_calls": scoring["calls"],
        "production_seconds_per_generation": production,
        "production_median_later_generations": statistics.median(production[1:] if len(production) > 1 else production),
        "best_per_generation": result.best_fitness_per_generation,
        "initial_fitness": result.initial_fitness,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-7b", choices=sorted(SHAPES))
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--engines", default="reference,current")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "candidate_production_llama7b"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from optimum_subnet.core.spec import ModelShape

    shape = ModelShape(**SHAPES[args.shape])
    results = {"shape": args.shape, "ratio": args.ratio, "machine": platform.processor() or platform.machine(),
               "torch_threads": torch.get_num_threads(), "runs": []}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    import os

    for name in args.engines.split(","):
        load_before = os.getloadavg()[0]
        run = run_engine(name, shape, args)
        run["load_average_1min"] = [load_before, os.getloadavg()[0]]  # before / after: the CPU is shared
        results["runs"].append(run)
        output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(results))
    sys.stdout.write(output.with_suffix(".md").read_text())
    return 0


def markdown(results: dict) -> str:
    lines = [f"# Candidate production per search generation at {results['shape']} shape, ratio {results['ratio']}",
             "",
             "Everything a generation does except scoring (mutation, crossover, budget repair, content keys, "
             "specs), with random importance scores and a synthetic fitness timed apart; paper settings. "
             f"One thread of a shared 2-core CPU ({results['machine']}): indicative only.",
             "",
             "| engine | population | generations | production s per generation | median of later generations s | "
             "load average (before, after) |",
             "|---|---:|---:|---|---:|---|"]
    for run in results["runs"]:
        load = run.get("load_average_1min")
        lines.append(f"| {run['engine']} | {run['population']} | {run['generations']} | "
                     f"{', '.join(f'{s:.2f}' for s in run['production_seconds_per_generation'])} | "
                     f"{run['production_median_later_generations']:.2f} | "
                     f"{'-' if load is None else f'{load[0]:.1f}, {load[1]:.1f}'} |")
    runs = {r["engine"]: r for r in results["runs"]}
    if "reference" in runs and "current" in runs:
        ratio = runs["reference"]["production_median_later_generations"] / max(
            1e-9, runs["current"]["production_median_later_generations"])
        lines += ["", f"Current engine: {ratio:.1f}x less production time per generation than the reference "
                      "(main at 58474c2)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
