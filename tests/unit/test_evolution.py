import json
import math

import pytest
import torch

from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.config import SearchConfig
from optimum_subnet.search import EvolutionarySearch, SearchSpace
from optimum_subnet.search.state import genome_key
from optimum_subnet.core.spec import ModelShape

pytestmark = pytest.mark.unit

SHAPE = ModelShape(model_type="llama", hidden_size=128, num_layers=6, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=16, intermediate_size=512, vocab_size=300, tie_word_embeddings=True)


def _space():
    g = torch.Generator().manual_seed(0)
    attention = [torch.rand(2, 16, generator=g) for _ in range(6)]
    mlp = [torch.rand(512, generator=g) for _ in range(6)]
    return SearchSpace(SHAPE, attention, mlp, 0.7, mlp_multiple=16, tolerance=0.01)


def batch(score):
    """The engine scores lists of specs; ``score`` one spec."""
    return lambda specs: [score(spec) for spec in specs]


def _fitness(space):
    """The engine's fitness on :func:`_landscape` (a list of specs in, one value each out)."""
    return batch(_landscape(space))


def _landscape(space):
    """A synthetic landscape: lower when MLP channels with a hidden 'true' importance are kept, and
    when late layers are wider. The search must find better than the importance initialization."""
    g = torch.Generator().manual_seed(42)
    truth = [torch.rand(512, generator=g) for _ in range(6)]

    def fitness(spec):  # the engine hands out specs; the landscape is defined on genes
        genome = space.from_spec(spec)
        lost = sum(float(truth[i].sum() - truth[i][list(gene.mlp)].sum()) * (1 + i) for i, gene in enumerate(genome))
        return 10.0 + lost

    return fitness


SETTINGS = SearchConfig(population_size=12, num_mutations=6, num_crossovers=3, top_k=3, generations=6)


def test_search_improves_on_initial_and_is_monotone():
    space = _space()
    result = EvolutionarySearch(space, SETTINGS, _fitness(space), seed=0).run(space.initial())
    assert result.best_fitness < result.initial_fitness
    per_generation = result.best_fitness_per_generation
    assert all(a >= b for a, b in zip(per_generation, per_generation[1:]))
    assert space.within_budget(result.best)
    assert len(per_generation) == SETTINGS.generations


def test_same_seed_same_result_and_cache_avoids_repeats():
    space = _space()
    calls = []

    landscape = _landscape(space)

    def fitness(spec):
        calls.append(space.from_spec(spec))
        return landscape(spec)

    a = EvolutionarySearch(space, SETTINGS, batch(fitness), seed=7).run(space.initial())
    assert len(calls) == len(set(calls)) == a.evaluations
    b = EvolutionarySearch(space, SETTINGS, _fitness(space), seed=7).run(space.initial())
    c = EvolutionarySearch(space, SETTINGS, _fitness(space), seed=8).run(space.initial())
    assert a.best == b.best and a.best_fitness_per_generation == b.best_fitness_per_generation
    assert a.best_fitness_per_generation != c.best_fitness_per_generation or a.best != c.best


def test_zero_generations_returns_initial():
    space = _space()
    settings = SearchConfig(population_size=4, num_mutations=2, num_crossovers=1, top_k=2, generations=0)
    result = EvolutionarySearch(space, settings, _fitness(space)).run(space.initial())
    assert result.best == space.initial() and result.evaluations == 1


# ---------------------------------------------------------------- screening (successive halving)
BASE = dict(population_size=12, num_mutations=6, num_crossovers=3, top_k=3, generations=6)


def test_a_proxy_that_ranks_like_the_fitness_gives_the_same_search_with_fewer_evaluations():
    space = _space()
    plain = EvolutionarySearch(space, SearchConfig(**BASE), _fitness(space), seed=3).run(space.initial())
    fitness = _landscape(space)
    screened = EvolutionarySearch(space, SearchConfig(**BASE, screening_keep=0.5), batch(fitness), seed=3,
                                  screen=batch(lambda g: 2.0 * fitness(g) + 1.0)).run(space.initial())
    assert screened.best == plain.best
    assert screened.best_fitness_per_generation == plain.best_fitness_per_generation
    # 1 initial + ceil(half) of each generation's new candidates, every candidate screened
    produced = [h["candidates"] for h in screened.history]
    assert screened.evaluations == 1 + sum(math.ceil(0.5 * n) for n in produced)
    assert screened.screenings == sum(produced) and screened.evaluations < plain.evaluations
    assert [h["evaluated"] for h in screened.history] == [math.ceil(0.5 * n) for n in produced]


