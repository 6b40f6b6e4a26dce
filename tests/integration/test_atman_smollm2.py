"""AtMan on the real SmolLM2-135M: a fact planted in the prompt is what the answer relies on."""

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    from optimum_subnet.loading import load_model

    return load_model("smollm2-135m")


@pytest.mark.parametrize("mode", ["multiplicative", "log_bias"])
@pytest.mark.parametrize("granularity, prompt, target, fact", [
    ("token", "The secret code word is pineapple. Remember it. The secret code word is", " pineapple", " pineapple"),
    ("word", "My friend's name is Quorvin. He lives in Paris. What is my friend's name? His name is", " Quorvin",
     "Quorvin."),
])
def test_planted_fact_is_the_most_relevant_unit(smollm2, mode, granularity, prompt, target, fact):
    from optimum_subnet.explain import AtManConfig, AtManExplainer

    model, tokenizer = smollm2
    explanation = AtManExplainer(model, tokenizer, AtManConfig(mode=mode, granularity=granularity,
                                                               batch_size=16)).explain(prompt, target)
    ranked = explanation.top(len(explanation.units))
    assert ranked[0].text == fact, [(u.text, round(u.relevance, 3)) for u in ranked[:5]]
    # the fact clearly stands out: at least twice the relevance of the runner-up
    assert ranked[0].relevance > 2 * max(ranked[1].relevance, 0.0)
