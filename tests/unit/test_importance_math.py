import pytest
import torch

from optimum_subnet.algorithms import importance as imp
from tests.numerics import assert_close_to_scale

pytestmark = pytest.mark.unit


def _gram(n_in, tokens=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n_in, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, n_in, dtype=torch.float64)
    return x.T @ x / tokens


def test_obs_saliency_matches_direct_computation():
    w = torch.randn(7, 12, dtype=torch.float64)
    h = _gram(12)
    damp = 0.01
    two_h = 2 * h
    direct_inverse = torch.linalg.inv(two_h + damp * torch.diagonal(two_h).mean() * torch.eye(12, dtype=torch.float64))
    expected = torch.empty_like(w)
    for i in range(7):
        for j in range(12):
            expected[i, j] = w[i, j] ** 2 / direct_inverse[j, j]
    assert torch.allclose(imp.obs_saliency(w, h, damp), expected, rtol=1e-10, atol=0)


def test_row_and_column_scores():
    phi = torch.rand(5, 3, dtype=torch.float64)
    # a row reduction vs five scalar ones (other kernels, other summation orders): three float64 terms
    # in any order agree to 2 ulps of their sum, far inside 1e-13 of the scale
    assert_close_to_scale(imp.row_scores(phi), torch.tensor([phi[i].sum() for i in range(5)], dtype=torch.float64),
                          rel=1e-13)
    assert torch.allclose(imp.column_scores(phi), torch.tensor([phi[:, j].sum() for j in range(3)],
                                                              dtype=torch.float64))


def test_attention_channel_scores_sum_over_query_group():
    n_kv, group, hd = 2, 3, 4
    q = torch.rand(n_kv * group * hd, dtype=torch.float64)
    o = torch.rand(n_kv * group * hd, dtype=torch.float64)
    k = torch.rand(n_kv * hd, dtype=torch.float64)
    v = torch.rand(n_kv * hd, dtype=torch.float64)
    scores = imp.attention_channel_scores(q, k, v, o, n_kv, hd)
    for g in range(n_kv):
        for c in range(hd):
            expected = k[g * hd + c] + v[g * hd + c]
            for h in range(g * group, (g + 1) * group):
                expected += q[h * hd + c] + o[h * hd + c]
            assert scores[g, c].item() == pytest.approx(expected.item(), rel=1e-12)


def test_rope_pair_scores():
    s = torch.arange(8, dtype=torch.float64).reshape(1, 8)
    assert imp.rope_pair_scores(s).tolist() == [[4.0, 6.0, 8.0, 10.0]]


def test_damping_rescues_singular_gram():
    h = torch.zeros(4, 4, dtype=torch.float64)
    h[0, 0] = 1.0  # three dead channels
    d = imp.damped_inverse_diagonal(h, 0.01)
    assert torch.isfinite(d).all() and (d > 0).all()


def test_damped_inverse_diagonal_is_the_direct_formula_and_scales_with_the_gram():
    """The in-place damping gives diag((2H + lambda I)^-1); the importance stage passes running sums and
    rescales by the token count (the damping is relative to the diagonal, so the two agree); the caller's
    matrix is left untouched."""
    torch.manual_seed(0)
    x = torch.randn(64, 12, dtype=torch.float64)
    h = x.T @ x / 64
    before = h.clone()
    lam = 0.01 * torch.diagonal(2 * h).mean()
    direct = torch.diagonal(torch.linalg.inv(2 * h + lam * torch.eye(12, dtype=torch.float64)))
    assert torch.allclose(imp.damped_inverse_diagonal(h, 0.01), direct, rtol=1e-10)
    assert torch.allclose(imp.damped_inverse_diagonal(h * 64, 0.01) * 64, direct, rtol=1e-10)
    assert torch.equal(h, before)


def test_damping_fallback_is_the_stronger_damping_alone():
    """A matrix that fails at the first damping gets the next one, not the sum of both."""
    h = torch.diag(torch.tensor([1.0, -0.05, 1.0], dtype=torch.float64))  # the first damping (0.013) leaves it indefinite
    mean_diag = torch.diagonal(2 * h).mean()
    expected = None
    for factor in (0.01, 0.1, 1.0, 100.0):
        damped = 2 * h + factor * mean_diag * torch.eye(3, dtype=torch.float64)
        if torch.linalg.cholesky_ex(damped)[1] == 0:
            expected = torch.diagonal(torch.linalg.inv(damped))
            break
    assert factor == 0.1  # the fallback ran
    assert torch.allclose(imp.damped_inverse_diagonal(h, 0.01), expected, rtol=1e-10)
