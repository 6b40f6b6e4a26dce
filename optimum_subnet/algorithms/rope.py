"""RoPE pairs: the unit in which attention channels inside a head are kept or pruned.

Rotary embedding rotates channel ``c`` together with ``c + r/2`` (``rotate_half`` over the ``r``
rotated channels of a head), so a pruned head keeps whole pairs and every kept channel keeps its
original frequency. With partial rotary (Phi-3) the remaining ``p = head_dim - r`` channels pass
through unrotated; they are paired ``(r + j, r + j + p/2)`` as well, so every unit is two channels and
a head size stays even. Unit ``k`` is the ``k``-th pair in the order of its lower channel. One
implementation of that rule for the search, the baselines, the spec and the exporters.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=64)
def pairs(head_dim: int, rotary_dim: int = 0) -> tuple[tuple[int, int], ...]:
    """``(lower, upper)`` channels of every unit of a head, in unit order; ``rotary_dim`` 0: all rotate."""
    r = rotary_dim or head_dim
    p = head_dim - r
    rotated = [(c, c + r // 2) for c in range(r // 2)]
    passing = [(r + j, r + j + p // 2) for j in range(p // 2)]
    return tuple(rotated + passing)


def partner(channel: int, head_dim: int, rotary_dim: int = 0) -> int:
    """The channel kept together with ``channel``."""
    for lower, upper in pairs(head_dim, rotary_dim):
        if channel == lower:
            return upper
        if channel == upper:
            return lower
    raise ValueError(f"channel {channel} outside a head of {head_dim}")


def fold(channel_scores: torch.Tensor, rotary_dim: int = 0, reduce: str = "sum") -> torch.Tensor:
    """Per-channel scores (..., head_dim) -> per-unit scores (..., head_dim / 2): a pair scores the sum
    (or mean) of its two channels."""
    head_dim = channel_scores.shape[-1]
    index = torch.tensor(pairs(head_dim, rotary_dim), device=channel_scores.device)
    total = channel_scores[..., index[:, 0]] + channel_scores[..., index[:, 1]]
    return total if reduce == "sum" else total / 2


def channels_of(units, head_dim: int, rotary_dim: int = 0) -> list[int]:
    """The sorted channels that the kept ``units`` of a head hold."""
    table = pairs(head_dim, rotary_dim)
    return sorted(c for u in units for c in table[u])


def units_of(channels, head_dim: int, rotary_dim: int = 0) -> tuple[int, ...]:
    """The units a sorted, pair-complete channel list holds (inverse of :func:`channels_of`)."""
    lower_to_unit = {lower: u for u, (lower, _) in enumerate(pairs(head_dim, rotary_dim))}
    return tuple(sorted(lower_to_unit[c] for c in channels if c in lower_to_unit))
