"""Does the searched subnet beat its starting point on held-out text? An ablation of the fitness.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/generalization_ablation.py --ratios 0.8 0.9 \\
        --work /tmp/ablation-work            # resumable: finished variants are read back from --work

SmolLM2-135M, the default fast preset (population 16, 10 generations, fitness 4 x 256 tokens), seed 0.
Per ratio, shared by every variant: the data, the importance scores, both initial subnets (the search
starts from the one with the lower fitness-window perplexity, as the pass does) and their reformed
versions. Per variant, one search from that same initial subnet with other fitness settings:

* ``baseline``: today's default (perplexity on 4 x 256-token windows);
* ``more_windows``: 16 x 512-token windows, afforded by screening (each generation's candidates ranked
  on 1 x 256 tokens, the best quarter fully evaluated);
* ``fresh``: other 4 x 256-token windows every generation (the top-k is scored again on them);
* ``distill``: the mean KL divergence from the dense model's next-token distribution on the 4 x 256
  windows, instead of perplexity;
* ``reformed``: perplexity after a cheap reformation of the candidate (closed form on 4 calibration
  windows), screened as ``more_windows`` on un-reformed perplexity;
* combinations, when asked for (``distill_more``: distillation on the 16 x 512 windows with screening);
* ``head_search``: the default with whole-KV-head mutations on (``search.kv_head_search = "on"``; off by
  default);
* ``reference_engine``: the default fitness searched by the engine of main at 58474c2, before issue 15's
  vectorized engine (``benchmarks/reference_engine``, run from the repository root): is today's engine
  as good a search as the one it replaced?

For every variant the final top-k is scored on 16 x 512-token *selection* windows of the calibration
side that overlap no calibration or fitness window of any variant, and "selected" is the best of the
top-k and both initial subnets there (the ``search.selection_windows`` option). Everything is scored by
held-out perplexity on the evaluation articles (64 windows of 512 tokens, as the core table), which
no stage sees; differences to the seed are given with the standard error over those windows (paired).

Writes ``<output>.json`` and ``<output>.md`` after every variant.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_engine
logger = logging.getLogger("benchmarks.generalization_ablation")

#: name -> (description, search overrides, cheap-reformation calibration windows or 0)
VARIANTS = {
    "baseline": ("perplexity, 4 x 256 windows (today's default)", {}, 0),
    "more_windows": ("perplexity, 16 x 512 windows, screened on 1 x 256 (keep 1/4)",
                     {"fitness_windows": 16, "fitness_seq_len": 512, "screening_keep": 0.25,
                      "screening_windows": 1, "screening_seq_len": 256}, 0),
    "fresh": ("perplexity, fresh 4 x 256 windows every generation", {"fitness_refresh": True}, 0),
    "distill": ("distillation (KL to dense), 4 x 256 windows", {"fitness_metric": "distillation"}, 0),
    "reformed": ("perplexity after a cheap reformation (closed form, ridge 0.01, 4 x 256 calibration windows), "
                 "4 x 256 windows, screened on un-reformed 1 x 256 (keep 1/4)",
                 {"screening_keep": 0.25, "screening_windows": 1, "screening_seq_len": 256}, 4),
    "distill_more": ("distillation, 16 x 512 windows, screened on 1 x 256 (keep 1/4)",
                     {"fitness_metric": "distillation", "fitness_windows": 16, "fitness_seq_len": 512,
                      "screening_keep": 0.25, "screening_windows": 1, "screening_seq_len": 256}, 0),
    "distill_fresh": ("distillation, fresh 4 x 256 windows every generation",
                      {"fitness_metric": "distillation", "fitness_refresh": True}, 0),
    "head_search": ("perplexity, 4 x 256 windows, with whole-KV-head mutations (kv_head_search=on)",
                    {"kv_head_search": "on"}, 0),
    "reference_engine": ("perplexity, 4 x 256 windows, searched by the engine before issue 15 "
                         "(benchmarks/reference_engine: no whole-KV-head mutations)", {"engine": "reference"}, 0),
}
#: overrides that are not search settings: which engine runs the search
ENGINES = ("current", "reference")
SELECTION = (16, 512)


def window_nll(model, windows, batch_size: int = 4) -> list[float]:
    """Mean next-token NLL of every window (windows of one length: exp(mean) is the perplexity)."""
    import torch
    import torch.nn.functional as F

    from optimum_subnet.families import get_adapter_for_subnet

    adapter = get_adapter_for_subnet(model.config)
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for batch in windows.split(batch_size):
            batch = batch.to(device)
            hidden = adapter.final_hidden_states(model, batch)[:, :-1]
            logits = adapter.logits(model, hidden).float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none")
            out += nll.view(batch.shape[0], -1).mean(1).tolist()
    return out


def ppl(nll: list[float]) -> float:
    return math.exp(statistics.fmean(nll))


def paired(nll: list[float], reference: list[float]) -> dict:
    """Mean per-window log-perplexity difference to ``reference`` and its standard error."""
    diff = [a - b for a, b in zip(nll, reference)]
    return {"mean": statistics.fmean(diff), "se": statistics.stdev(diff) / math.sqrt(len(diff))}


class Context:
    """Everything a ratio's variants share."""

    def __init__(self, args, ratio: float, work: Path):
        import torch

        from optimum_subnet import SubnetConfig
        from optimum_subnet import data as data_lib
        from optimum_subnet.families import get_adapter
        from optimum_subnet.loading import load_model
        from optimum_subnet.pipeline import stages

        self.args, self.ratio, self.work = args, ratio, work
        work.mkdir(parents=True, exist_ok=True)
        self.device = args.device
        self.model, self.tokenizer = load_model(args.model)
        self.model.to(self.device).eval()
        self.adapter = get_adapter(self.model.config)
        self.shape = self.adapter.shape(self.model.config)
        self.config = SubnetConfig.preset("fast", ratio, seed=args.seed, device=self.device,
                                          data__eval_max_windows=args.eval_windows, faithfulness__prompts=0)
        positions = self.model.config.max_position_embeddings
        self.data = stages.load_pass_data(self.config, self.tokenizer, positions)
        # selection windows: disjoint from the calibration windows and from every variant's fitness windows
        stream = data_lib.tokenize_stream(data_lib.load_texts("enwiki-extract", "calibration"), self.tokenizer)
        avoid = [(s, self.config.data.seq_len) for s in data_lib.calibration_starts(
            stream.numel(), self.config.data.num_samples, self.config.data.seq_len, args.seed)]
        for _, overrides, _ in VARIANTS.values():
            s = self.variant_config(overrides).search
            for g in range(s.generations if s.fitness_refresh else 1):
                seed = args.seed + 1 if g == 0 else args.seed + 1000 + g
                avoid += [(x, s.fitness_seq_len) for x in data_lib.calibration_starts(
                    stream.numel(), s.fitness_windows, s.fitness_seq_len, seed)]
        starts = data_lib.disjoint_starts(stream.numel(), SELECTION[0], SELECTION[1], args.seed + 2, avoid)
        self.selection = data_lib.windows_at(stream, starts, SELECTION[1])
        self.prefix = self._prefix()

    def variant_config(self, overrides: dict):
        return self.config.replace(**{f"search__{k}": v for k, v in overrides.items() if k != "engine"})

    def variant_space(self, config, engine: str):
        """The search space of a variant: the shared one unless its settings change the space."""
        from optimum_subnet.pipeline import stages

        if engine == "reference":
            from reference_engine import search_space

            return search_space(self.shape, config, self.attention, self.mlp, self.att_alloc, self.mlp_alloc)
        if config.search == self.config.search:
            return self.space
        return stages.search_space(self.shape, config, self.attention, self.mlp, self.att_alloc, self.mlp_alloc)

    def _prefix(self) -> dict:
        import torch

        from optimum_subnet.pipeline import stages
        from optimum_subnet.pipeline.fitness import PerplexityFitness
        from optimum_subnet.stages.importance import ImportanceScores
        from optimum_subnet.stages.surgery import extract_subnet

        path, scores_path = self.work / "prefix.json", self.work / "importance.pt"
        if scores_path.exists():
            self.scores = ImportanceScores.from_tensors(torch.load(scores_path))
        else:
            self.scores = stages.importance(self.model, self.adapter, self.config, self.data, self.device)
            torch.save(self.scores.to_tensors(), scores_path)
        self.attention, self.mlp, self.att_alloc, self.mlp_alloc = self.scores.for_search(
            self.config.search.importance, self.shape)
        self.space = stages.search_space(self.shape, self.config, self.attention, self.mlp, self.att_alloc,
                                         self.mlp_alloc)
        self.initial = {"uniform": self.space.initial(), "global": self.space.global_initial()}
        if path.exists():
            prefix = json.loads(path.read_text())
            for name, genome in self.initial.items():  # (prefixes written before the after-reformation selection)
                if "reformed_selection_ppl" not in prefix[name]:
                    prefix[name]["reformed_nll"], prefix[name]["reformed_selection_ppl"] = self.reformed(
                        self.space.to_spec(genome))
                    path.write_text(json.dumps(prefix))
            return prefix
        prefix = {"dense": {"nll": window_nll(self.model, self.data.evaluation)}}
        fitness = PerplexityFitness(self.model, self.adapter, self.data.fitness, self.config.search.fitness_batch_size)
        for name, genome in self.initial.items():
            spec = self.space.to_spec(genome)
            subnet = extract_subnet(self.model, spec, self.adapter)
            entry = {"fitness_ppl": fitness.score(spec), "params": spec.params(),
                     "inheriting_ratio": spec.inheriting_ratio(), "nll": window_nll(subnet, self.data.evaluation),
                     "selection_ppl": ppl(window_nll(subnet, self.selection))}
            entry["reformed_nll"], entry["reformed_selection_ppl"] = self.reformed(spec)
            prefix[name] = entry
            logger.info("initial %s: held-out %.2f, reformed %.2f", name, ppl(entry["nll"]), ppl(entry["reformed_nll"]))
        prefix["chosen"] = min(("uniform", "global"), key=lambda n: prefix[n]["fitness_ppl"])
        path.write_text(json.dumps(prefix))
        return prefix

    def reformed(self, spec) -> tuple[list[float], float]:
        """Held-out window NLLs and selection-window perplexity of ``spec`` after the pass's reformation."""
        from optimum_subnet.pipeline import stages
        from optimum_subnet.stages.surgery import extract_subnet

        subnet = extract_subnet(self.model, spec, self.adapter)
        stages.reform(self.model, subnet, spec, self.adapter, self.config, self.data, self.device)
        return window_nll(subnet, self.data.evaluation), ppl(window_nll(subnet, self.selection))


