"""Primal-Attention math on random matrices: each function against its definition written out."""

import pytest
import torch

from optimum_subnet.algorithms.primal import (
    attention_spectrum,
    causal_features,
    cosine_kernel_svd,
    energy_rank,
    feature_map,
    ksvd_lambda,
    ksvd_objective,
    ridge_regression,
)

# float64 everywhere: these compare two exact formulas, so agreement is limited only by round-off
# (~1e-15 relative); 1e-10 relative to the values' scale leaves room for any BLAS / thread count.
TOL = 1e-10


def _close(a, b, scale=None):
    scale = float(b.abs().max()) if scale is None else scale
    assert float((a - b).abs().max()) <= TOL * max(scale, 1.0), float((a - b).abs().max())


def test_feature_map_is_unit_norm_and_direction_preserving():
    x = torch.randn(3, 4, 5, 8, dtype=torch.float64)
    phi = feature_map(x)
    _close(phi.norm(dim=-1), torch.ones(3, 4, 5, dtype=torch.float64))
    _close(phi * x.norm(dim=-1, keepdim=True), x)
    assert torch.equal(feature_map(torch.zeros(2, 3)), torch.zeros(2, 3))  # no NaN before any valid token


def test_causal_features_are_phi_of_running_means_with_padding_and_a_prior_state():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 4, dtype=torch.float64)
    valid = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    prior = torch.randn(2, 3, 4, dtype=torch.float64)
    phi, last = causal_features(x, valid, prior)
    for b in range(2):
        for t in range(7):
            kept = x[b, :, : t + 1][:, valid[b, : t + 1]]
            mean = (prior[b] + kept.sum(1)) / (kept.shape[1] + 1)  # a mean: its 1/t cancels in phi
            _close(phi[b, :, t], mean / mean.norm(dim=-1, keepdim=True))
    _close(last, prior + (x * valid[:, None, :, None]).sum(2))


def test_causality_no_output_depends_on_a_later_token():
    x = torch.randn(1, 2, 9, 4)
    y = x.clone()
    y[:, :, 5:] = torch.randn(1, 2, 4, 4)
    a, _ = causal_features(x)
    b, _ = causal_features(y)
    assert torch.equal(a[:, :, :5], b[:, :, :5])  # a prefix sum of the same inputs: bit-identical
    assert not torch.equal(a[:, :, 5:], b[:, :, 5:])


def test_chunked_running_sums_equal_the_full_sequence():
    x = torch.randn(2, 3, 10, 4, dtype=torch.float64)
    full, last = causal_features(x)
    first, state = causal_features(x[:, :, :6])
    second, state = causal_features(x[:, :, 6:], initial_sum=state)
    _close(torch.cat([first, second], dim=2), full)
    _close(state, last)


