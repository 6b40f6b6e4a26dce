"""Scores and allocation rules of the structured-pruning baselines, as pure functions.

Every baseline scores the *input channels* of the column-pruned projections (W_O for attention,
W_down for the MLP) from per-channel activation moments, then groups channels into prunable units
(attention heads or RoPE pairs, MLP channels). Definitions follow the papers (and their reference
code where the paper is silent):

* **Wanda-sp** (structured Wanda; Sun et al. 2024, "A Simple and Effective Pruning Approach for
  LLMs", as adapted to structures by An et al. 2024): ``S_j = mean_i |W_ij| * ||X_j||`` with
  ``||X_j||`` the root mean square of input channel ``j``.
* **FLAP** (An et al. 2024, "Fluctuation-based Adaptive Structured Pruning for LLMs", Eq. 4-6): the
  weighted input feature variance ``S_j = Var(X_j) * ||W_:,j||^2`` (WIFV); attention channels use
  its square (as FLAP's code does); scores are standardized per layer and module, so one global
  threshold compares attention and MLP units of every layer (Eq. 7); the removed channels' mean
  contribution is added back as a bias (Eq. 8): ``b = W_:,P mean(X_P)``.
* **Magnitude-sp**: ``S_j = ||W_:,j||_2`` (no data).
"""

from __future__ import annotations

import torch


def wanda_sp_scores(weight: torch.Tensor, mean_square: torch.Tensor) -> torch.Tensor:
    """``mean_i |W_ij| sqrt(E[x_j^2])`` per input channel ``j`` (in,)."""
    return (weight.abs().to(torch.float64) * mean_square.to(torch.float64).clamp_min(0).sqrt().unsqueeze(0)).mean(0)


def fluctuation_scores(weight: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """FLAP's WIFV, ``Var(x_j) * sum_i W_ij^2`` per input channel ``j`` (in,)."""
    return variance.to(torch.float64) * weight.to(torch.float64).pow(2).sum(0)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each input column ``||W_:,j||`` (in,)."""
    return weight.to(torch.float64).norm(dim=0)


def standardize(scores: torch.Tensor) -> torch.Tensor:
    """``(s - mean(s)) / std(s)`` over the last dimension (FLAP's per-layer standardization; std is the
    unbiased one, as ``torch.std``). A constant row becomes zeros instead of NaN."""
    scores = scores.to(torch.float64)
    std = scores.std(dim=-1, keepdim=True)
    centered = scores - scores.mean(dim=-1, keepdim=True)
    return torch.where(std > 0, centered / std.clamp_min(1e-300), torch.zeros_like(centered))


def group_attention_channels(channel_scores: torch.Tensor, num_kv_heads: int, group_size: int, head_dim: int,
                             reduce: str = "sum") -> torch.Tensor:
    """Scores of W_O's input channels (num_heads * head_dim,) gathered per (KV head, channel):
    the query heads that share a KV head (GQA) are pruned together, so their scores combine.
    Returns (num_kv_heads, head_dim)."""
    grouped = channel_scores.reshape(num_kv_heads, group_size, head_dim)
    return grouped.sum(1) if reduce == "sum" else grouped.mean(1)


def head_scores(kv_channel_scores: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """One score per KV head (its whole query group) from (num_kv_heads, head_dim) channel scores."""
    return kv_channel_scores.sum(1) if reduce == "sum" else kv_channel_scores.mean(1)


def pair_scores(kv_channel_scores: torch.Tensor, reduce: str = "sum", rotary_dim: int = 0) -> torch.Tensor:
    """One score per RoPE pair (:mod:`.rope`) per KV head: (num_kv_heads, head_dim/2)."""
    from optimum_subnet.algorithms import rope

    return rope.fold(kv_channel_scores, rotary_dim, reduce)


def bias_compensation(weight: torch.Tensor, mean_input: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """FLAP's baseline bias ``b = W_:,P mean(x_P)`` for the removed input channels ``P`` (out,): the
    pruned layer then outputs the dense layer's output minus only the *fluctuation* of the removed
    channels, so its mean output on calibration data is unchanged."""
    removed = torch.ones(weight.shape[1], dtype=torch.bool, device=weight.device)
    removed[kept.to(weight.device)] = False
    return weight.to(torch.float64)[:, removed] @ mean_input.to(weight.device, torch.float64)[removed]


def counts_above(unit_scores: list[torch.Tensor], threshold: float) -> list[int]:
    """How many units of each group score strictly above one global ``threshold`` (FLAP, Eq. 7)."""
    return [int((scores.to(torch.float64) > threshold).sum()) for scores in unit_scores]