def run_variant(ctx: Context, name: str) -> dict:
    from optimum_subnet.pipeline import stages
    from optimum_subnet.pipeline.fitness import DistillationFitness, PerplexityFitness
    from optimum_subnet.stages.surgery import extract_subnet

    description, overrides, reform_windows = VARIANTS[name]
    engine = overrides.get("engine", "current")
    if engine == "reference":
        from reference_engine import EvolutionarySearch
        from reference_engine.state import genome_key
        from reference_engine.state import genome_from_json, genome_to_json
    else:
        from optimum_subnet.search import EvolutionarySearch
        from optimum_subnet.search.state import genome_from_json, genome_to_json
    config = ctx.variant_config(overrides)
    space = ctx.variant_space(config, engine)
    s = config.search
    data = stages.load_pass_data(config, ctx.tokenizer, ctx.model.config.max_position_embeddings)
    screening = data.fitness[: s.screening_windows, : s.screening_seq_len] if s.screening_keep < 1 else None
    kind = DistillationFitness if s.fitness_metric == "distillation" else PerplexityFitness
    options = {"window_sets": data.fitness_sets.__getitem__ if s.fitness_refresh else None}
    if reform_windows:
        fitness = ReformedFitness(ctx, data.calibration[:reform_windows], ctx.model, ctx.adapter, data.fitness,
                                  s.fitness_batch_size, screening, **options)
    else:
        fitness = kind(ctx.model, ctx.adapter, data.fitness, s.fitness_batch_size, screening, **options)
    chosen = ctx.prefix["chosen"]
    initial = space.initial() if chosen == "uniform" else space.global_initial()
    if space.to_spec(initial).params() != ctx.space.to_spec(ctx.initial[chosen]).params():
        raise RuntimeError(f"{name}: its initial {chosen} subnet differs from the shared one")
    # staged: the search checkpoints every generation and each later measurement is saved as it ends, so a
    # killed run resumes where it stopped (``<name>.stages.json``, ``<name>.search_state.json``)
    stages_path, state_path = ctx.work / f"{name}.stages.json", ctx.work / f"{name}.search_state.json"
    done = json.loads(stages_path.read_text()) if stages_path.exists() else {}

    def save(key, value):
        done[key] = value
        stages_path.write_text(json.dumps(done))

    if "search" not in done:
        checkpoint = lambda state: state_path.write_text(json.dumps(state))  # noqa: E731
        if engine == "reference":  # one spec per call, no screening, no fresh windows
            search = EvolutionarySearch(space, s, fitness.score, seed=config.seed, checkpoint=checkpoint)
        else:
            search = EvolutionarySearch(space, s, fitness, seed=config.seed,
                                        screen=fitness.screen_many if screening is not None else None,
                                        refresh=fitness.refresh if s.fitness_refresh else None, checkpoint=checkpoint)
        if state_path.exists():
            search.load_state_dict(json.loads(state_path.read_text()))
            logger.info("%s: search resumed after generation %d", name, search.generation)
        result = search.run(initial)
        if engine == "reference":
            top, top_fitness = search.top, [search.cache[genome_key(g)] for g in search.top]
        else:
            top, top_fitness = result.top, result.top_fitness
        save("search", {"seconds": result.seconds, "evaluations": result.evaluations,
                        "screenings": result.screenings, "initial_fitness": result.initial_fitness,
                        "best_fitness": result.best_fitness, "top": [genome_to_json(g) for g in top],
                        "top_fitness": top_fitness})
    found = done["search"]
    genomes = [genome_from_json(g) for g in found["top"]]
    # held-out perplexity of the search's best first (the number the first bar asks for)
    if "best_nll" not in done:
        save("best_nll", window_nll(extract_subnet(ctx.model, space.to_spec(genomes[0]), ctx.adapter),
                                    ctx.data.evaluation))
        logger.info("%s: searched subnet, held-out %.2f", name, ppl(done["best_nll"]))
    if "selection_ppl" not in done:
        save("selection_ppl", [ppl(window_nll(extract_subnet(ctx.model, space.to_spec(g), ctx.adapter),
                                              ctx.selection)) for g in genomes])
    top = [{"rank": rank, "fitness": value, "selection_ppl": sel, "genome": genome}
           for rank, (genome, value, sel) in enumerate(zip(genomes, found["top_fitness"], done["selection_ppl"]), 1)]
    top[0]["nll"] = done["best_nll"]
    pool = [("top-%d" % t["rank"], t["selection_ppl"]) for t in top]
    pool += [(f"initial ({n})", ctx.prefix[n]["selection_ppl"]) for n in ("uniform", "global")]
    selected = min(pool, key=lambda p: p[1])[0]
    # held-out perplexity of the selected one too (the CPU is shared and slow: not of the whole top-k)
    if selected.startswith("top-") and selected != "top-1":
        if "selected_nll" not in done:
            save("selected_nll", window_nll(extract_subnet(ctx.model, space.to_spec(
                top[int(selected[4:]) - 1]["genome"]), ctx.adapter), ctx.data.evaluation))
        top[int(selected[4:]) - 1]["nll"] = done["selected_nll"]
    if "reformed_best_selection_ppl" not in done:  # (one reformation gives both)
        held_out, selection = ctx.reformed(space.to_spec(genomes[0]))
        save("reformed_best_nll", held_out)
        save("reformed_best_selection_ppl", selection)
    row = {"variant": name, "description": description, "overrides": overrides, "reform_windows": reform_windows,
           "search_seconds": found["seconds"], "evaluations": found["evaluations"],
           "screenings": found["screenings"], "initial_fitness": found["initial_fitness"],
           "best_fitness": found["best_fitness"], "metric": fitness.metric,
           "fitness_windows": data.seen.get("fitness"),
           "top": [{k: v for k, v in t.items() if k != "genome"} for t in top], "selected": selected,
           "reformed_best_nll": done["reformed_best_nll"],
           "reformed_best_selection_ppl": done["reformed_best_selection_ppl"]}
    if selected.startswith("top-") and selected != "top-1":
        if "reformed_selected_nll" not in done:
            save("reformed_selected_nll", ctx.reformed(space.to_spec(top[int(selected[4:]) - 1]["genome"]))[0])
        row["reformed_selected_nll"] = done["reformed_selected_nll"]
    return row


