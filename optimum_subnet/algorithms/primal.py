"""Primal-Attention math (Chen et al., NeurIPS 2023): feature maps, the causal running-sum form, the
KSVD objective, the calibration fit and the attention-spectrum diagnosis. Plain tensor functions.

The functions a primal layer runs at inference (feature map, causal running sums, projection scores,
KSVD objective) are defined in :mod:`optimum_subnet.primal.modeling_primal`, the self-contained file
saved beside the weights, and re-exported here, so the code that is tested is the code that ships.

Calibration fit, no training (:func:`cosine_kernel_svd`, :func:`ridge_regression`):

* ``W_e`` / ``W_r`` from the top-``s`` singular vectors of the cosine kernel
  ``K = Phi_q Phi_k^T / T`` of the calibration tokens (the KSVD of Sec. 3: the dual's solution is the
  SVD of the kernel, and the primal variables are ``W_e = Phi_k^T H_r``, ``W_r = Phi_q^T H_e`` with
  the singular vectors as dual variables, Sec. 3.2). Computed from the d x d Gram matrices
  ``G = Phi^T Phi / T``, which stream over any number of tokens; the T x T kernel is never formed.
  With ``E = Phi_q W_e`` and ``R = Phi_k W_r``, ``E diag(1/sigma) R^T / T`` is the best rank-``s``
  approximation of ``K`` (Eckart-Young), and ``lambda = sigma^(-1/2)`` makes the KSVD objective
  ``J`` exactly zero on the calibration data: the stationary point the paper's KKT analysis
  characterizes (J = 0).
* the output projection by ridge regression (with an intercept) from the features ``[e; r]`` of all
  heads to the original attention layer's outputs.
"""

from __future__ import annotations

import torch

from optimum_subnet.primal.modeling_primal import (
    causal_features,
    feature_map,
    ksvd_objective,
    projection_scores,
    repeat_kv,
)

__all__ = [
    "attention_spectrum",
    "causal_features",
    "cosine_kernel_svd",
    "energy_rank",
    "feature_map",
    "ksvd_lambda",
    "ksvd_objective",
    "projection_scores",
    "repeat_kv",
    "ridge_regression",
    "sqrt_factor",
]


def sqrt_factor(gram: torch.Tensor) -> torch.Tensor:
    """``R`` with ``R^T R = G`` for symmetric PSD ``G`` (batched): ``D^(1/2) P^T`` from ``G = P D P^T``
    (negative round-off eigenvalues clamped to zero)."""
    values, vectors = torch.linalg.eigh(gram)
    return values.clamp_min(0).sqrt().unsqueeze(-1) * vectors.transpose(-1, -2)


def cosine_kernel_svd(gram_q: torch.Tensor, gram_k: torch.Tensor, rank: int):
    """Top-``rank`` KSVD of the cosine kernel ``K = Phi_q Phi_k^T / T`` from ``G_q = Phi_q^T Phi_q / T``
    and ``G_k = Phi_k^T Phi_k / T`` (each (..., d, d)): ``(W_e, W_r, sigma)``, (..., d, rank) twice
    and (..., rank), such that ``Phi_q W_e = sqrt(T) U_s diag(sigma)`` and
    ``Phi_k W_r = sqrt(T) V_s diag(sigma)`` for the SVD ``K = U diag(sigma) V^T``.

    Why it holds: with ``Phi_q / sqrt(T) = Q_q R_q`` and ``Phi_k / sqrt(T) = Q_k R_k`` (``Q``
    orthonormal, ``R^T R = G``), ``K = Q_q (R_q R_k^T) Q_k^T``; the SVD ``R_q R_k^T = A S B^T`` of the
    small matrix gives ``U = Q_q A``, ``V = Q_k B``, and ``W_e = R_k^T B_s``, ``W_r = R_q^T A_s``.
    """
    r_q, r_k = sqrt_factor(gram_q.double()), sqrt_factor(gram_k.double())
    a, s, bh = torch.linalg.svd(r_q @ r_k.transpose(-1, -2))
    w_e = r_k.transpose(-1, -2) @ bh.transpose(-1, -2)[..., :rank]
    w_r = r_q.transpose(-1, -2) @ a[..., :rank]
    return w_e, w_r, s[..., :rank]


def ksvd_lambda(sigma: torch.Tensor, floor: float = 1e-6) -> torch.Tensor:
    """``lambda = sigma^(-1/2)``: with the fit's ``W_e`` / ``W_r``, mean ||e * lambda||^2 = mean
    ||r * lambda||^2 = sum(lambda^2 sigma^2) = sum(sigma) = Tr(W_e^T W_r), so J = 0. Singular values
    below ``floor`` times the largest (a kernel of lower rank than asked) are clamped."""
    top = sigma.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(sigma.dtype).tiny)
    return sigma.clamp_min(floor * top).rsqrt()


def ridge_regression(xtx: torch.Tensor, xty: torch.Tensor, x_sum: torch.Tensor, y_sum: torch.Tensor, count: int,
                     damp: float):
    """Ridge regression with an (unpenalized) intercept from streamed statistics: ``(W, b)`` minimizing
    ``sum ||y - W x - b||^2 + damp * mean(diag(C)) * ||W||^2``, with ``C`` the centered Gram of ``x``.

    ``xtx = sum x x^T`` (p, p), ``xty = sum x y^T`` (p, q), ``x_sum`` (p), ``y_sum`` (q); returns
    ``W`` (q, p) and ``b`` (q). The damping is relative to the features' scale so one default fits
    every layer.
    """
    xtx, xty, x_sum, y_sum = xtx.double(), xty.double(), x_sum.double(), y_sum.double()
    x_mean, y_mean = x_sum / count, y_sum / count
    centered = xtx - count * torch.outer(x_mean, x_mean)
    cross = xty - count * torch.outer(x_mean, y_mean)
    ridge = damp * centered.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
    eye = torch.eye(centered.shape[0], dtype=centered.dtype, device=centered.device)
    solution = torch.linalg.solve(centered + ridge * eye, cross)  # (p, q)
    weight = solution.T
    return weight, y_mean - weight @ x_mean


def energy_rank(singular_values: torch.Tensor, threshold: float) -> torch.Tensor:
    """Smallest rank whose squared singular values reach ``threshold`` of the total energy (batched)."""
    energy = singular_values.double().pow(2)
    cumulative = energy.cumsum(-1) / energy.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return (cumulative < threshold - 1e-12).sum(-1) + 1


def attention_spectrum(attention: torch.Tensor, thresholds=(0.9, 0.95, 0.99)):
    """Spectrum of attention matrices (..., n, n): the normalized cumulative singular values
    ``cumsum(sigma) / sum(sigma)`` (..., n), as the paper plots them (Fig. 1), and per threshold the
    rank reaching that fraction of the energy ``sum sigma^2`` (..., ) each."""
    sigma = torch.linalg.svdvals(attention.double())
    cumulative = sigma.cumsum(-1) / sigma.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return cumulative, {t: energy_rank(sigma, t) for t in thresholds}
