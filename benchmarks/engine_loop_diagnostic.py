"""Can both engines move a layer's width over generations? Their whole loops on a stub fitness (no model).

    python benchmarks/engine_loop_diagnostic.py WORK/r0.5/importance.pt

SmolLM2's shape and importance scores, target 0.5, the fast preset (16 x 10), seeds 0-3. The stub rewards layer 0's
MLP width (and a little layer 3's): a loop that cannot grow a layer against the budget would stall here. Prints
layer 0's final MLP width and the best reward per generation, for today's engine and the reference engine.
"""
import random, sys, statistics
import numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from optimum_subnet import SubnetConfig
from optimum_subnet.core.spec import ModelShape
from optimum_subnet.stages.importance import ImportanceScores
from optimum_subnet.pipeline import stages
from optimum_subnet.search import EvolutionarySearch
from reference_engine import EvolutionarySearch as RefSearch, search_space as reference_search_space
from shapes import SMOLLM2_135M, model_shape_fields

shape = ModelShape(**model_shape_fields(SMOLLM2_135M))
scores = ImportanceScores.from_tensors(torch.load(sys.argv[1]))

def stub(spec):  # lower is better: reward layer 0's MLP width, a little noise-free texture on the rest
    widths = {l.source_index: len(l.mlp_channels) for l in spec.layers}
    return 10000.0 - widths.get(0, 0) - 0.1 * widths.get(3, 0)

class Many:
    def many(self, specs): return [stub(s) for s in specs]
    def __call__(self, spec): return stub(spec)

for seed in range(4):
    config = SubnetConfig.preset("fast", 0.5, seed=seed, device="cpu")
    s = config.search
    att, mlp, aa, ma = scores.for_search(s.importance, shape)
    cur = stages.search_space(shape, config, att, mlp, aa, ma)
    ref = reference_search_space(shape, config, att, mlp, aa, ma)
    r1 = EvolutionarySearch(cur, s, Many(), seed=seed).run(cur.initial())
    r2 = RefSearch(ref, s, stub, seed=seed).run(ref.initial())
    w = lambda g: g[0].mlp_width if g[0] is not None else 0
    print(seed, "today layer0", w(r1.best), "per gen", [round(10000 - f) for f in r1.best_fitness_per_generation],
          "| ref layer0", w(r2.best), [round(10000 - f) for f in r2.best_fitness_per_generation], flush=True)
