"""The search's generalization options and its vectorized candidate production: batched masks, the
width-level budget repair, content keys, fresh fitness windows, the distillation fitness, screened
subnets built once, and the final choice on windows the search never saw."""

import json
import math
import random

import numpy as np
import pytest
import torch

from optimum_subnet.algorithms.masks import importance_ranks, mutate_masks, resize_masks
from optimum_subnet.core.config import SearchConfig
from optimum_subnet.search import EvolutionarySearch
from optimum_subnet.search.state import genome_from_json, genome_key, genome_to_json
from tests.unit.test_evolution import _fitness, _landscape, _space, batch

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------------ batched masks
def test_batched_mask_mutation_keeps_size_overlap_and_order_per_row():
    gen = np.random.default_rng(0)
    old = np.sort(np.stack([gen.choice(100, 30, replace=False) for _ in range(5)]), axis=1)
    weights = gen.random((5, 100))
    for size, w in [(30, None), (12, None), (50, weights), (100, None)]:
        new = mutate_masks(old, 100, size, 0.8, gen, w)
        assert new.shape == (5, size)
        for row_old, row_new in zip(old, new):
            assert (np.diff(row_new) > 0).all() and 0 <= row_new.min() and row_new.max() < 100
            assert len(set(row_old) & set(row_new)) >= math.ceil(0.8 * min(30, size))
    assert not np.array_equal(mutate_masks(old, 100, 30, 0.8, gen), mutate_masks(old, 100, 30, 0.8, gen))


def test_batched_resize_drops_or_adds_by_importance_per_row():
    scores = np.random.default_rng(1).random((3, 40))
    ranks = importance_ranks(scores)
    masks = np.sort(np.random.default_rng(2).permuted(np.tile(np.arange(40), (3, 1)), axis=1)[:, :20], axis=1)
    for size in (7, 20, 33):
        out = resize_masks(masks, size, ranks)
        for row, mask, new in zip(scores, masks, out):
            kept, members = set(new.tolist()), set(mask.tolist())
            if size < 20:  # the most important members stay
                assert kept <= members and min(row[list(kept)]) >= max(row[list(members - kept)])
            else:  # the most important others join
                others = set(range(40)) - members
                added = kept - members
                assert kept >= members and len(kept) == size
                assert not added or not others - added or min(row[list(added)]) >= max(row[list(others - added)])


# ----------------------------------------------------------------------------------- the space
def test_repair_resizes_each_moved_layer_once_by_importance_and_lands_in_budget():
    space = _space()
    rng = random.Random(4)
    initial = space.initial()
    for _ in range(30):
        child = space.mutate(initial, rng, depth_prob=0, ratio_prob=0.5, mask_prob=0.3, overlap=0.8)
        if child is None:
            continue
        assert space.within_budget(child)
        for layer, gene in enumerate(child):
            assert gene.mlp_width in space.mlp_widths and gene.attention_width in space.attention_widths


def test_genome_keys_follow_content_not_objects():
    space = _space()
    genome = space.mutate(space.initial(), random.Random(2), depth_prob=0, ratio_prob=0.5, mask_prob=0.5,
                          overlap=0.8)
    copy = genome_from_json(json.loads(json.dumps(genome_to_json(genome))))
    assert copy == genome and genome_key(copy) == genome_key(genome)
    assert space.from_spec(space.to_spec(genome, compact=True)) == genome
    other = list(genome)
    mlp = other[0].mlp.copy()
    mlp[0] = next(i for i in range(512) if i not in set(mlp.tolist()))
    other[0] = type(other[0])(other[0].attention, np.sort(mlp))
    assert genome_key(tuple(other)) != genome_key(genome)


def test_a_compact_spec_is_the_list_spec_in_json():
    space = _space()
    genome = space.initial()
    assert space.to_spec(genome, compact=True).to_dict() == space.to_spec(genome).to_dict()
    assert space.to_spec(genome, compact=True).key() == space.to_spec(genome).key()


