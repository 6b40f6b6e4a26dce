"""search -> export -> quantize -> generate on SmolLM2 with small settings (the deployment pipeline)."""

import json

import pytest
import torch

from tests.numerics import assert_same_greedy_tokens, teacher_forced_logits

pytestmark = pytest.mark.integration


def test_search_export_quantize_generate(tmp_path):
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from optimum_subnet import OnnxExportConfig, ORTSubnetModelForCausalLM, SubnetConfig, SubnetOptimizer, export_onnx
    from optimum_subnet.loading import load_model

    config = SubnetConfig.preset(
        "fast", 0.7, device="cpu",
        search__population_size=4, search__num_mutations=2, search__num_crossovers=1, search__top_k=2,
        search__generations=1, search__fitness_windows=2, search__fitness_seq_len=64,
        data__num_samples=16, data__seq_len=128, data__eval_seq_len=128, data__eval_max_windows=4,
    )
    subnet_dir = SubnetOptimizer.from_pretrained("smollm2-135m").optimize(config, tmp_path / "subnet")
    # the torch exporter + GroupQueryAttention rewrite, then Optimum's stock quantizer (the direct builder's
    # graph is covered by tests/unit/test_onnx_builder.py and the family contract)
    onnx_dir = export_onnx(subnet_dir, tmp_path / "onnx", OnnxExportConfig(fuse_attention=True, builder="torch"))
    validation = json.loads((onnx_dir / "validation.json").read_text())
    assert validation["unfused"]["passed"] and validation["fused"]["passed"]
    assert sum(validation["fusion"]["rotary"][k] for k in ("fused", "explicit")) > 0

    quantized_dir = tmp_path / "onnx-int8"
    ORTQuantizer.from_pretrained(onnx_dir).quantize(AutoQuantizationConfig.avx2(is_static=False, per_channel=True),
                                                    quantized_dir)

    subnet, tokenizer = load_model(str(subnet_dir))
    prompt = tokenizer("The history of the Roman Empire began", return_tensors="pt")
    inputs = {"input_ids": prompt.input_ids, "attention_mask": prompt.attention_mask}
    expected = subnet.generate(**inputs, max_new_tokens=8, do_sample=False)
    fused = ORTSubnetModelForCausalLM.from_pretrained(onnx_dir)
    # ONNX Runtime (fused attention) vs PyTorch: other kernels, so greedy tokens are compared where no
    # step is a near tie (asserted: a real model's margins can be small, which would make it machine-dependent)
    assert_same_greedy_tokens(fused.generate(**inputs, max_new_tokens=8, do_sample=False), expected,
                              teacher_forced_logits(subnet, expected, 8))

    quantized = ORTSubnetModelForCausalLM.from_pretrained(quantized_dir, file_name="model_quantized.onnx")
    # int8 weights change logits, so greedy tokens of a heavily pruned 135M model may differ; what must hold
    # is that the quantized model still models the text: held-out perplexity close to the fp32 export's.
    # Measured: 1.2x with OBS-ranked subnets, 1.30x (257 -> 336) once the search ranked channels by FLAP's
    # fluctuation metric, which keeps the high-variance channels that dynamic int8 quantizes worst; 1.5x
    # still separates "close" from broken (a broken export is off by orders of magnitude).
    from optimum_subnet import data as data_lib

    windows = data_lib.evaluation_windows(data_lib.tokenize_stream(data_lib.load_texts("enwiki-extract", "evaluation"),
                                                                   tokenizer), 128, max_windows=4)
    fp32_ppl, int8_ppl = (_ort_perplexity(m, windows) for m in (fused, quantized))
    assert int8_ppl < 1.5 * fp32_ppl, (fp32_ppl, int8_ppl)
    generated = quantized.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 8
    onnx_size = (onnx_dir / "model.onnx").stat().st_size
    assert (quantized_dir / "model_quantized.onnx").stat().st_size < 0.5 * onnx_size


def _ort_perplexity(model, windows) -> float:
    import math

    import torch.nn.functional as F

    total, count = 0.0, 0
    for window in windows:
        ids = window.unsqueeze(0)
        logits = model(ids, attention_mask=torch.ones_like(ids)).logits.float()
        total += F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return math.exp(total / count)
