"""One process of the 2-process gloo test (``tests/unit/test_distributed_search.py``), started by torchrun.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py OUT

Every rank writes ``OUT/rank<r>.json``; the test compares them. Steps, all on the CPU with one thread:

1. split and gather: ``DistributedFitness.many`` over 7 candidates with a local fitness that records
   which candidates it saw; the gathered values against the local fitness's own;
2. the pipeline over blocks: ``PipelinedFitness`` (two blocks per rank) against a single-process
   ``PerplexityFitness`` on the same candidates;
3. the whole search through ``SubnetOptimizer.optimize``: killed (on every rank) after its second
   generation, resumed with ``resume=True``; then rank 0 alone runs the same search as a single
   process (the process group gone, ``WORLD_SIZE=1``) for the reference.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Killed(BaseException):
    """Stands in for a crash of every process at the same point of the search."""


def candidate_specs(model, count: int = 7):
    import random

    from optimum_subnet import SubnetConfig
    from optimum_subnet.families import get_adapter
    from optimum_subnet.pipeline.stages import search_space

    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    config = SubnetConfig.preset("fast", 0.6, search__depth_search="on", search__min_depth_ratio=0.5)
    generator = torch.Generator().manual_seed(0)
    space = search_space(shape, config, [torch.rand(shape.num_key_value_heads, shape.head_dim, generator=generator)
                                         for _ in range(shape.num_layers)],
                         [torch.rand(shape.intermediate_size, generator=generator) for _ in range(shape.num_layers)])
    rng = random.Random(0)
    genomes = [space.initial()]
    while len(genomes) < count:
        child = space.mutate(genomes[0], rng, depth_prob=0.5, ratio_prob=0.5, mask_prob=0.5, overlap=0.8,
                             reference=genomes[0])
        if child is not None:
            genomes.append(child)
    return [space.to_spec(g) for g in genomes]


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format=f"[rank {os.environ['RANK']}] %(name)s: %(message)s")
    from optimum_subnet import SubnetOptimizer
    from optimum_subnet.distributed import DistributedContext, DistributedFitness, shard
    from optimum_subnet.distributed.pipeline import PipelinedFitness, stage_bounds
    from optimum_subnet.families import get_adapter
    from optimum_subnet.pipeline.fitness import PerplexityFitness
    from tests.conftest import char_tokenizer, tiny_llama
    from tests.unit.test_resume import _config

    result: dict = {}
    model = tiny_llama()
    adapter = get_adapter(model.config)
    windows = torch.randint(3, 90, (3, 24), generator=torch.Generator().manual_seed(1))
    specs = candidate_specs(model)
    reference = PerplexityFitness(model, adapter, windows, 2)

    # 1. split and gather
    context = DistributedContext.from_environment("cpu")
    seen: list[str] = []

    class Recording:
        def many(self, batch):
            seen.extend(spec.key() for spec in batch)
            return [reference(spec) for spec in batch]

    keys = [spec.key() for spec in specs]
    result["gathered"] = DistributedFitness(Recording(), context).many(specs)
    result["seen"] = [keys.index(key) for key in seen]
    result["expected_share"] = shard(len(specs), context.rank, context.world_size)
    result["reference"] = [reference(spec) for spec in specs]

    # 2. the pipeline over blocks
    result["stage"] = list(stage_bounds(4, context.rank, context.world_size))
    result["pipelined"] = PipelinedFitness(model, adapter, windows, 2, context, "cpu").many(specs)

    # 3. the whole search, killed after generation 2 and resumed
    config = _config(out, search__generations=4, search__population_size=6, search__num_mutations=3,
                     search__num_crossovers=1, search__top_k=2, faithfulness__prompts=0)
    original = DistributedFitness.many
    calls = {"n": 0}

    def dying(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # initial pair, the engine's initial subnet, generations 1 and 2, then this
            raise Killed()
        return original(self, batch)

    DistributedFitness.many = dying
    try:
        SubnetOptimizer(tiny_llama(), char_tokenizer(), "tiny").optimize(config, out / "distributed")
    except Killed:
        result["killed"] = True
    DistributedFitness.many = original
    result["checkpointed"] = sorted(p.name for p in (out / "distributed.partial").iterdir()) if context.is_main else []
    SubnetOptimizer(tiny_llama(), char_tokenizer(), "tiny").optimize(config, out / "distributed", resume=True)
    if int(os.environ["RANK"]) == 0:  # the reference: the same search in one process
        os.environ["WORLD_SIZE"] = "1"
        SubnetOptimizer(tiny_llama(), char_tokenizer(), "tiny").optimize(config, out / "single")
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
