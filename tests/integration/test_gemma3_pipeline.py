"""The real Gemma3-270M through the whole pipeline with small settings: search (ratio over the decoder
blocks: its embeddings are 63% of it), a baseline, reformation, a saved subnet that reloads, AtMan, ONNX
export validated against PyTorch and ONNX Runtime generation."""

import json

import pytest
import torch

import importlib.util

from tests.integration.test_gemma3 import INSTALL, PARTS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(p) is None for p in PARTS),
                       reason=f"needs the Gemma3-270M GGUF packages: {INSTALL}"),
]


@pytest.fixture(scope="module")
def optimizer():
    from optimum_subnet import SubnetOptimizer

    return SubnetOptimizer.from_pretrained("gemma3-270m")


@pytest.fixture(scope="module")
def subnet_folder(optimizer, tmp_path_factory):
    from optimum_subnet import SubnetConfig

    config = SubnetConfig.preset(
        "fast", 0.8, ratio_of="blocks", device="cpu", data__num_samples=4, data__seq_len=64, data__eval_seq_len=128,
        data__eval_max_windows=2, search__generations=1, search__population_size=4, search__num_mutations=2,
        search__num_crossovers=1, search__top_k=2, search__fitness_windows=1, search__fitness_seq_len=64,
        faithfulness__prompts=1)
    return optimizer.optimize(config, tmp_path_factory.mktemp("gemma3") / "subnet")


def test_search_meets_a_block_budget_and_saves_a_smaller_gemma3(optimizer, subnet_folder):
    from transformers import AutoModelForCausalLM

    from optimum_subnet import SubnetSpec

    report = json.loads((subnet_folder / "report.json").read_text())
    assert abs(report["subnet"]["block_ratio"] - 0.8) < 0.01
    assert report["subnet"]["inheriting_ratio"] > 0.9  # the embeddings are kept whole
    spec = SubnetSpec.load(subnet_folder)
    assert all(len(layer.head_dim_set()) == 1 for layer in spec.layers)  # one q/k-norm weight per layer
    loaded = AutoModelForCausalLM.from_pretrained(subnet_folder)
    assert loaded.config.model_type == "subnet_gemma3"
    assert sum(p.numel() for p in loaded.parameters()) == spec.params()
    final = report["subnet"]["ppl"]
    assert all(8 < v < 1e4 for v in final.values())  # a working language model, not a collapsed one
    assert report["faithfulness"]["prompts"] == 1


def test_a_baseline_prunes_gemma3_under_the_same_budget(optimizer):
    from optimum_subnet import SubnetConfig

    config = SubnetConfig.preset("fast", 0.8, method="flap", ratio_of="blocks", device="cpu", data__num_samples=4,
                                 data__seq_len=64, data__eval_seq_len=128, data__eval_max_windows=2,
                                 faithfulness__prompts=0, baseline__attention_unit="pair")
    report = optimizer.run(config)["report"]
    assert abs(report["subnet"]["block_ratio"] - 0.8) < 0.02
    assert report["method"] == "flap"


def test_the_saved_subnet_exports_to_onnx_and_generates_like_pytorch(subnet_folder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_subnet import export_onnx
    from optimum_subnet.onnx.export import OnnxExportConfig
    from optimum_subnet.runtime.loading import load_ort_model
    from tests.unit.families.test_contract import _assert_greedy

    out = export_onnx(str(subnet_folder), tmp_path / "onnx", OnnxExportConfig(validation_sequence_length=8))
    report = json.loads((out / "validation.json").read_text())
    assert report["direct" if report["builder"] == "direct" else "unfused"]["passed"]
    tokenizer = AutoTokenizer.from_pretrained(subnet_folder)
    ids = tokenizer("Paris is the capital of", return_tensors="pt").input_ids
    generated = load_ort_model(out).generate(ids, max_new_tokens=4, do_sample=False)
    model = AutoModelForCausalLM.from_pretrained(subnet_folder).eval()
    with torch.no_grad():
        logits = model(generated).logits[0, ids.shape[1] - 1:-1]
    _assert_greedy(generated[0, ids.shape[1]:], logits)
