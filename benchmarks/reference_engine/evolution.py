"""Evolutionary subnet search (Shen et al. 2024, Sec. 3.3, Algorithm 1).

The engine knows nothing about models: it talks to a :class:`SearchSpace` (candidates, budget,
mutation, crossover) and to a fitness callable (lower is better: perplexity), so it is tested
without a model.

* Generation 1: the initial subnet plus ``population_size - 1`` mutants of it (ratio mutation
  probability ``P_s0``, mask mutation probability ``P_m0``); keep the top ``k``.
* Later generations: ``num_mutations`` mutants of random top-k parents (``P_d``, ``P_s``, ``P_m``),
  ``num_crossovers`` crossovers of two random top-k parents, the rest initial-style mutants; the
  new top ``k`` is taken from the old top ``k`` and the new candidates together.

Fitness values are cached by candidate (keyed by a content hash), so a candidate met twice is
evaluated once.

Screening (``screening_keep < 1``; not in the paper, off by default): a generation's new candidates
are first ranked by a cheap proxy (``screen``: perplexity on a short window), and only the best
``screening_keep`` fraction gets the full fitness; the rest are dropped and never produced again.
This is one round of successive halving (Jamieson & Talwalkar 2016) and cuts the cost of a
generation to about ``screening cost + screening_keep`` of a full one. With a proxy that ranks like
the fitness and ``screening_keep * candidates >= top_k`` the search makes exactly the same choices.

Resuming: after every generation the engine hands ``state_dict()`` (completed generations, top-k,
fitness cache, RNG state, counters, history; plain JSON) to the ``checkpoint`` callback. A new engine
given that state with ``load_state_dict`` continues exactly where the old one stopped: a search
killed at any point and resumed from its last checkpoint ends with the same result as one that
was never interrupted (candidates of the unfinished generation are produced and evaluated again).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from optimum_subnet.core.config import SearchConfig
from optimum_subnet.core.errors import CheckpointError, SubnetError
from optimum_subnet.core.spec import SubnetSpec
from .space import Genome, SearchSpace
from .state import genome_from_json, genome_key, genome_to_json, rng_state_from_json, rng_state_to_json

logger = logging.getLogger(__name__)

STATE_FORMAT_VERSION = 1


#: The engine's settings, read from :class:`~optimum_subnet.core.config.SearchConfig` (the one declaration
#: of them); a checkpoint records these and refuses to resume with others.
ENGINE_SETTINGS = ("population_size", "num_mutations", "num_crossovers", "top_k", "generations", "mask_overlap",
                   "max_tries", "initial_ratio_mutation_prob", "initial_mask_mutation_prob", "depth_mutation_prob",
                   "ratio_mutation_prob", "mask_mutation_prob", "screening_keep")


def engine_settings(settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in ENGINE_SETTINGS}


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
    screenings: int = 0
    screening_seconds: float = 0.0

    @property
    def seconds_per_evaluation(self) -> float:
        return self.evaluation_seconds / max(1, self.evaluations)


class EvolutionarySearch:
    def __init__(self, space: SearchSpace, settings: SearchConfig, fitness: Callable[[SubnetSpec], float],
                 seed: int = 0, progress: Callable[[int, int, float], None] | None = None,
                 checkpoint: Callable[[dict[str, Any]], None] | None = None,
                 screen: Callable[[SubnetSpec], float] | None = None):
        """``fitness`` / ``screen`` score a candidate's :class:`SubnetSpec` (lower is better): the engine
        hands specs out, never models."""
        if not 0 < settings.screening_keep <= 1:
            raise SubnetError(f"screening_keep must be in (0, 1], got {settings.screening_keep}")
        if settings.screening_keep < 1 and screen is None:
            raise SubnetError("screening_keep < 1 needs a screening function (a cheap proxy of the fitness)")
        self.space = space
        self.settings = settings
        self.fitness = fitness
        self.screen = screen
        self.screened_out: set[str] = set()  # keys of candidates dropped by the screening
        self.screenings = 0
        self.screening_seconds = 0.0
        self.rng = random.Random(seed)
        self.progress = progress
        self.checkpoint = checkpoint
        self.cache: dict[str, float] = {}  # genome_key -> fitness
        self.evaluations = 0
        self.evaluation_seconds = 0.0
        # Progress of the run (what a checkpoint holds besides the cache and the RNG).
        self.generation = 0  # completed generations
        self.top: list[Genome] = []
        self.initial_key: str | None = None
        self.initial_fitness: float | None = None
        self.best_per_generation: list[float] = []
        self.history: list[dict] = []
        self.elapsed = 0.0  # search seconds spent before the current run() call (earlier processes)

    def evaluate(self, genome: Genome, key: str | None = None) -> float:
        key = key or genome_key(genome)
        if key not in self.cache:
            start = time.perf_counter()
            value = float(self.fitness(self.space.to_spec(genome)))
            self.evaluation_seconds += time.perf_counter() - start
            self.evaluations += 1
            self.cache[key] = value
        return self.cache[key]

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

    def _fresh(self, produce, parents, initial, taken: set[str]) -> tuple[Genome, str] | None:
        """A new in-budget candidate not evaluated before (at most ``max_tries`` attempts)."""
        for _ in range(self.settings.max_tries):
            child = produce(parents, initial)
            if child is not None:
                key = genome_key(child)
                if key not in self.cache and key not in taken and key not in self.screened_out:
                    return child, key
        return None

    def _screened(self, children: list[tuple[Genome, str]]) -> list[tuple[Genome, str]]:
        """The best ``screening_keep`` fraction of ``children`` by the screening proxy, in their order."""
        keep = max(1, math.ceil(self.settings.screening_keep * len(children)))
        if keep >= len(children):
            return children
        scores = []
        for child, _ in children:
            start = time.perf_counter()
            value = float(self.screen(self.space.to_spec(child)))
            self.screening_seconds += time.perf_counter() - start
            self.screenings += 1
            scores.append(value if math.isfinite(value) else math.inf)
        order = sorted(range(len(children)), key=lambda i: (scores[i], i))
        for i in order[keep:]:
            self.screened_out.add(children[i][1])
        return [children[i] for i in sorted(order[:keep])]

    # -------------------------------------------------------------------------------------- run
    def run(self, initial: Genome) -> SearchResult:
        """Run the remaining generations (all of them, unless a state was loaded) and return the best."""
        s = self.settings
        start = time.perf_counter() - self.elapsed
        if not self.top:
            self.initial_key = genome_key(initial)
            self.initial_fitness = self.evaluate(initial, self.initial_key)
            self.top = [initial]
        elif genome_key(initial) != self.initial_key:
            raise CheckpointError("the loaded search state was started from another initial subnet")
        while self.generation < s.generations:
            generation = self.generation
            if generation == 0:
                plan = [(lambda p, i: self._initial_mutant(i), s.population_size - 1)]
            else:
                rest = max(0, s.population_size - s.num_mutations - s.num_crossovers)
                plan = [(self._mutant, s.num_mutations), (self._crossover, s.num_crossovers),
                        (lambda p, i: self._initial_mutant(i), rest)]
            children: list[tuple[Genome, str]] = []
            taken: set[str] = set()
            for produce, count in plan:
                for _ in range(count):
                    fresh = self._fresh(produce, self.top, initial, taken)
                    if fresh is not None:
                        children.append(fresh)
                        taken.add(fresh[1])
            produced = len(children)
            if self.settings.screening_keep < 1:
                children = self._screened(children)
            top_keys = [genome_key(g) for g in self.top]
            for child, key in children:
                self.evaluate(child, key)
                if self.progress is not None:  # screened-out candidates count as handled
                    self.progress(generation, self.evaluations + len(self.screened_out),
                                  min(self.cache[k] for k in top_keys + [key]))
            pool: dict[str, Genome] = {}
            for genome, key in list(zip(self.top, top_keys)) + children:
                pool.setdefault(key, genome)
            ranked = sorted(pool.items(), key=lambda item: self.cache[item[0]])[: s.top_k]
            self.top = [genome for _, genome in ranked]
            best = self.cache[ranked[0][0]]
            self.generation += 1
            self.elapsed = time.perf_counter() - start
            self.best_per_generation.append(best)
            self.history.append({
                "generation": generation + 1,
                "candidates": produced,
                "evaluated": len(children),
                "best": best,
                "top_k_mean": sum(self.cache[k] for k, _ in ranked) / len(ranked),
                "evaluations": self.evaluations,
                "seconds": self.elapsed,
            })
            logger.info("generation %d/%d: best fitness %.3f (%d new candidates, %d fully evaluated, %d evaluations)",
                        generation + 1, s.generations, best, produced, len(children), self.evaluations)
            if self.checkpoint is not None:
                self.checkpoint(self.state_dict())
        self.elapsed = time.perf_counter() - start
        best_key = genome_key(self.top[0])
        return SearchResult(
            best=self.top[0],
            best_fitness=self.cache[best_key],
            initial_fitness=self.initial_fitness,
            best_fitness_per_generation=list(self.best_per_generation),
            evaluations=self.evaluations,
            seconds=self.elapsed,
            evaluation_seconds=self.evaluation_seconds,
            history=list(self.history),
            screenings=self.screenings,
            screening_seconds=self.screening_seconds,
        )

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the search exactly, as plain JSON-compatible values."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "settings": engine_settings(self.settings),
            "generation": self.generation,
            "initial_key": self.initial_key,
            "initial_fitness": self.initial_fitness,
            "top": [genome_to_json(g) for g in self.top],
            "cache": [[key, value] for key, value in self.cache.items()],
            "rng": rng_state_to_json(self.rng.getstate()),
            "evaluations": self.evaluations,
            "evaluation_seconds": self.evaluation_seconds,
            "seconds": self.elapsed,
            "best_fitness_per_generation": list(self.best_per_generation),
            "history": [dict(entry) for entry in self.history],
            "screened_out": sorted(self.screened_out),
            "screenings": self.screenings,
            "screening_seconds": self.screening_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`); :class:`CheckpointError` if it does not fit."""
        try:
            if state.get("format_version") != STATE_FORMAT_VERSION:
                raise CheckpointError(f"unsupported search state format_version {state.get('format_version')!r}")
            # settings added since a state was written take their defaults (what that version did)
            saved = {**engine_settings(SearchConfig()), **state["settings"]}
            current = engine_settings(self.settings)
            if saved != current:
                changed = sorted(k for k, v in current.items() if saved.get(k) != v)
                raise CheckpointError(f"search state was saved with other search settings ({', '.join(changed)})")
            generation = int(state["generation"])
            if not 0 <= generation <= self.settings.generations:
                raise CheckpointError(f"search state is at generation {generation} of {self.settings.generations}")
            top = [genome_from_json(g) for g in state["top"]]
            cache = {}
            for key, value in state["cache"]:
                if not isinstance(key, str) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError("fitness cache entries are [genome key, finite number]")
                cache[key] = float(value)
            rng_state = rng_state_from_json(state["rng"])
            random.Random().setstate(rng_state)  # validates it
            if not top or len(top) > self.settings.top_k:
                raise ValueError(f"top-k must hold 1..{self.settings.top_k} genomes")
            for genome in top:
                if len(genome) != self.space.shape.num_layers:
                    raise ValueError(f"a genome has {len(genome)} layers, the model {self.space.shape.num_layers}")
                self.space.to_spec(genome).validate()
                if genome_key(genome) not in cache:
                    raise ValueError("a top-k genome has no cached fitness")
            initial_key, initial_fitness = str(state["initial_key"]), float(state["initial_fitness"])
            best = [float(v) for v in state["best_fitness_per_generation"]]
            history = [dict(entry) for entry in state["history"]]
            if len(best) != generation or len(history) != generation:
                raise ValueError("history does not match the generation count")
            evaluations, evaluation_seconds, seconds = (int(state["evaluations"]), float(state["evaluation_seconds"]),
                                                        float(state["seconds"]))
            screened_out = state.get("screened_out", [])
            if not all(isinstance(key, str) for key in screened_out):
                raise ValueError("screened_out holds genome keys")
            screenings, screening_seconds = int(state.get("screenings", 0)), float(state.get("screening_seconds", 0.0))
        except CheckpointError:
            raise
        except SubnetError as e:  # InvalidSpecError of a top-k genome
            raise CheckpointError(f"search state holds an invalid subnet: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"search state is malformed: {type(e).__name__}: {e}") from None
        self.rng.setstate(rng_state)
        self.cache = cache
        self.top = top
        self.generation = generation
        self.initial_key, self.initial_fitness = initial_key, initial_fitness
        self.best_per_generation, self.history = best, history
        self.evaluations, self.evaluation_seconds, self.elapsed = evaluations, evaluation_seconds, seconds
        self.screened_out, self.screenings, self.screening_seconds = set(screened_out), screenings, screening_seconds
