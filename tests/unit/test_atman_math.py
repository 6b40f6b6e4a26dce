"""AtMan's pure math: the two suppression forms and how they relate, correlated tokens, granularity."""

import math

import pytest
import torch

from optimum_subnet.explain.atman import (
    group_tokens,
    log_bias,
    multiplicative_scores,
    relevance_from_losses,
    suppression_factors,
    text_spans,
)

pytestmark = pytest.mark.unit


def _causal(q, k):
    return torch.arange(k)[None, :] <= torch.arange(k - q, k)[:, None]


def _softmax_masked(scores, valid):
    return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)


def test_multiplicative_form_is_the_papers_row_shifted_product():
    """softmax(s - f (s - m)) == softmax((s - m)(1 - f)) with m the row minimum over valid keys."""
    torch.manual_seed(0)
    s = torch.randn(2, 3, 6, 6, dtype=torch.float64) * 3
    valid = _causal(6, 6)[None, None]
    f = torch.zeros(2, 1, 1, 6, dtype=torch.float64)
    f[0, ..., 2] = 0.9
    f[1, ..., 4] = 0.5
    m = s.masked_fill(~valid, math.inf).amin(-1, keepdim=True)
    paper = (s - m) * (1 - f)
    ours = multiplicative_scores(s, valid, f)
    assert torch.allclose(_softmax_masked(ours, valid), _softmax_masked(paper, valid), atol=1e-12)
    # and suppression really lowered the suppressed key's weight wherever it was above the row minimum
    p0, p1 = _softmax_masked(s, valid), _softmax_masked(ours, valid)
    rows = (s[0, :, 2:, 2] > m[0, :, 2:, 0])
    assert (p1[0, :, 2:, 2][rows] < p0[0, :, 2:, 2][rows]).all()


def test_row_minimum_ignores_future_keys():
    """A huge negative score on a future (masked) key must not move the shift of earlier rows."""
    s = torch.tensor([[[[1.0, 5.0, -100.0], [2.0, 3.0, 4.0], [0.0, 1.0, 2.0]]]])
    valid = _causal(3, 3)[None, None]
    f = torch.tensor([0.0, 0.5, 0.0]).view(1, 1, 1, 3)
    out = multiplicative_scores(s, valid, f)
    # row 0 sees keys {0, 1}: minimum 1, so key 1 becomes 5 - 0.5 * (5 - 1) = 3
    assert out[0, 0, 0, 1].item() == pytest.approx(3.0)


def test_log_bias_is_reweighting_probabilities_and_renormalizing():
    torch.manual_seed(1)
    s = torch.randn(4, 5, dtype=torch.float64)
    f = torch.tensor([0.0, 0.9, 0.0, 0.3, 1.0], dtype=torch.float64)
    p = torch.softmax(s, -1)
    expected = p * (1 - f)
    expected = expected / expected.sum(-1, keepdim=True)
    got = torch.softmax(s + log_bias(f, torch.float64), -1)
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.isfinite(log_bias(torch.ones(3))).all()  # f = 1: finite, so a lone key keeps a defined softmax


def test_the_two_forms_agree_only_at_the_crossing_score():
    """Multiplicative and log-bias coincide when the key's shifted score is -log(1 - f) / f, not elsewhere."""
    f = 0.9
    crossing = -math.log(1 - f) / f
    for shifted, same in ((crossing, True), (0.5, False), (6.0, False)):
        s = torch.tensor([[0.0, shifted, 1.0]], dtype=torch.float64)  # row minimum 0
        valid = torch.ones(1, 3, dtype=torch.bool)
        factors = torch.tensor([[0.0, f, 0.0]], dtype=torch.float64)
        mult = torch.softmax(multiplicative_scores(s, valid, factors), -1)
        bias = torch.softmax(s + log_bias(factors, torch.float64), -1)
        assert torch.allclose(mult, bias, atol=1e-12) == same, shifted
    # a key already at the row minimum is not damped at all by the multiplicative form
    s = torch.tensor([[0.0, 2.0, 1.0]], dtype=torch.float64)
    factors = torch.tensor([[0.9, 0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(multiplicative_scores(s, torch.ones(1, 3, dtype=torch.bool), factors), s)


def test_zero_factor_is_exactly_the_identity():
    torch.manual_seed(2)
    s = torch.randn(2, 2, 7, 7)
    valid = _causal(7, 7)[None, None]
    assert torch.equal(multiplicative_scores(s, valid, torch.zeros(2, 1, 1, 7)), s)
    assert torch.equal(log_bias(torch.zeros(7)), torch.zeros(7))


def test_relevance_is_the_rise_of_the_target_loss():
    r = relevance_from_losses(torch.tensor(2.0), torch.tensor([2.5, 2.0, 1.0]))
    assert r.tolist() == [0.5, 0.0, -1.0]


def test_correlated_suppression_factors():
    # tokens 0 and 2 share a direction (cos 1), token 1 is orthogonal, token 3 at 45 degrees; token 4
    # (a target token) equals token 0 but must never be suppressed
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    from optimum_subnet.explain.atman import cosine_similarity_matrix

    sim = cosine_similarity_matrix(e)
    rows = suppression_factors([[0], [1]], 5, 0.9, explained=[0, 1, 2, 3], similarity=sim, kappa=0.6)
    assert rows.shape == (2, 5)
    assert rows[0].tolist() == pytest.approx([0.9, 0.0, 0.9, 0.9 * math.sqrt(0.5), 0.0])
    assert rows[1].tolist() == pytest.approx([0.0, 0.9, 0.0, 0.9 * math.sqrt(0.5), 0.0])
    # above the threshold only; never outside the explained positions (position 4 is a target token)
    strict = suppression_factors([[0]], 5, 0.9, explained=[0, 1, 2], similarity=sim, kappa=0.8)
    assert strict[0].tolist() == pytest.approx([0.9, 0.0, 0.9, 0.0, 0.0])
    plain = suppression_factors([[0, 1]], 5, 0.5, explained=[0, 1, 2, 3])
    assert plain[0].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]


def test_word_and_sentence_spans():
    text = "Dr. Smith went home. Did he?\nYes! It was 3.5 km away"
    assert [text[a:b] for a, b in text_spans(text, "word")] == text.split()
    sentences = [text[a:b] for a, b in text_spans(text, "sentence")]
    assert sentences == ["Dr.", "Smith went home.", "Did he?", "Yes!", "It was 3.5 km away"]


def test_group_tokens_assigns_each_token_to_its_word():
    text = "Hello brave world."
    # BPE-like tokens with leading spaces: "Hello", " bra", "ve", " world", "."
    offsets = [(0, 0), (0, 5), (5, 9), (9, 11), (11, 17), (17, 18)]  # position 0: a special token
    words = group_tokens(text, offsets, "word")
    assert [(text[u.start:u.end], u.tokens) for u in words] == [("Hello", (1,)), ("brave", (2, 3)),
                                                                  ("world.", (4, 5))]
    tokens = group_tokens(text, offsets, "token")
    assert [u.tokens for u in tokens] == [(1,), (2,), (3,), (4,), (5,)]  # the special token is never a unit
    sentence = group_tokens(text, offsets, "sentence")
    assert [u.tokens for u in sentence] == [(1, 2, 3, 4, 5)]
    # a whitespace-only token joins the preceding word
    text2 = "a \n b"
    assert [u.tokens for u in group_tokens(text2, [(0, 1), (1, 3), (3, 5)], "word")] == [(0, 1), (2,)]
    with pytest.raises(ValueError):
        group_tokens(text, offsets, "paragraph")
