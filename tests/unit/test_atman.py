"""AtMan through the registered attention function, on tiny dense and subnet LLaMA models."""

import json

import pytest
import torch

from optimum_subnet.core.errors import SubnetError
from optimum_subnet.explain import AtManConfig, AtManExplainer, Explanation, Suppression, atman_attention
from optimum_subnet.explain.render import render_html, save_explanation
from optimum_subnet.stages.surgery import extract_subnet

from tests.numerics import assert_close_to_scale
from tests.unit.test_modeling import _random_spec

pytestmark = pytest.mark.unit

MODES = ["multiplicative", "log_bias"]


def _models(model):
    return {"dense": model, "subnet": extract_subnet(model, _random_spec(model))}


def _logits(model, ids, factors=None, mode="multiplicative", chunk=None):
    with torch.no_grad():
        if factors is None:
            return model(ids).logits
        with atman_attention(model):
            return model(ids, atman=Suppression(factors, mode, chunk)).logits


@pytest.mark.parametrize("kind", ["dense", "subnet"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", MODES)
def test_zero_suppression_is_a_no_op(model, kind, impl, mode):
    """f = 0 runs the full manipulation path and must reproduce the stock attention's logits."""
    m = _models(model)[kind]
    m.config._attn_implementation = impl
    ids = torch.randint(3, m.config.vocab_size, (2, 23))
    stock = _logits(m, ids)
    atman = _logits(m, ids, torch.zeros(2, 23), mode, chunk=5)
    # Query chunks (and, across kernel families, the other kernel) add the same products in another
    # order, which CPUs' matrix kernels round differently: measured up to 6.4e-7 of the logits' scale
    # (AMD EPYC, 1 and 2 threads), a few float32 ulps. 4e-6 of the scale keeps the earlier
    # absolute 1e-5 at these logits (|logit| <= 2.2) and is still 6x the largest difference seen.
    assert_close_to_scale(atman, stock, rel=4e-6)
    if (mode, impl) == ("multiplicative", "eager"):
        # Unchunked, the multiplicative path performs eager attention's operations in the same order
        # (f = 0 subtracts exact zeros), so it must be bitwise equal on any machine.
        assert torch.equal(_logits(m, ids, torch.zeros(2, 23), mode), stock)
    assert m.config._attn_implementation == impl  # the hook is switched off after the block


@pytest.mark.parametrize("kind", ["dense", "subnet"])
@pytest.mark.parametrize("mode", MODES)
def test_suppressing_token_j_leaves_earlier_logits_unchanged(model, kind, mode):
    m = _models(model)[kind]
    ids = torch.randint(3, m.config.vocab_size, (1, 24))
    j = 11
    factors = torch.zeros(1, 24)
    factors[0, j] = 0.9
    base = _logits(m, ids, torch.zeros(1, 24), mode, chunk=7)
    suppressed = _logits(m, ids, factors, mode, chunk=7)
    # Exact on any machine: both runs do the same operations on the same shapes, and positions before
    # j see key j (and everything that depends on it) only as masked entries, i.e. exact zeros.
    assert torch.equal(suppressed[:, :j], base[:, :j])
    assert not torch.allclose(suppressed[:, j:], base[:, j:], atol=1e-4)  # and it does act from j on


@pytest.mark.parametrize("mode", MODES)
def test_query_chunking_does_not_change_the_result(model, mode):
    ids = torch.randint(3, model.config.vocab_size, (3, 30))
    factors = torch.rand(3, 30)
    whole = _logits(model, ids, factors, mode, chunk=None)
    chunked = _logits(model, ids, factors, mode, chunk=4)
    assert torch.allclose(chunked, whole, atol=1e-5, rtol=0)


def test_padding_mask_is_respected(model, tokenizer):
    """Left padding: the padded sequence's logits equal the unpadded one's (bool mask path)."""
    ids = torch.randint(3, model.config.vocab_size, (1, 12))
    padded = torch.cat([torch.full((1, 4), tokenizer.pad_token_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 12, dtype=torch.long)], dim=1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    factors = torch.zeros(1, 16)
    factors[0, 8] = 0.9
    for mode in MODES:
        with torch.no_grad(), atman_attention(model):
            out = model(padded, attention_mask=mask, position_ids=position_ids,
                        atman=Suppression(factors, mode)).logits[:, 4:]
        ref = _logits(model, ids, factors[:, 4:], mode)
        assert torch.allclose(out, ref, atol=1e-5), mode


@pytest.mark.parametrize("granularity", ["token", "word"])
@pytest.mark.parametrize("mode", MODES)
def test_batched_results_equal_single_runs(model, tokenizer, granularity, mode):
    prompt, target = "Ada met Bob at noon. Bob", " smiled"
    one = AtManExplainer(model, tokenizer, AtManConfig(batch_size=1, granularity=granularity, mode=mode))
    many = AtManExplainer(model, tokenizer, AtManConfig(batch_size=5, granularity=granularity, mode=mode))
    a, b = one.explain(prompt, target), many.explain(prompt, target)
    assert [u.text for u in a.units] == [u.text for u in b.units]
    assert torch.allclose(torch.tensor(a.relevance), torch.tensor(b.relevance), atol=1e-5, rtol=0)
    assert a.target_loss == pytest.approx(b.target_loss, abs=1e-6)
    assert max(abs(r) for r in a.relevance) > 1e-4  # suppression changed the loss at all


def test_relevance_equals_loss_differences_of_manual_runs(model, tokenizer):
    """The explainer's numbers are exactly (loss with unit suppressed) - (loss without), computed by hand."""
    prompt, target = "xyz ab", " q"
    config = AtManConfig(mode="log_bias", batch_size=3)
    explanation = AtManExplainer(model, tokenizer, config).explain(prompt, target)
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt)["input_ids"] + target_ids
    n, t = len(ids), len(target_ids)
    x = torch.tensor([ids])

    def loss(factors):  # mean cross-entropy of the target tokens
        logits = _logits(model, x, factors[None], "log_bias")[0, -(t + 1):-1]
        return torch.nn.functional.cross_entropy(logits, x[0, -t:]).item()

    base = loss(torch.zeros(n))
    assert explanation.target_loss == pytest.approx(base, abs=1e-5)
    for unit in explanation.units:
        f = torch.zeros(n)
        f[unit.tokens] = 0.9
        assert unit.relevance == pytest.approx(loss(f) - base, abs=1e-5)


def test_word_and_sentence_granularity_cover_the_prompt(model, tokenizer):
    prompt = "One two. Three four five!\nSix"
    for granularity, texts in (("word", ["One", "two.", "Three", "four", "five!", "Six"]),
                               ("sentence", ["One two.", "Three four five!", "Six"])):
        e = AtManExplainer(model, tokenizer, AtManConfig(granularity=granularity)).explain(prompt, " x")
        assert [u.text for u in e.units] == texts
        positions = sorted(p for u in e.units for p in u.tokens)
        assert positions == list(range(len(prompt)))  # every prompt token in exactly one unit


def test_correlated_suppression_changes_repeated_tokens(model, tokenizer):
    """With the extension, suppressing one 'a' also suppresses the other (identical embedding)."""
    prompt, target = "a b a c", " d"
    plain = AtManExplainer(model, tokenizer, AtManConfig()).explain(prompt, target)
    corr = AtManExplainer(model, tokenizer, AtManConfig(correlated=True, kappa=0.99)).explain(prompt, target)
    a_units = [i for i, u in enumerate(plain.units) if u.text == "a"]
    assert len(a_units) == 2
    # both "a" units now suppress both "a" tokens: identical relevance; and different from the plain run
    assert corr.units[a_units[0]].relevance == pytest.approx(corr.units[a_units[1]].relevance, abs=1e-6)
    assert corr.units[a_units[0]].relevance != pytest.approx(plain.units[a_units[0]].relevance, abs=1e-6)


def test_explanation_json_round_trip_and_html(model, tokenizer, tmp_path):
    e = AtManExplainer(model, tokenizer, AtManConfig(granularity="word")).explain("<b>bold</b> & x", " y")
    paths = save_explanation(e, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["prompt"] == "<b>bold</b> & x" and data["target"] == " y"
    assert [t["token"] for t in data["tokens"]] == ["<b>bold</b>", "&", "x"]
    assert all(isinstance(t["relevance"], float) for t in data["tokens"])
    back = Explanation.from_dict(data)
    assert back.relevance == e.relevance and back.prompt == e.prompt
    page = render_html(e)
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b> &" not in page  # escaped
    assert page.count("background: rgb(") == 3
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs(model, tokenizer):
    explainer = AtManExplainer(model, tokenizer)
    with pytest.raises(SubnetError, match="target is empty"):
        explainer.explain("abc", "")
    with pytest.raises(SubnetError, match="prompt is empty"):
        explainer.explain("   ", " x")
    with pytest.raises(SubnetError, match="at most 256"):
        explainer.explain("a" * 300, " x")
    for bad in (dict(suppression_factor=1.5), dict(mode="other"), dict(granularity="page"), dict(batch_size=0)):
        with pytest.raises(SubnetError):
            AtManConfig(**bad)
    assert AtManConfig.from_dict(AtManConfig(kappa=0.7).to_dict()) == AtManConfig(kappa=0.7)
