"""Mask mutation and crossover primitives (Shen et al. 2024, Sec. 3.3), as pure functions.

A mask is a sorted set of kept indices in ``range(universe)``. The search works on *batches* of
masks of one size (``(rows, size)`` integer arrays: the KV heads of a layer, or one MLP mask) with
numpy, because at LLaMA-7B shape a candidate holds ~350K indices and Python loops over them cost as
much as the fitness on a GPU. The tuple functions below are the same operations on one mask.

Importance is given as *ranks*: ``rank[i]`` is the position of index ``i`` when indices are sorted by
decreasing score, ties by lower index (:func:`importance_ranks`). Keeping the lowest ranks is
"keeping the most important".
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np


def as_generator(rng) -> np.random.Generator:
    """A numpy generator from ``rng``: itself, or one seeded by 64 bits drawn from a ``random.Random``
    (so the Python RNG's state alone decides every draw, and a search checkpoints only that)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng.getrandbits(64))


# ------------------------------------------------------------------------------------------ batches
def importance_ranks(scores) -> np.ndarray:
    """Rank of every index per row (0: highest score; ties: lower index first), ``(rows, universe)``."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    order = np.argsort(-scores, axis=1, kind="stable")  # stable: equal scores keep index order
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :].repeat(scores.shape[0], 0), axis=1)
    return ranks


def top_masks(ranks: np.ndarray, size: int) -> np.ndarray:
    """Per row, the ``size`` indices of lowest rank (most important), sorted: ``(rows, size)``."""
    if size >= ranks.shape[1]:
        return np.broadcast_to(np.arange(ranks.shape[1]), ranks.shape).copy()
    picked = np.argpartition(ranks, size - 1, axis=1)[:, :size] if size > 0 else ranks[:, :0]
    return np.sort(picked, axis=1)


def resize_masks(masks: np.ndarray, size: int, ranks: np.ndarray) -> np.ndarray:
    """Shrink by dropping the least important members or grow by adding the most important others."""
    rows, current = masks.shape
    if size == current:
        return masks
    if size < current:
        member_ranks = np.take_along_axis(ranks, masks, axis=1)
        keep = np.argpartition(member_ranks, size - 1, axis=1)[:, :size]
        return np.sort(np.take_along_axis(masks, keep, axis=1), axis=1)
    universe = ranks.shape[1]
    candidate = ranks.copy()
    np.put_along_axis(candidate, masks, universe, axis=1)  # members are never added again
    added = np.argpartition(candidate, size - current - 1, axis=1)[:, : size - current]
    return np.sort(np.concatenate([masks, added], axis=1), axis=1)


def mutate_masks(masks: np.ndarray, universe: int, size: int, overlap: float, rng,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Per row, a mask of ``size`` members sharing at least ``ceil(overlap * min(|mask|, size))`` of the
    row's members.

    The paper draws random masks until the overlap holds (at most eta tries), which almost never
    succeeds when the mask is large; this constructs one directly (METHOD.md's correction): keep a
    random ``ceil(overlap * k)`` of the old members, then fill the rest from the other indices,
    uniformly, or proportionally to ``weights`` (``(rows, universe)``, importance-guided fill) by
    Efraimidis-Spirakis keys ``u ** (1 / w)``.
    """
    if not 0 < size <= universe:
        raise ValueError(f"mask size {size} outside 1..{universe}")
    gen = as_generator(rng)
    masks = np.atleast_2d(np.asarray(masks, dtype=np.int64))
    rows, current = masks.shape
    keep_count = min(current, size, math.ceil(overlap * min(current, size)))
    if keep_count < current:
        chosen = np.argpartition(gen.random((rows, current)), keep_count - 1, axis=1)[:, :keep_count]
        kept = np.take_along_axis(masks, chosen, axis=1)
    else:
        kept = masks
    need = size - keep_count
    if need == 0:
        return np.sort(kept, axis=1)
    uniform = gen.random((rows, universe))
    if weights is None:
        keys = uniform
    else:
        w = np.maximum(np.atleast_2d(np.asarray(weights, dtype=np.float64)), 0.0)
        total = w.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore"):
            weighted = np.log(uniform) / np.maximum(w, total * 1e-12)
        keys = np.where(total > 0, weighted, uniform)  # all-zero weights: uniform
    np.put_along_axis(keys, kept, -np.inf, axis=1)
    added = np.argpartition(-keys, need - 1, axis=1)[:, :need]
    return np.sort(np.concatenate([kept, added], axis=1), axis=1)


# ------------------------------------------------------------------------------------- one mask
def mutate_mask(
    mask: Sequence[int],
    universe: int,
    new_size: int,
    overlap: float,
    rng: random.Random | np.random.Generator,
    weights: Sequence[float] | None = None,
) -> tuple[int, ...]:
    """:func:`mutate_masks` on one mask."""
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[None, :]
    return tuple(mutate_masks(np.asarray(mask, dtype=np.int64)[None, :], universe, new_size, overlap, rng, w)[0]
                 .tolist())


def importance_order(scores: Sequence[float]) -> list[int]:
    """Indices from most to least important (ties: lower index first)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist()


def _ranks_of(scores: Sequence[float], order: Sequence[int] | None) -> np.ndarray:
    if order is None:
        return importance_ranks(scores)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return ranks[None, :]


def top_k(scores: Sequence[float], k: int, order: Sequence[int] | None = None) -> tuple[int, ...]:
    """Indices of the k largest scores, sorted by index (ties broken by lower index)."""
    return tuple(top_masks(_ranks_of(scores, order), k)[0].tolist())


def resize_by_importance(mask: Sequence[int], new_size: int, scores: Sequence[float],
                         order: Sequence[int] | None = None) -> tuple[int, ...]:
    """:func:`resize_masks` on one mask (``order``: :func:`importance_order` of ``scores``, if known)."""
    masks = np.asarray(sorted(set(mask)), dtype=np.int64)[None, :]
    return tuple(resize_masks(masks, new_size, _ranks_of(scores, order))[0].tolist())


def overlap_fraction(old: Sequence[int], new: Sequence[int]) -> float:
    """Shared members over the smaller mask's size."""
    return len(set(old) & set(new)) / min(len(old), len(new))
