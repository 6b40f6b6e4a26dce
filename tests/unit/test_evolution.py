import pytest
import torch

from optimum_subnet.search import EvolutionarySearch, EvolutionSettings, SearchSpace
from optimum_subnet.spec import ModelShape

pytestmark = pytest.mark.unit

SHAPE = ModelShape(model_type="llama", hidden_size=128, num_layers=6, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=16, intermediate_size=512, vocab_size=300, tie_word_embeddings=True)


def _space():
    g = torch.Generator().manual_seed(0)
    attention = [torch.rand(2, 16, generator=g) for _ in range(6)]
    mlp = [torch.rand(512, generator=g) for _ in range(6)]
    return SearchSpace(SHAPE, attention, mlp, 0.7, mlp_multiple=16, tolerance=0.01)


def _fitness(space):
    """A synthetic landscape: lower when MLP channels with a hidden 'true' importance are kept, and
    when late layers are wider. The search must find better than the importance initialization."""
    g = torch.Generator().manual_seed(42)
    truth = [torch.rand(512, generator=g) for _ in range(6)]

    def fitness(genome):
        lost = sum(float(truth[i].sum() - truth[i][list(gene.mlp)].sum()) * (1 + i) for i, gene in enumerate(genome))
        return 10.0 + lost

    return fitness


SETTINGS = EvolutionSettings(population_size=12, num_mutations=6, num_crossovers=3, top_k=3, generations=6)


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

    def fitness(genome):
        calls.append(genome)
        return _fitness(space)(genome)

    a = EvolutionarySearch(space, SETTINGS, fitness, seed=7).run(space.initial())
    assert len(calls) == len(set(calls)) == a.evaluations
    b = EvolutionarySearch(space, SETTINGS, _fitness(space), seed=7).run(space.initial())
    c = EvolutionarySearch(space, SETTINGS, _fitness(space), seed=8).run(space.initial())
    assert a.best == b.best and a.best_fitness_per_generation == b.best_fitness_per_generation
    assert a.best_fitness_per_generation != c.best_fitness_per_generation or a.best != c.best


def test_zero_generations_returns_initial():
    space = _space()
    settings = EvolutionSettings(population_size=4, num_mutations=2, num_crossovers=1, top_k=2, generations=0)
    result = EvolutionarySearch(space, settings, _fitness(space)).run(space.initial())
    assert result.best == space.initial() and result.evaluations == 1
