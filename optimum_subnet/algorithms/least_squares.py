"""Reformation solvers: rectify the kept columns of a column-pruned layer (Shen et al. 2024, Sec. 3.4).

Only layers whose *columns* are pruned (W_O, W_down) can be compensated: the omitted input channels'
contribution ``W X`` is re-expressed with the kept ones. With ``S`` the kept columns the problem is

    min_{W_hat}  || W_hat X_S' - W X ||_F^2 ,

where ``X`` are the dense layer's inputs and ``X_S'`` the inputs the pruned layer really sees (equal
to ``X_S`` for MLP channels; slightly different for attention channels, whose scores change when
Q/K channels go). With ``H' = X_S' X_S'^T`` and ``C = X X_S'^T`` the exact solution is

    W_hat = W C (H' + lambda I)^-1            (closed form)

which for ``X_S' = X_S`` is the ``W H_{:,S} (H_{S,S} + lambda I)^-1`` of METHOD.md (our ridge pulls
towards the inherited weights instead of zero). The paper solves the same problem with ADMM
(Eq. 9-11); both are offered.
"""

from __future__ import annotations

import torch


def _damped(h: torch.Tensor, damp: float) -> torch.Tensor:
    mean_diag = torch.diagonal(h).mean().clamp_min(1e-12)
    return h + damp * mean_diag * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)


def closed_form(weight: torch.Tensor, cross: torch.Tensor, gram_kept: torch.Tensor, damp: float = 1e-4,
                prior: torch.Tensor | None = None) -> torch.Tensor:
    """Exact (ridge) least squares ``(W C + lambda P) (H' + lambda I)^-1`` (out x |S|), in float64.

    ``weight``: dense W (out x in); ``cross``: ``C = X X_S'^T`` (in x |S|); ``gram_kept``:
    ``H' = X_S' X_S'^T`` (|S| x |S|); ``lambda = damp * mean(diag H')``. The ridge pulls the solution
    towards ``prior`` (``P``: pass the inherited weights ``W_{:,S}``) rather than towards zero, so strong
    damping degrades gracefully into plain inheritance instead of shrinking the layer; without a prior
    it is the plain ridge ``W C (H' + lambda I)^-1``.
    """
    w = weight.to(torch.float64)
    h = gram_kept.to(torch.float64)
    lam = damp * torch.diagonal(h).mean().clamp_min(1e-12)
    rhs = w @ cross.to(torch.float64)  # out x |S|
    if damp and prior is not None:
        rhs = rhs + lam * prior.to(torch.float64)
    h = h + lam * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        return torch.linalg.lstsq(h, rhs.T).solution.T
    return torch.cholesky_solve(rhs.T, chol).T


def closed_form_with_bias(weight: torch.Tensor, cross: torch.Tensor, gram_kept: torch.Tensor,
                          mean_dense: torch.Tensor, mean_kept: torch.Tensor, damp: float = 1e-4,
                          prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares with an intercept: ``min ||W_hat X_S' + b 1^T - W X||^2`` -> ``(W_hat, b)``.

    The kept inputs get a constant channel: ``H'_aug = [[H', mu_S], [mu_S^T, 1]]`` and
    ``C_aug = [C, mu_X]`` (second moments and means per token), solved as :func:`closed_form`; the
    ridge (towards ``prior`` for the weights) leaves the intercept undamped. The intercept is what
    FLAP's bias compensation adds (the removed channels' mean output) but fitted jointly with the
    weights, so it is never worse on the fitted data than either alone.
    """
    w = weight.to(torch.float64)
    h = gram_kept.to(torch.float64)
    n = h.shape[0]
    mu_s = mean_kept.to(torch.float64).reshape(n, 1)
    mu_x = mean_dense.to(torch.float64).reshape(-1, 1)
    h_aug = torch.cat([torch.cat([h, mu_s], 1), torch.cat([mu_s.T, h.new_ones(1, 1)], 1)], 0)
    c_aug = torch.cat([cross.to(torch.float64), mu_x], 1)
    lam = damp * torch.diagonal(h).mean().clamp_min(1e-12)
    rhs = w @ c_aug  # out x (|S| + 1)
    if damp and prior is not None:
        rhs[:, :n] = rhs[:, :n] + lam * prior.to(torch.float64)
    ridge = torch.full((n + 1,), float(lam), dtype=h.dtype, device=h.device)
    ridge[n] = 0.0
    h_aug = h_aug + torch.diag(ridge)
    chol, info = torch.linalg.cholesky_ex(h_aug)
    if int(info) != 0:
        solution = torch.linalg.lstsq(h_aug, rhs.T).solution.T
    else:
        solution = torch.cholesky_solve(rhs.T, chol).T
    return solution[:, :n], solution[:, n]


def closed_form_from_gram(weight: torch.Tensor, gram: torch.Tensor, kept: torch.Tensor, damp: float = 1e-4) -> torch.Tensor:
    """The special case ``X_S' = X_S``: ``(W H_{:,S} + lambda W_{:,S}) (H_{S,S} + lambda I)^-1``."""
    return closed_form(weight, gram[:, kept], gram[kept][:, kept], damp, prior=weight[:, kept])


def admm(
    weight: torch.Tensor,
    gram: torch.Tensor,
    kept: torch.Tensor,
    rho: float = 1.0,
    iterations: int = 30,
) -> torch.Tensor:
    """The paper's ADMM (Eq. 9-11) for ``min ||W_hat X - W X||^2`` with W_hat zero off ``kept``.

    Iterates, with ``H = X X^T`` (in x in), ``W_hat^0 = Z^0 = W``, ``U^0 = 0``::

        W_hat^{k+1} = ((H + rho I)^-1 (H W^T + rho (Z^k - U^k)^T))^T
        Z^{k+1}     = mask(W_hat^{k+1} + U^k)
        U^{k+1}     = U^k + W_hat^{k+1} - Z^{k+1}

    and returns ``Z`` restricted to the kept columns (out x |S|). ``rho`` is relative to the mean
    diagonal of H, so the same value works whatever the activations' scale (the paper's rho = 1
    presumes its own normalization, which it does not state).
    """
    w = weight.to(torch.float64)
    h = gram.to(torch.float64)
    n = h.shape[0]
    scale = torch.diagonal(h).mean().clamp_min(1e-12)
    rho_abs = rho * scale
    mask = torch.zeros(n, dtype=torch.bool, device=w.device)
    mask[kept] = True
    chol = torch.linalg.cholesky(h + rho_abs * torch.eye(n, dtype=h.dtype, device=h.device))
    hw = h @ w.T  # in x out
    z = w.clone() * mask
    u = torch.zeros_like(w)
    for _ in range(iterations):
        w_hat = torch.cholesky_solve(hw + rho_abs * (z - u).T, chol).T
        z = (w_hat + u) * mask
        u = u + w_hat - z
    return z[:, kept]


def relative_output_error(weight: torch.Tensor, new_weight: torch.Tensor, kept: torch.Tensor, gram: torch.Tensor) -> float:
    """``||W_hat X_S - W X|| / ||W X||`` computed from the Gram matrix alone."""
    w = weight.to(torch.float64)
    d = w.clone()
    full = torch.zeros_like(w)
    full[:, kept] = new_weight.to(torch.float64)
    d = full - w
    h = gram.to(torch.float64)
    err = torch.einsum("ij,jk,ik->", d, h, d)
    ref = torch.einsum("ij,jk,ik->", w, h, w)
    return float((err.clamp_min(0) / ref.clamp_min(1e-30)).sqrt())
