"""End to end on the real SmolLM2-135M and the real Wikipedia extract, with small settings."""

import json

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    from optimum_subnet.loading import load_model

    return load_model("smollm2-135m")


def test_builtin_model_is_cached_and_loads_without_gguf(smollm2, monkeypatch):
    from optimum_subnet import loading

    model, tokenizer = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (9, 3)
    assert tokenizer("Hello")["input_ids"][0] != tokenizer.bos_token_id  # GGUF header: add_bos_token False
    assert tokenizer.eos_token == "<|im_end|>"
    monkeypatch.setattr(loading, "_locate_gguf", lambda m: pytest.fail("converted again instead of cached"))
    assert (loading.builtin_model_dir("smollm2-135m") / "model.safetensors").is_file()


def test_wikipedia_extract_split():
    from optimum_subnet.data import wikipedia

    cal, ev = wikipedia.load_split("calibration"), wikipedia.load_split("evaluation")
    assert len(cal) + len(ev) == 106
    assert not {a["title"] for a in cal} & {a["title"] for a in ev}
    assert 2_000_000 < sum(len(a["text"]) for a in cal + ev) < 4_000_000
    assert 0.1 < len(ev) / 106 < 0.3


def test_dense_perplexity_is_sane(smollm2):
    from optimum_subnet import data
    from optimum_subnet.evaluation.perplexity import perplexity

    model, tokenizer = smollm2
    windows = data.evaluation_windows(data.tokenize_stream(data.load_texts("enwiki-extract", "evaluation"),
                                                           tokenizer), 256, max_windows=4)
    assert 8 < perplexity(model, windows) < 60


def test_search_and_reform_end_to_end(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM

    from optimum_subnet import SubnetConfig, SubnetOptimizer

    model, tokenizer = smollm2
    config = SubnetConfig.preset(
        "fast", 0.8, device="cpu",
        search__population_size=4, search__num_mutations=2, search__num_crossovers=1, search__top_k=2,
        search__generations=1, search__fitness_windows=2, search__fitness_seq_len=64,
        data__num_samples=16, data__seq_len=128, data__eval_seq_len=128, data__eval_max_windows=6,
        faithfulness__prompts=2,
    )
    out = SubnetOptimizer(model, tokenizer, "smollm2-135m").optimize(config, tmp_path / "subnet")
    report = json.loads((out / "report.json").read_text())
    key = "enwiki-extract@128"
    assert abs(report["subnet"]["inheriting_ratio"] - 0.8) <= 0.008
    assert report["subnet"]["params"] < report["dense"]["params"]
    assert report["subnet"]["ppl"][key] < report["searched"]["ppl"][key]  # reformation helps
    assert report["dense"]["ppl"][key] < report["subnet"]["ppl"][key]
    assert report["search"]["evaluations"] >= 3 and report["reformation"]["method"] == "closed_form"
    for section in ("dense", "initial", "searched", "subnet"):
        assert set(report[section]["ppl"]) == {key}
    faith = report["faithfulness"]  # the subnet's AtMan relevance maps vs the dense model's on BoolQ prompts
    assert faith["prompts"] == 2 and -1.0 <= faith["spearman"] <= 1.0 and 0.0 <= faith["top_k_overlap"] <= 1.0

    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in loaded.parameters()) == report["subnet"]["params"]
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    generated = loaded.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5
    dense_bytes = report["dense"]["params"] * 4
    assert (out / "model.safetensors").stat().st_size < 0.85 * dense_bytes
