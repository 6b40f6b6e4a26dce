"""Mask mutation and crossover primitives (Shen et al. 2024, Sec. 3.3), as pure functions.

A mask is a sorted tuple of kept indices in ``range(universe)``.
"""

from __future__ import annotations

import math
import random
from typing import Sequence


def mutate_mask(
    mask: Sequence[int],
    universe: int,
    new_size: int,
    overlap: float,
    rng: random.Random,
    weights: Sequence[float] | None = None,
) -> tuple[int, ...]:
    """A mask of ``new_size`` members sharing at least ``ceil(overlap * min(|mask|, new_size))`` of
    ``mask``'s members.

    The paper draws random masks until the overlap holds (at most eta tries), which almost never
    succeeds when the mask is large; this constructs one directly (METHOD.md's correction): keep a
    random ``ceil(overlap * k)`` of the old members, then fill the rest from the other indices,
    uniformly, or proportionally to ``weights`` when given (importance-guided fill).
    """
    if not 0 < new_size <= universe:
        raise ValueError(f"mask size {new_size} outside 1..{universe}")
    old = list(mask)
    keep_count = min(len(old), new_size, math.ceil(overlap * min(len(old), new_size)))
    kept = set(rng.sample(old, keep_count))
    others = [i for i in range(universe) if i not in kept]
    need = new_size - keep_count
    if weights is None:
        kept.update(rng.sample(others, need))
    else:
        kept.update(_weighted_sample(others, [max(float(weights[i]), 0.0) for i in others], need, rng))
    return tuple(sorted(kept))


def _weighted_sample(population: list[int], weights: list[float], k: int, rng: random.Random) -> list[int]:
    """k distinct items drawn with probability proportional to weight (Efraimidis-Spirakis keys)."""
    if k <= 0:
        return []
    total = sum(weights)
    if total <= 0:
        return rng.sample(population, k)
    floor = total * 1e-12
    keys = [(rng.random() ** (1.0 / max(w, floor)), item) for item, w in zip(population, weights)]
    keys.sort(reverse=True)
    return [item for _, item in keys[:k]]


def importance_order(scores: Sequence[float]) -> list[int]:
    """Indices from most to least important (ties: lower index first). Computed once per score vector,
    it turns :func:`top_k` and :func:`resize_by_importance` into slices (the search calls them for every
    layer of every candidate)."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


def top_k(scores: Sequence[float], k: int, order: Sequence[int] | None = None) -> tuple[int, ...]:
    """Indices of the k largest scores, sorted by index (ties broken by lower index)."""
    order = importance_order(scores) if order is None else order
    return tuple(sorted(order[:k]))


def resize_by_importance(mask: Sequence[int], new_size: int, scores: Sequence[float],
                         order: Sequence[int] | None = None) -> tuple[int, ...]:
    """Shrink by dropping the least important members or grow by adding the most important others.

    ``order``: :func:`importance_order` of ``scores``, if the caller has it (the search does)."""
    current = set(mask)
    order = importance_order(scores) if order is None else order
    if new_size < len(current):
        return tuple(sorted([i for i in order if i in current][:new_size]))
    added = []
    need = new_size - len(current)
    for i in order:
        if len(added) >= need:
            break
        if i not in current:
            added.append(i)
    return tuple(sorted(current.union(added)))


def overlap_fraction(old: Sequence[int], new: Sequence[int]) -> float:
    """Shared members over the smaller mask's size."""
    return len(set(old) & set(new)) / min(len(old), len(new))