# --------------------------------------------------------------------------- fresh fitness windows
def _window_landscape(space):
    """A landscape whose values depend on the current window set (a generation's windows)."""
    landscape = _landscape(space)
    state = {"set": 0, "calls": []}

    def fitness(specs):
        values = [landscape(spec) for spec in specs]
        return [v * (1 + 0.05 * math.sin(7 * state["set"] + v)) for v in values]

    def refresh(generation):
        state["set"] = generation
        state["calls"].append(generation)

    return fitness, refresh, state


def test_fresh_windows_rescore_the_top_k_every_generation_and_resume_exactly():
    space = _space()
    settings = SearchConfig(population_size=10, num_mutations=5, num_crossovers=3, top_k=3, generations=5,
                            fitness_refresh=True)
    fitness, refresh, state = _window_landscape(space)
    states = []
    reference = EvolutionarySearch(space, settings, fitness, seed=1, refresh=refresh,
                                   checkpoint=lambda s: states.append(json.loads(json.dumps(s)))).run(space.initial())
    assert state["calls"] == [0, 1, 2, 3, 4]
    # every generation after the first scored the previous top-k again (top_k re-evaluations)
    produced = sum(h["evaluated"] for h in reference.history)
    assert reference.evaluations == 1 + produced + sum(len(s["top"]) for s in states[:-1])
    fitness, refresh, _ = _window_landscape(space)
    resumed = EvolutionarySearch(space, settings, fitness, seed=99, refresh=refresh)
    resumed.load_state_dict(states[2])
    result = resumed.run(space.initial())
    assert result.best == reference.best and result.best_fitness_per_generation == reference.best_fitness_per_generation
    with pytest.raises(Exception, match="refresh function"):
        EvolutionarySearch(space, settings, fitness)


def test_old_checkpoints_are_refused_with_a_clear_message():
    from optimum_subnet.core.errors import CheckpointError

    space = _space()
    states = []
    settings = SearchConfig(population_size=6, num_mutations=3, num_crossovers=1, top_k=2, generations=2)
    EvolutionarySearch(space, settings, _fitness(space), checkpoint=states.append).run(space.initial())
    old = dict(states[0], format_version=1)
    with pytest.raises(CheckpointError, match="older optimum-subnet .*start the search again"):
        EvolutionarySearch(space, settings, _fitness(space)).load_state_dict(old)


# ------------------------------------------------------------------------------- model fitnesses
def _fitness_setup(model):
    from optimum_subnet.core.config import SubnetConfig
    from optimum_subnet.families import get_adapter
    from optimum_subnet.pipeline.stages import search_space

    adapter = get_adapter(model.config)
    shape = adapter.shape(model.config)
    g = torch.Generator().manual_seed(0)
    attention = [torch.rand(shape.num_key_value_heads, shape.head_dim, generator=g) for _ in range(shape.num_layers)]
    mlp = [torch.rand(shape.intermediate_size, generator=g) for _ in range(shape.num_layers)]
    space = search_space(shape, SubnetConfig.preset("fast", 0.7, search__mlp_multiple=16), attention, mlp)
    windows = torch.randint(3, model.config.vocab_size, (3, 24), generator=g)
    return adapter, space, windows


def test_distillation_fitness_is_zero_for_the_dense_model_and_grows_with_pruning(model):
    from optimum_subnet.core.spec import SubnetSpec
    from optimum_subnet.pipeline.fitness import DistillationFitness

    adapter, space, windows = _fitness_setup(model)
    fitness = DistillationFitness(model, adapter, windows, 2)
    dense = fitness(SubnetSpec.dense(space.shape))
    assert abs(dense) < 1e-4
    pruned = fitness.many([space.to_spec(space.initial(), compact=True)])[0]
    assert pruned > 1e-3 and math.isfinite(pruned)