class ReformedFitness:
    """Perplexity after a cheap reformation (closed form with a fixed ridge on a few calibration windows)."""

    metric = "perplexity after a cheap reformation"

    def __init__(self, ctx, calibration, model, adapter, windows, batch_size, screening=None, **options):
        from optimum_subnet.pipeline.fitness import PerplexityFitness

        self.inner = PerplexityFitness(model, adapter, windows, batch_size, screening, **options)
        self.ctx, self.calibration = ctx, calibration
        self.screen_many, self.refresh = self.inner.screen_many, self.inner.refresh

    def score(self, spec) -> float:
        from optimum_subnet.stages.reformation import reform

        subnet = self.inner.subnet(spec)
        reform(self.ctx.model, subnet, spec, self.ctx.adapter, self.calibration, 8, self.ctx.device, method="closed_form",
               damp=0.01)
        return self.inner.measure(subnet, self.inner.windows)

    def many(self, specs) -> list[float]:
        values = [self.score(spec) for spec in specs]
        self.inner._held.clear()
        return values


def summarize(ratio_runs: dict) -> list[dict]:
    rows = []
    for ratio, run in sorted(ratio_runs.items(), key=lambda kv: -float(kv[0])):
        prefix = run["prefix"]
        seed = prefix[prefix["chosen"]]
        better = min(("uniform", "global"), key=lambda n: ppl(prefix[n]["nll"]))
        base_nll = prefix[better]["nll"]
        reformed_seed = min(("uniform", "global"), key=lambda n: ppl(prefix[n]["reformed_nll"]))
        reformed_base = prefix[reformed_seed]["reformed_nll"]
        for variant in run["variants"]:
            best = variant["top"][0]
            selected = variant["selected"]
            if selected.startswith("top-"):
                sel_nll = variant["top"][int(selected[4:]) - 1]["nll"]
                sel_reformed = variant.get("reformed_selected_nll", variant["reformed_best_nll"])
            else:
                name = selected[len("initial ("):-1]
                sel_nll, sel_reformed = prefix[name]["nll"], prefix[name]["reformed_nll"]
            # after reformation: the reformed top-1 or a reformed initial subnet, whichever is best on the
            # selection windows (one more reformation than the pass runs)
            pool = {"final (top-1)": (variant.get("reformed_best_selection_ppl"), variant["reformed_best_nll"])}
            pool.update({f"initial ({n})": (prefix[n].get("reformed_selection_ppl"), prefix[n]["reformed_nll"])
                         for n in ("uniform", "global")})
            after = (min(pool, key=lambda k: pool[k][0]) if all(v[0] is not None for v in pool.values()) else None)
            rows.append({
                "after_reformation_selected": after,
                "after_reformation_ppl": None if after is None else ppl(pool[after][1]),
                "after_reformation_vs_reformed_initial": None if after is None else paired(pool[after][1],
                                                                                             reformed_base),
                "reformed_selection_ppl": {k: v[0] for k, v in pool.items()},
                "ratio": float(ratio), "variant": variant["variant"], "description": variant["description"],
                "dense": ppl(prefix["dense"]["nll"]), "seed": prefix["chosen"], "seed_ppl": ppl(seed["nll"]),
                "better_initial_ppl": ppl(base_nll), "reformed_initial_ppl": ppl(reformed_base),
                "searched_ppl": ppl(best["nll"]), "searched_vs_initial": paired(best["nll"], base_nll),
                "selected": selected, "selected_ppl": ppl(sel_nll), "selected_vs_initial": paired(sel_nll, base_nll),
                "final_ppl": ppl(variant["reformed_best_nll"]),
                "final_vs_reformed_initial": paired(variant["reformed_best_nll"], reformed_base),
                "final_selected_ppl": ppl(sel_reformed),
                "final_selected_vs_reformed_initial": paired(sel_reformed, reformed_base),
                "top_k_heldout": [ppl(t["nll"]) if "nll" in t else None for t in variant["top"]],
                "top_k_selection": [t["selection_ppl"] for t in variant["top"]],
                "evaluations": variant["evaluations"], "search_seconds": variant["search_seconds"],
            })
    return rows