def test_screened_out_candidates_are_never_evaluated_nor_produced_again():
    space = _space()
    fitness = _landscape(space)
    evaluated, screened = [], []

    def full(spec):
        evaluated.append(genome_key(space.from_spec(spec)))
        return fitness(spec)

    def screen(spec):  # a noisy proxy: ranks differently from the fitness
        key = genome_key(space.from_spec(spec))
        screened.append(key)
        return fitness(spec) + (hash(key) % 7)

    search = EvolutionarySearch(space, SearchConfig(**BASE, screening_keep=0.25), batch(full), seed=0,
                                screen=batch(screen))
    result = search.run(space.initial())
    assert len(screened) == len(set(screened))  # nothing produced twice
    dropped = set(screened) - set(evaluated)
    assert dropped and dropped == search.screened_out
    assert result.best_fitness <= result.initial_fitness and space.within_budget(result.best)


def test_a_screened_search_resumes_exactly():
    space = _space()
    settings = SearchConfig(**BASE, screening_keep=0.4)
    fitness = _landscape(space)

    def screen(spec):
        return fitness(spec) + (hash(genome_key(space.from_spec(spec))) % 5)

    states = []
    reference = EvolutionarySearch(space, settings, batch(fitness), seed=2, screen=batch(screen),
                                   checkpoint=lambda s: states.append(json.loads(json.dumps(s)))).run(space.initial())
    resumed = EvolutionarySearch(space, settings, batch(fitness), seed=99, screen=batch(screen))
    resumed.load_state_dict(states[2])
    result = resumed.run(space.initial())
    assert result.best == reference.best and result.evaluations == reference.evaluations
    assert result.screenings == reference.screenings


def test_screening_needs_a_proxy_and_a_valid_fraction():
    space = _space()
    with pytest.raises(SubnetError, match="screening function"):
        EvolutionarySearch(space, SearchConfig(**BASE, screening_keep=0.5), _fitness(space))
    with pytest.raises(SubnetError, match="screening_keep"):
        EvolutionarySearch(space, SearchConfig(**BASE, screening_keep=0.0), _fitness(space), screen=batch(len))
    from optimum_subnet import SubnetConfig

    with pytest.raises(SubnetError, match="screening_keep"):
        SubnetConfig.preset("fast", 0.8, search__screening_keep=1.5)


def test_the_pass_reports_its_screening(tmp_path, model, tokenizer, text_files):
    from optimum_subnet import SubnetConfig, SubnetOptimizer

    cal, ev = text_files
    config = SubnetConfig.preset("fast", 0.7, device="cpu", data__dataset=str(cal), data__eval_dataset=str(ev),
                                 data__seq_len=32, data__num_samples=8, data__eval_seq_len=32,
                                 data__eval_max_windows=4, faithfulness__prompts=0, search__generations=2,
                                 search__population_size=8, search__num_mutations=4, search__num_crossovers=2,
                                 search__top_k=2, search__fitness_seq_len=32, search__fitness_windows=2,
                                 search__screening_keep=0.5, search__screening_seq_len=16,
                                 search__screening_method="masked")
    report = SubnetOptimizer(model, tokenizer).run(config)["report"]
    screening = report["search"]["screening"]
    assert screening["keep"] == 0.5 and screening["windows"] == 1 and screening["seq_len"] == 16
    assert screening["method"] == "masked" == screening["method_requested"]
    produced = sum(h["candidates"] for h in report["search"]["history"])
    assert screening["screenings"] == produced
    assert report["search"]["evaluations"] < produced + 1
    assert SubnetConfig.from_dict(config.to_dict()).search.screening_keep == 0.5
