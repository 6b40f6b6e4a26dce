import pytest
import torch

from optimum_subnet.algorithms import least_squares as ls

pytestmark = pytest.mark.unit


def _problem(out=6, n_in=16, tokens=400, keep=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_in, n_in, generator=g, dtype=torch.float64)
    x = torch.randn(n_in, tokens, generator=g, dtype=torch.float64)
    x = mix @ x  # correlated channels, so compensation has something to use
    w = torch.randn(out, n_in, generator=g, dtype=torch.float64)
    kept = torch.sort(torch.randperm(n_in, generator=g)[:keep]).values
    return w, x, kept


def test_closed_form_equals_generic_least_squares():
    w, x, kept = _problem()
    h = x @ x.T
    ours = ls.closed_form_from_gram(w, h, kept, damp=0.0)
    # min ||A X_S - W X||: lstsq on X_S^T A^T = X^T W^T
    reference = torch.linalg.lstsq(x[kept].T, (w @ x).T).solution.T
    assert torch.allclose(ours, reference, atol=1e-8)


def test_closed_form_with_different_fitted_inputs():
    w, x, kept = _problem(seed=1)
    x_fitted = x[kept] + 0.1 * torch.randn(len(kept), x.shape[1], dtype=torch.float64)
    ours = ls.closed_form(w, x @ x_fitted.T, x_fitted @ x_fitted.T, damp=0.0)
    reference = torch.linalg.lstsq(x_fitted.T, (w @ x).T).solution.T
    assert torch.allclose(ours, reference, atol=1e-8)


def test_closed_form_with_bias_equals_least_squares_with_a_ones_column():
    w, x, kept = _problem(seed=4)
    x = x + torch.linspace(-2, 3, x.shape[0], dtype=torch.float64)[:, None]  # channels with non-zero means
    x_fitted = x[kept] + 0.1 * torch.randn(len(kept), x.shape[1], dtype=torch.float64)
    n = x.shape[1]
    weight, bias = ls.closed_form_with_bias(w, x @ x_fitted.T / n, x_fitted @ x_fitted.T / n, x.mean(1),
                                            x_fitted.mean(1), damp=0.0)
    design = torch.cat([x_fitted.T, torch.ones(n, 1, dtype=torch.float64)], 1)
    reference = torch.linalg.lstsq(design, (w @ x).T).solution.T
    assert torch.allclose(weight, reference[:, :-1], atol=1e-7)
    assert torch.allclose(bias, reference[:, -1], atol=1e-7)
    # an intercept never fits worse than the weights alone
    without = ls.closed_form(w, x @ x_fitted.T / n, x_fitted @ x_fitted.T / n, damp=0.0)
    error = lambda a, b: float(((a @ x_fitted + b[:, None]) - w @ x).norm())  # noqa: E731
    assert error(weight, bias) <= error(without, torch.zeros(w.shape[0], dtype=torch.float64)) + 1e-9


def test_admm_converges_toward_closed_form():
    w, x, kept = _problem(seed=2)
    h = x @ x.T
    exact = ls.closed_form_from_gram(w, h, kept, damp=0.0)
    errors = [ls.relative_output_error(w, ls.admm(w, h, kept, rho=1.0, iterations=n), kept, h) for n in (1, 10, 300)]
    best = ls.relative_output_error(w, exact, kept, h)
    plain = ls.relative_output_error(w, w[:, kept], kept, h)
    assert errors[0] >= errors[1] >= errors[2] - 1e-12
    assert best < plain
    assert errors[2] == pytest.approx(best, rel=1e-3)
    assert errors[1] < plain


def test_relative_output_error_matches_direct_computation():
    w, x, kept = _problem(seed=3)
    new = torch.randn(w.shape[0], len(kept), dtype=torch.float64)
    direct = torch.linalg.norm(new @ x[kept] - w @ x) / torch.linalg.norm(w @ x)
    assert ls.relative_output_error(w, new, kept, x @ x.T) == pytest.approx(direct.item(), rel=1e-9)


def test_ridge_pulls_towards_the_inherited_weights():
    w, x, kept = _problem(seed=4)
    h = x @ x.T
    strong = ls.closed_form_from_gram(w, h, kept, damp=1e8)
    assert torch.allclose(strong, w[:, kept], atol=1e-5)
    mild = ls.closed_form_from_gram(w, h, kept, damp=1e-2)
    assert ls.relative_output_error(w, mild, kept, h) < ls.relative_output_error(w, w[:, kept], kept, h)