def test_screened_subnets_are_built_once(model):
    from optimum_subnet.pipeline.fitness import PerplexityFitness
    from optimum_subnet.stages.surgery import extract_subnet
    from optimum_subnet.evaluation.perplexity import perplexity

    adapter, space, windows = _fitness_setup(model)
    rng = random.Random(0)
    genomes = [space.mutate(space.initial(), rng, depth_prob=0, ratio_prob=0.3, mask_prob=0.5, overlap=0.8)
               for _ in range(4)]
    specs = [space.to_spec(g, compact=True) for g in genomes if g is not None]
    fitness = PerplexityFitness(model, adapter, windows, 2, windows[:1, :8])
    fitness.screen_many(specs)
    values = fitness.many(specs[:2])
    assert fitness.builds == len(specs) and fitness.reused == 2
    for spec, value in zip(specs[:2], values):  # the reused subnet scores what a fresh one does
        fresh = perplexity(extract_subnet(model, spec, adapter), windows, 2)
        assert value == pytest.approx(fresh, rel=1e-5)
    nothing_kept = PerplexityFitness(model, adapter, windows, 2, windows[:1, :8], keep_built_bytes=0)
    nothing_kept.screen_many(specs)
    nothing_kept.many(specs[:2])
    assert nothing_kept.reused == 0 and nothing_kept.builds == len(specs) + 2


def test_masked_screening_scores_what_the_built_subnet_scores(model):
    """search.screening_method="masked": the dense model under the candidate's channel masks, no subnet built
    and nothing kept; the same screening values as the built subnets (up to summation order)."""
    from optimum_subnet.pipeline.fitness import PerplexityFitness

    adapter, space, windows = _fitness_setup(model)
    rng = random.Random(1)
    genomes = [space.mutate(space.initial(), rng, depth_prob=0.5, ratio_prob=0.3, mask_prob=0.5, overlap=0.8)
               for _ in range(4)]
    specs = [space.to_spec(g, compact=True) for g in genomes if g is not None]
    built = PerplexityFitness(model, adapter, windows, 2, windows[:1, :8]).screen_many(specs)
    masked_fitness = PerplexityFitness(model, adapter, windows, 2, windows[:1, :8], masked_screening=True)
    masked = masked_fitness.screen_many(specs)
    assert masked == pytest.approx(built, rel=1e-5)
    assert masked_fitness.builds == 0 and not masked_fitness._held
    assert masked_fitness.screen(specs[0]) == pytest.approx(built[0], rel=1e-5)


def test_masked_screening_is_validated_and_refused_with_streamed_blocks():
    from optimum_subnet import SubnetConfig
    from optimum_subnet.core.errors import SubnetError
    from optimum_subnet.pipeline.optimizer import streamed_search_refusal

    with pytest.raises(SubnetError, match="screening_method must be auto, subnet or masked"):
        SubnetConfig.preset("fast", 0.8, search__screening_method="mask")
    config = SubnetConfig.preset("fast", 0.8, search__screening_method="masked", search__screening_keep=0.25)
    assert "screening_method" in streamed_search_refusal(config)
    assert SubnetConfig.from_dict(config.to_dict()).search.screening_method == "masked"
    assert streamed_search_refusal(config.replace(search={"screening_method": "subnet"})) is None
    assert streamed_search_refusal(config.replace(search={"screening_method": "auto"})) is None  # resolves to subnet


def test_auto_screening_masks_on_gpus_only_where_masks_are_exact():
    """The default ("auto"): masked on a GPU; built subnets on the CPU, with streamed blocks (masked screening
    cannot stream) and for in-head pruning under q/k norms (masks only approximate the subnet there)."""
    from optimum_subnet import SubnetConfig
    from optimum_subnet.core.config import resolve_screening_method

    assert SubnetConfig().search.screening_method == "auto"
    assert resolve_screening_method("auto", "cuda") == "masked"
    assert resolve_screening_method("auto", "cuda:1") == "masked"
    assert resolve_screening_method("auto", "cpu") == "subnet"
    assert resolve_screening_method("auto", "cuda", streamed=True) == "subnet"
    assert resolve_screening_method("auto", "cuda", masks_approximate=True) == "subnet"
    for explicit in ("subnet", "masked"):
        assert resolve_screening_method(explicit, "cpu") == explicit == resolve_screening_method(explicit, "cuda")