def markdown(meta: dict, rows: list[dict]) -> str:
    def d(x):
        return f"{x['mean']:+.4f} ± {x['se']:.4f}"

    lines = [
        "# Generalization of the search: held-out perplexity of searched vs initial subnets (SmolLM2-135M)",
        "",
        f"Preset `fast` (population 16, 10 generations), seed {meta['seed']}, CPU ({meta['threads']} thread, shared "
        "machine). Held-out: 64 windows x 512 tokens of the evaluation articles, never seen by any stage. Every "
        "variant starts from the same initial subnet (the one with the lower perplexity on the default fitness "
        "windows). Δ: mean per-window difference of log-perplexity to the better initial subnet (or to the better "
        "reformed initial subnet for the final columns) ± its standard error over the 64 windows; negative is "
        "better. Selected: the best of the top-k and both initial subnets on 16 x 512-token calibration windows that "
        "overlap no calibration or fitness window of any variant (the `search.selection_windows` option). "
        "Selected after reformation: the reformed searched subnet (top-1) or a reformed initial subnet, whichever "
        "has the lowest perplexity on those selection windows (costs one reformation more than the pass).",
        "",
        "Windows each stage saw: importance and reformation: 32 x 256 calibration windows (random offsets, seed 0); "
        "search fitness: the variant's windows (random offsets on the calibration articles, seed 1, fresh ones "
        "seeds 1001.. per generation); selection: 16 x 512 windows (seed 2) apart from all of those; held-out: "
        "the evaluation articles only.",
        "",
        "| ratio | variant | initial (better) | searched | Δ searched | selected | Δ selected | reformed initial | "
        "final (searched+reformed) | Δ final | final of selected | Δ final selected | selected after reformation | "
        "Δ after reformation | evals | search s |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ratio']:.1f} | {r['variant']} | {r['better_initial_ppl']:.2f} | {r['searched_ppl']:.2f} | "
            f"{d(r['searched_vs_initial'])} | {r['selected']}: {r['selected_ppl']:.2f} | {d(r['selected_vs_initial'])} | "
            f"{r['reformed_initial_ppl']:.2f} | {r['final_ppl']:.2f} | {d(r['final_vs_reformed_initial'])} | "
            f"{r['final_selected_ppl']:.2f} | {d(r['final_selected_vs_reformed_initial'])} | "
            + ("not measured | - | " if r["after_reformation_selected"] is None else
               f"{r['after_reformation_selected']}: {r['after_reformation_ppl']:.2f} | "
               f"{d(r['after_reformation_vs_reformed_initial'])} | ")
            + f"{r['evaluations']} | {r['search_seconds']:.0f} |")
    lines += ["", "Variants:", ""]
    seen = set()
    for r in rows:
        if r["variant"] not in seen:
            seen.add(r["variant"])
            lines.append(f"- `{r['variant']}`: {r['description']}")
    lines += ["", "Top-k of each search (held-out perplexity, measured for the best and the selected one only / "
                  "selection-window perplexity), by fitness rank:", ""]
    for r in rows:
        pairs = ", ".join(f"{'-' if h is None else f'{h:.2f}'}/{s:.2f}"
                          for h, s in zip(r["top_k_heldout"], r["top_k_selection"]))
        lines.append(f"- {r['ratio']:.1f} `{r['variant']}`: {pairs}")
    return "\n".join(lines) + "\n"


