"""Do today's engine and the reference engine (58474c2) mutate alike? No model needed: SmolLM2's shape and its
importance scores (an ``importance.pt`` from benchmarks/generalization_ablation.py's work folder).

    python benchmarks/engine_mutation_diagnostic.py WORK/r0.5/importance.pt [N]

From the uniform initial subnet at 0.5, N first-generation mutations per engine (the fast preset's
probabilities): per-layer MLP widths (mean per layer, spread across layers, how often layer 0 is wide, dropped
layers) and how many of a mutated layer's kept MLP channels lie in its top channels by importance.
"""
import random, statistics, sys, json
import numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from optimum_subnet import SubnetConfig
from optimum_subnet.core.spec import ModelShape
from optimum_subnet.stages.importance import ImportanceScores
from optimum_subnet.pipeline import stages
from reference_engine import search_space as reference_search_space
from shapes import SMOLLM2_135M, model_shape_fields

shape = ModelShape(**model_shape_fields(SMOLLM2_135M))
config = SubnetConfig.preset("fast", 0.5, seed=0, device="cpu")
s = config.search
scores = ImportanceScores.from_tensors(torch.load(sys.argv[1]))
att, mlp, aa, ma = scores.for_search(s.importance, shape)
cur = stages.search_space(shape, config, att, mlp, aa, ma)
ref = reference_search_space(shape, config, att, mlp, aa, ma)
print("grids equal:", cur.mlp_widths == ref.mlp_widths, cur.attention_widths == ref.attention_widths)
print("mlp grid", cur.mlp_widths, "\natt grid", cur.attention_widths, ref.attention_widths)
N = int(sys.argv[2]) if len(sys.argv) > 2 else 300
for name, space in (("today", cur), ("reference", ref)):
    rng = random.Random(0)
    parent = space.initial()
    widths = []
    fails = 0
    for _ in range(N):
        child = space.mutate(parent, rng, depth_prob=s.depth_mutation_prob, ratio_prob=s.initial_ratio_mutation_prob,
                             mask_prob=s.initial_mask_mutation_prob, overlap=s.mask_overlap)
        if child is None:
            fails += 1; continue
        widths.append([g.mlp_width if g is not None else 0 for g in child])
    w = np.array(widths)
    print(name, "parent mlp", [g.mlp_width for g in parent][:6], "fails", fails, "n", len(w))
    print("  mean width per layer  ", np.round(w.mean(0)).astype(int).tolist())
    print("  std across layers (mean over children)", round(float(w.std(1).mean()), 1),
          " P(layer0 >= 768)", round(float((w[:, 0] >= 768).mean()), 3), " P(any layer >= 1024)", round(float((w >= 1024).any(1).mean()), 3),
          " dropped layers/child", round(float((w == 0).sum(1).mean()), 3))

print("mask_fill", s.mask_fill)
# importance quality of kept MLP channels: mean of the layer's normalized importance over kept channels, by width bucket
for name, space in (("today", cur), ("reference", ref)):
    rng = random.Random(1)
    parent = space.initial()
    score_by_width = {}
    att_scores = []
    for _ in range(N):
        child = space.mutate(parent, rng, depth_prob=0, ratio_prob=s.initial_ratio_mutation_prob,
                             mask_prob=s.initial_mask_mutation_prob, overlap=s.mask_overlap)
        if child is None: continue
        for i, g in enumerate(child):
            if g is None or g is parent[i]: continue
            sc = mlp[i].float().numpy(); order = sc.argsort()[::-1]
            rank = np.empty_like(order); rank[order] = np.arange(len(order))
            kept = np.asarray(list(g.mlp))
            # fraction of kept channels inside the layer's top-width by importance
            top = set(order[: len(kept)].tolist())
            frac = len(top & set(kept.tolist())) / len(kept)
            score_by_width.setdefault(len(kept) >= 768, []).append(frac)
    print(name, {("wide" if k else "narrow"): (round(statistics.mean(v), 3), len(v)) for k, v in score_by_width.items()})