# --------------------------------------------------------------------------- the pass: selection
def test_the_pass_chooses_on_unseen_windows_and_reports_what_each_stage_saw(model, tokenizer, text_files):
    from optimum_subnet import SubnetConfig, SubnetOptimizer

    cal, ev = text_files
    config = SubnetConfig.preset("fast", 0.7, device="cpu", data__dataset=str(cal), data__eval_dataset=str(ev),
                                 data__seq_len=32, data__num_samples=4, data__eval_seq_len=32,
                                 data__eval_max_windows=4, faithfulness__prompts=0, search__generations=2,
                                 search__population_size=6, search__num_mutations=3, search__num_crossovers=1,
                                 search__top_k=2, search__fitness_seq_len=32, search__fitness_windows=2,
                                 search__selection_windows=3, search__selection_seq_len=24,
                                 search__fitness_metric="distillation", search__fitness_refresh=True)
    report = SubnetOptimizer(model, tokenizer).run(config)["report"]
    search = report["search"]
    selection = search["selection"]
    assert selection["windows"] == 3 and selection["seq_len"] == 24
    labels = [c["candidate"] for c in selection["candidates"]]
    assert "top-1" in labels and "initial (uniform)" in labels and "initial (global)" in labels
    best = min(selection["candidates"], key=lambda c: c["selection_ppl"])
    assert selection["chosen"] == best["candidate"]
    seen = search["windows_seen"]
    assert set(seen) == {"calibration", "fitness", "selection", "evaluation"}
    assert seen["fitness"]["sets"] == 2 and search["fitness"]["metric"] == "distillation"


def test_the_pass_chooses_after_reformation(model, tokenizer, text_files):
    """search.selection_after_reformation: the searched subnet and both initial subnets are reformed; the best
    on the selection windows is the final subnet, and the report says which and why."""
    import math

    from optimum_subnet import SubnetConfig, SubnetOptimizer
    from optimum_subnet.core.errors import SubnetError
    from optimum_subnet.evaluation.perplexity import perplexity

    cal, ev = text_files
    config = SubnetConfig.preset("fast", 0.7, device="cpu", data__dataset=str(cal), data__eval_dataset=str(ev),
                                 data__seq_len=32, data__num_samples=4, data__eval_seq_len=32,
                                 data__eval_max_windows=4, faithfulness__prompts=0, search__generations=1,
                                 search__population_size=4, search__num_mutations=2, search__num_crossovers=1,
                                 search__top_k=2, search__fitness_seq_len=32, search__fitness_windows=2,
                                 search__selection_windows=3, search__selection_seq_len=24,
                                 search__selection_after_reformation=True)
    out = SubnetOptimizer(model, tokenizer).run(config)
    report = out["report"]
    choice = report["search"]["selection_after_reformation"]
    assert "selection" not in report["search"]  # chosen after reformation, not before
    labels = [c["candidate"] for c in choice["candidates"]]
    assert labels[0] == "search" and {"initial (uniform)", "initial (global)"} & set(labels)
    best = min(choice["candidates"], key=lambda c: c["selection_ppl"])
    assert choice["chosen"] == best["candidate"] and choice["windows"] == 3
    assert all(math.isfinite(c["selection_ppl"]) for c in choice["candidates"])
    assert report["searched"].get("chosen_after_reformation", "search") == choice["chosen"]
    assert out["spec"].params() == report["subnet"]["params"] == sum(p.numel() for p in out["model"].parameters())
    with pytest.raises(SubnetError, match="set selection_windows > 0"):
        SubnetConfig.preset("fast", 0.7, search__selection_after_reformation=True)


