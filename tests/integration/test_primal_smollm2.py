"""Primal-Attention on the real SmolLM2-135M with small settings: the pass runs end to end, the
converted model beats dropping the same attention, and decoding with the state equals the full forward."""

import json

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_primal_last_layer_on_smollm2(tmp_path):
    from optimum_subnet.primal import PrimalConfig, PrimalOptimizer

    config = PrimalConfig(layers="last:1", rank=8, device="cpu").replace(
        data__num_samples=4, data__seq_len=128, data__eval_max_windows=2, fine_tune__steps=3,
        fine_tune__batch_size=1, fine_tune__kl_tokens=32)
    optimizer = PrimalOptimizer.from_pretrained("smollm2-135m")
    path = optimizer.optimize(config, tmp_path / "out")
    report = json.loads((path / "primal_report.json").read_text())
    assert report["layers"] == [29] and report["fit"][0]["output_residual"] < 1.0
    # one replaced layer of thirty: the model stays a language model (dense is about 20 here)
    assert report["perplexity"]["fit"] < 2 * report["perplexity"]["base"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("The history of the Roman Empire", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
        tokens = ids
        for _ in range(8):
            tokens = torch.cat([tokens, model(tokens, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, tokens)
