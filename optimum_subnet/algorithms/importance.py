"""Importance scores that initialize the search (Shen et al. 2024, Sec. 3.2, Eq. 2-4).

For a weight ``W`` (out x in) whose input activations ``X`` (in x tokens) have Gram ``H = X X^T``,
the OBS / SparseGPT saliency of one weight is

    Phi_ij = W_ij^2 / [(2 H)^-1]_jj ,

the increase of the layer's squared output error when ``W_ij`` alone is removed and the rest is
optimally compensated. Rows and columns are scored by summing: ``Phi^r_i = sum_j Phi_ij``,
``Phi^c_j = sum_i Phi_ij``. Attention channels score ``Phi^r_Q + Phi^r_K + Phi^r_V + Phi^c_O`` and MLP
channels ``Phi^r_U + Phi^r_G + Phi^c_D`` (Eq. 4).
"""

from __future__ import annotations

import torch


def damped_inverse_diagonal(gram: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """``diag((2 H + lambda I)^-1)`` with ``lambda = damp * mean(diag(2 H))`` (SparseGPT's dampening).

    Computed in float64 through a Cholesky factorization; falls back to a stronger damping if the
    matrix is not positive definite (e.g. dead input channels). Memory: one float64 copy of ``gram``
    (damped in place on its diagonal, freed once factored), the factor and the inverse: at a 30B shape's
    MLP width (17920) each is 2.6 GB, and an identity and a damped copy beside them ran the importance
    stage 17% over the memory guard's estimate (benchmarks/results/offload_30b_h200.md).
    """
    h = 2.0 * gram.to(torch.float64)  # a copy even of a float64 gram: the caller's stays untouched
    diagonal = torch.diagonal(h)
    mean_diag = diagonal.mean().clamp_min(1e-12)
    applied = 0.0
    for factor in (damp, damp * 10, damp * 100, 1.0):
        diagonal.add_(factor * mean_diag - applied)
        applied = factor * mean_diag
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            del h, diagonal
            return torch.diagonal(torch.cholesky_inverse(chol)).clone()
    raise FloatingPointError("Gram matrix is not positive definite even with strong damping")


def obs_saliency(weight: torch.Tensor, gram: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """``Phi_ij = W_ij^2 / [(2 H)^-1]_jj`` (out x in), in float64."""
    return saliency_from_inverse_diagonal(weight, damped_inverse_diagonal(gram, damp))


def saliency_from_inverse_diagonal(weight: torch.Tensor, inverse_diagonal: torch.Tensor) -> torch.Tensor:
    """``Phi_ij = W_ij^2 / d_j`` with ``d = diag((2 H)^-1)`` already computed (shared by W_Q/W_K/W_V)."""
    return weight.to(torch.float64).pow(2) / inverse_diagonal.to(weight.device).unsqueeze(0)


def row_scores(saliency: torch.Tensor) -> torch.Tensor:
    return saliency.sum(dim=1)


def column_scores(saliency: torch.Tensor) -> torch.Tensor:
    return saliency.sum(dim=0)


def attention_channel_scores(
    q_rows: torch.Tensor,
    k_rows: torch.Tensor,
    v_rows: torch.Tensor,
    o_columns: torch.Tensor,
    num_kv_heads: int,
    head_dim: int,
) -> torch.Tensor:
    """Score of each (KV head, channel): ``Phi^r_Q + Phi^r_K + Phi^r_V + Phi^c_O`` summed over the
    query heads that share the KV head (GQA), shape ``(num_kv_heads, head_dim)``."""
    q = q_rows.reshape(num_kv_heads, -1, head_dim).sum(dim=1)
    o = o_columns.reshape(num_kv_heads, -1, head_dim).sum(dim=1)
    return q + o + k_rows.reshape(num_kv_heads, head_dim) + v_rows.reshape(num_kv_heads, head_dim)


def rope_pair_scores(channel_scores: torch.Tensor, rotary_dim: int = 0) -> torch.Tensor:
    """Channels ``i`` and ``i + r/2`` rotate together under RoPE; a pair scores their sum (:mod:`.rope`)."""
    from optimum_subnet.algorithms import rope

    return rope.fold(channel_scores, rotary_dim)


def mlp_channel_scores(gate_rows: torch.Tensor, up_rows: torch.Tensor, down_columns: torch.Tensor) -> torch.Tensor:
    return gate_rows + up_rows + down_columns