def test_selection_windows_overlap_no_other_stage_window():
    from optimum_subnet.data import calibration_starts, disjoint_starts

    calibration = calibration_starts(5000, 20, 100, 0)
    fitness = calibration_starts(5000, 8, 150, 1)
    avoid = [(s, 100) for s in calibration] + [(s, 150) for s in fitness]
    chosen = disjoint_starts(5000, 6, 120, 2, avoid)
    for i, s in enumerate(chosen):
        others = avoid + [(c, 120) for j, c in enumerate(chosen) if j != i]
        assert all(s + 120 <= a or a + n <= s for a, n in others)
    from optimum_subnet.core.errors import DataError

    with pytest.raises(DataError, match="selection windows"):
        disjoint_starts(1000, 50, 100, 2, avoid)


# ---------------------------------------------------------------------------------- KV-head search
def test_head_search_drops_whole_heads_within_budget_and_round_trips():
    from optimum_subnet.core.spec import ModelShape
    from optimum_subnet.search import SearchSpace

    shape = ModelShape(model_type="llama", hidden_size=128, num_layers=6, num_attention_heads=8,
                       num_key_value_heads=4, head_dim=16, intermediate_size=512, vocab_size=300,
                       tie_word_embeddings=True)
    g = torch.Generator().manual_seed(0)
    attention = [torch.rand(4, 16, generator=g) for _ in range(6)]
    mlp = [torch.rand(512, generator=g) for _ in range(6)]
    space = SearchSpace(shape, attention, mlp, 0.6, mlp_multiple=16, tolerance=0.01, head_search=True,
                        attention_allocation=attention, mlp_allocation=mlp)
    rng = random.Random(0)
    genome = by_heads = space.global_initial("head")
    assert space.within_budget(by_heads)
    assert any(gene.num_heads < 4 for gene in by_heads)  # FLAP by heads drops heads at this budget
    assert all(gene.attention_width == space.attention_universe for gene in by_heads)
    counts = set()
    for _ in range(40):
        child = space.mutate(genome, rng, depth_prob=0, ratio_prob=0.4, mask_prob=0.3, overlap=0.5)
        if child is None:
            continue
        assert space.within_budget(child)
        for gene in child:
            assert list(gene.kept_heads()) == sorted(set(gene.kept_heads())) and 1 <= gene.num_heads <= 4
            assert (gene.heads is None) == (gene.num_heads == 4)
            counts.add(gene.num_heads)
        genome = child
    assert len(counts) > 1
    spec = space.to_spec(genome).validate()
    assert space.from_spec(spec) == genome and spec.params() == space.params(genome)
    assert genome_from_json(json.loads(json.dumps(genome_to_json(genome)))) == genome
    plain = SearchSpace(shape, attention, mlp, 0.6, mlp_multiple=16, tolerance=0.01,
                        attention_allocation=attention, mlp_allocation=mlp)
    with pytest.raises(Exception, match="head search"):
        plain.global_initial("head")


def test_options_that_need_the_whole_model_are_refused_with_streamed_blocks(model, tokenizer):
    from optimum_subnet import SubnetConfig, SubnetOptimizer
    from optimum_subnet.core.errors import SubnetError

    optimizer = SubnetOptimizer(model, tokenizer)
    for option, value, message in [("fitness_metric", "distillation", 'fitness_metric="distillation"'),
                                   ("fitness_refresh", True, "fitness_refresh")]:
        config = SubnetConfig.preset("fast", 0.7, device="cpu", offload="on", **{f"search__{option}": value})
        with pytest.raises(SubnetError, match=f"{message}.*does not run with streamed blocks.*offload=\"auto\""):
            optimizer.preflight(config, check_memory=False)
    short = {"data__seq_len": 32, "data__eval_seq_len": 32, "search__fitness_seq_len": 32}
    optimizer.preflight(SubnetConfig.preset("fast", 0.7, device="cpu", offload="on", **short), check_memory=False)