def _kernel_case(tokens=40, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    phi_q = feature_map(torch.randn(tokens, dim, generator=g, dtype=torch.float64))
    phi_k = feature_map(torch.randn(tokens, dim, generator=g, dtype=torch.float64))
    return phi_q, phi_k


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_kernel_svd_is_the_eckart_young_optimum_on_one_sequence(rank):
    """The fit's E diag(1/sigma) R^T / T is the best rank-s approximation of K = Phi_q Phi_k^T / T."""
    phi_q, phi_k = _kernel_case()
    t = phi_q.shape[0]
    kernel = phi_q @ phi_k.T / t
    w_e, w_r, sigma = cosine_kernel_svd(phi_q.T @ phi_q / t, phi_k.T @ phi_k / t, rank)
    e, r = phi_q @ w_e, phi_k @ w_r
    approx = e @ torch.diag(1 / sigma) @ r.T / t
    u, s, vh = torch.linalg.svd(kernel)
    best = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
    scale = float(kernel.abs().max())
    _close(sigma, s[:rank], scale)
    _close(approx, best, scale)
    # Eckart-Young: the error is exactly the energy of the discarded singular values
    error = (kernel - approx).pow(2).sum()
    _close(error, s[rank:].pow(2).sum(), scale**2)
    # and e, r are the projections of the kernel on its singular vectors (the dual representation),
    # up to the sign each singular pair (u_k, v_k) is free to take
    sign = torch.sign((e * u[:, :rank]).sum(0))
    _close(e * sign, (t**0.5) * u[:, :rank] * s[:rank], scale)
    _close(r * sign, (t**0.5) * vh[:rank].T * s[:rank], scale)


def test_ksvd_objective_equals_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    b, h, n, s, d = 3, 4, 6, 2, 5
    e, r = torch.randn(b, h, n, s, generator=g), torch.randn(b, h, n, s, generator=g)
    lam, w_e, w_r = torch.rand(h, s, generator=g), torch.randn(h, d, s, generator=g), torch.randn(h, d, s, generator=g)
    direct = torch.zeros(b)
    for i in range(b):
        e_term = sum(float((e[i, j, t] * lam[j]).norm() ** 2) for j in range(h) for t in range(n)) / (h * n)
        r_term = sum(float((r[i, j, t] * lam[j]).norm() ** 2) for j in range(h) for t in range(n)) / (h * n)
        trace = sum(float(torch.trace(w_e[j].T @ w_r[j])) for j in range(h)) / h
        direct[i] = 0.5 * e_term + 0.5 * r_term - trace
    got = ksvd_objective(e, r, lam, w_e, w_r)
    # float32 sums of ~50 terms: 1e-5 relative to their magnitude
    assert torch.allclose(got, direct, rtol=1e-5, atol=1e-5 * float(direct.abs().max()))


def test_fit_lambda_puts_the_ksvd_objective_at_its_stationary_value_zero():
    phi_q, phi_k = _kernel_case(tokens=50, dim=6, seed=2)
    t = phi_q.shape[0]
    w_e, w_r, sigma = cosine_kernel_svd(phi_q.T @ phi_q / t, phi_k.T @ phi_k / t, 4)
    e, r = (phi_q @ w_e)[None, None], (phi_k @ w_r)[None, None]
    j = ksvd_objective(e, r, ksvd_lambda(sigma)[None], w_e[None], w_r[None])
    trace = float(torch.trace(w_e.T @ w_r))
    assert abs(float(j)) <= TOL * trace


def test_ridge_regression_equals_the_normal_equations_with_an_intercept():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64)
    y = x @ torch.randn(6, 3, generator=g, dtype=torch.float64) + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y += 0.1 * torch.randn(200, 3, generator=g, dtype=torch.float64)
    damp = 0.05
    weight, bias = ridge_regression(x.T @ x, x.T @ y, x.sum(0), y.sum(0), 200, damp)
    xc, yc = x - x.mean(0), y - y.mean(0)
    ridge = damp * float(torch.diag(xc.T @ xc).mean())
    expected = torch.linalg.solve(xc.T @ xc + ridge * torch.eye(6, dtype=torch.float64), xc.T @ yc).T
    _close(weight, expected)
    _close(bias, y.mean(0) - expected @ x.mean(0))
    weight0, _ = ridge_regression(x.T @ x, x.T @ y, x.sum(0), y.sum(0), 200, 0.0)  # no ridge: least squares
    _close(weight0, torch.linalg.lstsq(torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1), y).solution[:6].T)


def test_attention_spectrum_of_known_matrices():
    n = 16
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]  # causal mean attention
    curve, ranks = attention_spectrum(torch.stack([torch.eye(n), uniform]), thresholds=(0.5, 0.99))
    sigma = torch.linalg.svdvals(uniform.double())
    _close(curve[1], sigma.cumsum(0) / sigma.sum())
    _close(curve[0], torch.arange(1, n + 1, dtype=torch.float64) / n)  # identity: flat spectrum
    assert int(ranks[0.99][0]) == 16 and int(ranks[0.5][0]) == 8
    energy = sigma.pow(2).cumsum(0) / sigma.pow(2).sum()
    assert int(ranks[0.99][1]) == int((energy < 0.99).sum()) + 1
    assert int(energy_rank(torch.tensor([3.0, 4.0]), 0.64)) == 2 and int(energy_rank(torch.tensor([4.0, 3.0]), 0.64)) == 1
