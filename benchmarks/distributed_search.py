"""One search generation at LLaMA-7B shape on 2 GPUs against 1, same seed, same spec required.

On a machine with two GPUs (torchrun starts one process per GPU)::

    torchrun --standalone --nproc-per-node 2 benchmarks/distributed_search.py --output $OUT/distributed_7b

On the CPU (two gloo processes, tiny shape: checks the script, measures nothing)::

    torchrun --standalone --nproc-per-node 2 benchmarks/distributed_search.py --shape tiny --device cpu \\
        --population 8 --fitness-seq-len 64 --output /tmp/distributed_tiny

Both processes build the same random-weight model (rank 0's weights broadcast to the other), the same
importance scores and fitness windows, hence the same search space. Then, in one run:

1. **W processes**: ``--generations`` generations of ``EvolutionarySearch`` with the fitness spread over
   the processes (:class:`~optimum_subnet.distributed.DistributedFitness`: each rank evaluates its share of
   a generation, the values are all-gathered);
2. **1 process**: rank 0 alone runs the same search with the plain fitness (the others wait).

Reported: seconds of the search (the initial subnet plus the generations), of which fitness evaluation
(the rest is candidate production, which every process repeats), the speedup, and whether both ended
on the same spec (they must). The paper's settings by default: population 100, 4 fitness windows of
2048 tokens, fp16. Writes ``<output>.json`` / ``.md`` on rank 0 and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from offload import SHAPES  # noqa: E402  (the shapes of the other large-model benchmark)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama-7b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--generations", type=int, default=1)
    p.add_argument("--fitness-windows", type=int, default=4)
    p.add_argument("--fitness-seq-len", type=int, default=2048)
    p.add_argument("--fitness-batch-size", type=int, default=4)
    p.add_argument("--output", required=True)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("OPTIMUM_SUBNET_NO_PROGRESS", "1")
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import torch
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from optimum_subnet import SubnetConfig
    from optimum_subnet.distributed import DistributedContext, DistributedFitness
    from optimum_subnet.families import get_adapter
    from optimum_subnet.pipeline.fitness import PerplexityFitness
    from optimum_subnet.pipeline.stages import search_space
    from optimum_subnet.search import EvolutionarySearch

    context = DistributedContext.from_environment(args.device)
    if not context.enabled:
        sys.exit("start this with torchrun --nproc-per-node N (N >= 2)")
    device = context.device(args.device)
    config = LlamaConfig(**SHAPES[args.shape], tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
        for tensor in model.state_dict().values():  # identical weights on every rank
            dist.broadcast(tensor, src=0)
    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    n = args.population
    settings = SubnetConfig.preset(
        "paper", args.ratio, search__population_size=n, search__num_mutations=n // 2,
        search__num_crossovers=(3 * n) // 10, search__top_k=max(2, n // 10), search__generations=args.generations)
    generator = torch.Generator().manual_seed(0)
    space = search_space(shape, settings, [torch.rand(shape.num_key_value_heads, shape.head_dim, generator=generator)
                                           for _ in range(shape.num_layers)],
                         [torch.rand(shape.intermediate_size, generator=generator) for _ in range(shape.num_layers)])
    windows = torch.randint(3, shape.vocab_size, (args.fitness_windows, args.fitness_seq_len), generator=generator)
    local = PerplexityFitness(model, adapter, windows, args.fitness_batch_size)

    def search(fitness) -> dict:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        engine = EvolutionarySearch(space, settings.search, fitness, seed=0)
        start = time.perf_counter()
        result = engine.run(space.initial())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "evaluation_seconds": result.evaluation_seconds,
                "production_seconds": seconds - result.evaluation_seconds, "evaluations": result.evaluations,
                "best_fitness": result.best_fitness, "spec": space.to_spec(result.best).key()}

    with torch.no_grad():
        local(space.to_spec(space.initial()))  # warm-up (CUDA kernels, allocator) on every rank
        spread = DistributedFitness(local, context)
        several = search(spread)
        several["ranks"] = spread.totals()
        context.barrier()
        single = search(local) if context.is_main else None
        context.barrier()
    if not context.is_main:
        return
    results = {"shape": args.shape, "dtype": args.dtype, "population": n, "generations": args.generations,
               "fitness": f"{args.fitness_windows} x {args.fitness_seq_len} tokens", "world_size": context.world_size,
               "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
               "several": several, "single": single, "speedup": single["seconds"] / several["seconds"],
               "evaluation_speedup": single["evaluation_seconds"] / several["evaluation_seconds"],
               "same_spec": single["spec"] == several["spec"]}
    lines = [f"# One search generation, {args.shape} ({args.dtype}), population {n}, on {results['device']}", "",
             "| processes | search s | fitness evaluation s | candidate production s | evaluations | best fitness |",
             "|---:|---:|---:|---:|---:|---:|"]
    for label, entry in ((context.world_size, several), (1, single)):
        lines.append(f"| {label} | {entry['seconds']:.1f} | {entry['evaluation_seconds']:.1f} | "
                     f"{entry['production_seconds']:.1f} | {entry['evaluations']} | {entry['best_fitness']:.4f} |")
    lines += ["", f"Speedup {results['speedup']:.2f}x (fitness evaluation alone {results['evaluation_speedup']:.2f}x); "
                  f"same spec: {'yes' if results['same_spec'] else 'NO'}."]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