def partial_markdown(work: Path, ratio: str, variants: list[str]) -> str:
    """What the unfinished variants measured so far (``<name>.stages.json``): labeled partial, nothing filled in."""
    prefix = json.loads((work / f"r{ratio}" / "prefix.json").read_text())
    better = min(("uniform", "global"), key=lambda n: ppl(prefix[n]["nll"]))
    reformed_seed = min(("uniform", "global"), key=lambda n: ppl(prefix[n]["reformed_nll"]))
    lines = [f"## Partial: variants at ratio {ratio} that did not finish (stages measured so far)", "",
             f"Dense {ppl(prefix['dense']['nll']):.2f}; initial subnets, held-out (reformed): "
             + ", ".join(f"{n} {ppl(prefix[n]['nll']):.2f} ({ppl(prefix[n]['reformed_nll']):.2f}), fitness "
                         f"{prefix[n]['fitness_ppl']:.2f}, selection windows {prefix[n]['selection_ppl']:.2f}"
                         for n in ("uniform", "global"))
             + f"; the search starts from `{prefix['chosen']}`.", "",
             "| variant | stages done | fitness initial -> best | searched (held-out) | Δ searched vs better initial | "
             "top-k on selection windows | final (searched+reformed) | Δ final vs reformed initial |",
             "|---|---|---:|---:|---:|---|---:|---:|"]

    def d(x):
        return f"{x['mean']:+.4f} ± {x['se']:.4f}"

    for name in variants:
        path = work / f"r{ratio}" / f"{name}.stages.json"
        if (work / f"r{ratio}" / f"{name}.json").exists() or not path.exists():
            continue
        st = json.loads(path.read_text())
        search = st["search"]
        best = st.get("best_nll")
        final = st.get("reformed_best_nll")
        lines.append(
            f"| {name} | {', '.join(st)} | {search['initial_fitness']:.3f} -> {search['best_fitness']:.3f} | "
            f"{'not measured' if best is None else f'{ppl(best):.2f}'} | "
            f"{'-' if best is None else d(paired(best, prefix[better]['nll']))} | "
            f"{'not measured' if 'selection_ppl' not in st else ', '.join(f'{x:.2f}' for x in st['selection_ppl'])} | "
            f"{'not measured' if final is None else f'{ppl(final):.2f}'} | "
            f"{'-' if final is None else d(paired(final, prefix[reformed_seed]['reformed_nll']))} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.9])
    parser.add_argument("--variants", default="baseline,distill,fresh,more_windows,reformed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU machine: minutes per seed)")
    parser.add_argument("--work", default="/tmp/generalization-ablation")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "generalization_ablation"))
    parser.add_argument("--redraw", action="store_true", help="only rewrite <output>.md from <output>.json")
    parser.add_argument("--partial", action="store_true",
                        help="only write <output>_partial.md: the stages that unfinished variants measured so far")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if args.partial:
        text = "".join(partial_markdown(Path(args.work), str(r), args.variants.split(",")) for r in args.ratios)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.with_name(output.name + "_partial.md").write_text(text)
        print(text)
        return 0
    if args.redraw:
        data = json.loads(output.with_suffix(".json").read_text())
        output.with_suffix(".md").write_text(markdown(data["meta"], summarize(data["runs"])))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    meta = {"seed": args.seed, "threads": torch.get_num_threads(), "model": args.model, "device": args.device}
    if args.device != "cpu":
        meta["device_name"] = torch.cuda.get_device_name(0)
    results = json.loads(output.with_suffix(".json").read_text()) if output.with_suffix(".json").exists() else {}
    runs = results.get("runs", {})
    for ratio in args.ratios:
        ctx = Context(args, ratio, work / f"r{ratio}")
        run = runs.setdefault(str(ratio), {"variants": []})
        run["prefix"] = ctx.prefix
        for name in args.variants.split(","):
            path = work / f"r{ratio}" / f"{name}.json"
            if path.exists() and "reformed_best_selection_ppl" in json.loads(path.read_text()):
                row = json.loads(path.read_text())
            else:
                logger.info("ratio %s, variant %s", ratio, name)
                row = run_variant(ctx, name)
                path.write_text(json.dumps(row))
            run["variants"] = [v for v in run["variants"] if v["variant"] != name] + [row]
            output.parent.mkdir(parents=True, exist_ok=True)
            output.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs}))
            output.with_suffix(".md").write_text(markdown(meta, summarize(runs)))
            logger.info("wrote %s", output.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
