"""Evolutionary subnet search (Shen et al. 2024, Sec. 3.3, Algorithm 1).

The engine knows nothing about models: it talks to a :class:`SearchSpace` (candidates, budget,
mutation, crossover) and to a fitness callable (lower is better: perplexity), so it is tested
without a model.

* Generation 1: the initial subnet plus ``population_size - 1`` mutants of it (ratio mutation
  probability ``P_s0``, mask mutation probability ``P_m0``); keep the top ``k``.
* Later generations: ``num_mutations`` mutants of random top-k parents (``P_d``, ``P_s``, ``P_m``),
  ``num_crossovers`` crossovers of two random top-k parents, the rest initial-style mutants; the
  new top ``k`` is taken from the old top ``k`` and the new candidates together.

Fitness values are cached by candidate, so a candidate met twice is evaluated once.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from .space import Genome, SearchSpace

logger = logging.getLogger(__name__)


@dataclass
class EvolutionSettings:
    population_size: int = 100
    num_mutations: int = 50
    num_crossovers: int = 30
    top_k: int = 10
    generations: int = 50
    mask_overlap: float = 0.8  # alpha
    max_tries: int = 1000  # eta: attempts to produce a new, in-budget, unseen candidate
    initial_ratio_mutation_prob: float = 0.3  # P_s0
    initial_mask_mutation_prob: float = 0.6  # P_m0
    depth_mutation_prob: float = 0.1  # P_d
    ratio_mutation_prob: float = 0.1  # P_s
    mask_mutation_prob: float = 0.3  # P_m


@dataclass
class SearchResult:
    best: Genome
    best_fitness: float
    initial_fitness: float
    best_fitness_per_generation: list[float]
    evaluations: int
    seconds: float
    evaluation_seconds: float
    history: list[dict] = field(default_factory=list)

    @property
    def seconds_per_evaluation(self) -> float:
        return self.evaluation_seconds / max(1, self.evaluations)


class EvolutionarySearch:
    def __init__(self, space: SearchSpace, settings: EvolutionSettings, fitness: Callable[[Genome], float],
                 seed: int = 0, progress: Callable[[int, int, float], None] | None = None):
        self.space = space
        self.settings = settings
        self.fitness = fitness
        self.rng = random.Random(seed)
        self.progress = progress
        self.cache: dict[Genome, float] = {}
        self.evaluations = 0
        self.evaluation_seconds = 0.0

    def evaluate(self, genome: Genome) -> float:
        if genome not in self.cache:
            start = time.perf_counter()
            self.cache[genome] = float(self.fitness(genome))
            self.evaluation_seconds += time.perf_counter() - start
            self.evaluations += 1
        return self.cache[genome]

    # -------------------------------------------------------------------------------- producers
    def _initial_mutant(self, initial: Genome) -> Genome | None:
        s = self.settings
        return self.space.mutate(initial, self.rng, depth_prob=s.depth_mutation_prob,
                                 ratio_prob=s.initial_ratio_mutation_prob, mask_prob=s.initial_mask_mutation_prob,
                                 overlap=s.mask_overlap, reference=initial)

    def _mutant(self, parents: list[Genome], initial: Genome) -> Genome | None:
        s = self.settings
        return self.space.mutate(self.rng.choice(parents), self.rng, depth_prob=s.depth_mutation_prob,
                                 ratio_prob=s.ratio_mutation_prob, mask_prob=s.mask_mutation_prob,
                                 overlap=s.mask_overlap, reference=initial)

    def _crossover(self, parents: list[Genome], _initial: Genome) -> Genome | None:
        if len(parents) < 2:
            return None
        a, b = self.rng.sample(parents, 2)
        return self.space.crossover(a, b, self.rng)

    def _fresh(self, produce, parents, initial, taken: set) -> Genome | None:
        """A new in-budget candidate not evaluated before (at most ``max_tries`` attempts)."""
        for _ in range(self.settings.max_tries):
            child = produce(parents, initial)
            if child is not None and child not in self.cache and child not in taken:
                return child
        return None

    # -------------------------------------------------------------------------------------- run
    def run(self, initial: Genome) -> SearchResult:
        s = self.settings
        start = time.perf_counter()
        initial_fitness = self.evaluate(initial)
        top: list[Genome] = [initial]
        best_per_generation: list[float] = []
        history: list[dict] = []
        for generation in range(s.generations):
            if generation == 0:
                plan = [(lambda p, i: self._initial_mutant(i), s.population_size - 1)]
            else:
                rest = max(0, s.population_size - s.num_mutations - s.num_crossovers)
                plan = [(self._mutant, s.num_mutations), (self._crossover, s.num_crossovers),
                        (lambda p, i: self._initial_mutant(i), rest)]
            children: list[Genome] = []
            taken: set = set()
            for produce, count in plan:
                for _ in range(count):
                    child = self._fresh(produce, top, initial, taken)
                    if child is not None:
                        children.append(child)
                        taken.add(child)
            for child in children:
                self.evaluate(child)
                if self.progress is not None:
                    self.progress(generation, self.evaluations, min(self.cache[g] for g in top + [child]))
            pool = list(dict.fromkeys(top + children))
            pool.sort(key=lambda g: self.cache[g])
            top = pool[: s.top_k]
            best_per_generation.append(self.cache[top[0]])
            history.append({
                "generation": generation + 1,
                "candidates": len(children),
                "best": self.cache[top[0]],
                "top_k_mean": sum(self.cache[g] for g in top) / len(top),
                "evaluations": self.evaluations,
                "seconds": time.perf_counter() - start,
            })
            logger.info("generation %d/%d: best fitness %.3f (%d new candidates, %d evaluations)",
                        generation + 1, s.generations, self.cache[top[0]], len(children), self.evaluations)
        return SearchResult(
            best=top[0],
            best_fitness=self.cache[top[0]],
            initial_fitness=initial_fitness,
            best_fitness_per_generation=best_per_generation,
            evaluations=self.evaluations,
            seconds=time.perf_counter() - start,
            evaluation_seconds=self.evaluation_seconds,
            history=history,
        )
