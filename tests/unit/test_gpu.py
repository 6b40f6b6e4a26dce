"""GPU tests: skipped without CUDA (see conftest); run on the GPU machine when GPU code changes."""

import json

import pytest
import torch

from tests.conftest import char_tokenizer, tiny_llama

pytestmark = [pytest.mark.gpu]


def _cuda_ort_available():
    try:
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        return "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        return False


def test_search_pass_runs_on_cuda(tmp_path, tiny_model_dir):
    from optimum_subnet import SubnetConfig, SubnetOptimizer
    from tests.conftest import SAMPLE_TEXT

    cal, ev = tmp_path / "calibration.txt", tmp_path / "evaluation.txt"  # .txt: no datasets needed on the GPU box
    cal.write_text(SAMPLE_TEXT)
    ev.write_text(SAMPLE_TEXT[::-1])
    config = SubnetConfig.preset(
        "fast", 0.7, device="cuda", search__population_size=4, search__num_mutations=2, search__num_crossovers=1,
        search__top_k=2, search__generations=2, search__fitness_windows=2, search__fitness_seq_len=32,
        data__dataset=str(cal), data__eval_dataset=str(ev), data__num_samples=8, data__seq_len=32,
        data__eval_seq_len=32, data__eval_max_windows=4, faithfulness__prompts=0)
    out = SubnetOptimizer.from_pretrained(str(tiny_model_dir)).optimize(config, tmp_path / "subnet")
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["device"] == "cuda"
    assert abs(report["subnet"]["inheriting_ratio"] - 0.7) <= 0.007


@pytest.mark.skipif(not _cuda_ort_available(), reason="needs onnxruntime-gpu with CUDAExecutionProvider")
@pytest.mark.parametrize("fuse", [False, True])
def test_fp16_cuda_export_and_generation(tmp_path, fuse):
    from optimum_subnet import OnnxExportConfig, ORTSubnetModelForCausalLM, export_onnx
    from optimum_subnet.stages.surgery import extract_subnet
    from tests.unit.test_onnx_export import mixed_spec

    model = tiny_llama(seed=5)
    subnet = extract_subnet(model, mixed_spec(model))
    path = export_onnx(subnet, tmp_path / "onnx", OnnxExportConfig(dtype="fp16", device="cuda", fuse_attention=fuse,
                                                                        builder="torch"),
                       tokenizer=char_tokenizer())
    report = json.loads((path / "validation.json").read_text())
    key = "fused" if fuse else "unfused"
    assert report[key]["provider"] == "CUDAExecutionProvider" and report[key]["passed"]
    ort_model = ORTSubnetModelForCausalLM.from_pretrained(path, provider="CUDAExecutionProvider")
    torch.manual_seed(0)
    ids = torch.randint(3, 100, (2, 12), device="cuda")
    mask = torch.ones_like(ids)
    subnet = subnet.to("cuda", torch.float16)
    with torch.no_grad():
        ref = subnet(ids, attention_mask=mask).logits.float()
    logits = ort_model(ids, attention_mask=mask).logits.float()
    assert (logits - ref).abs().max() < 5e-2
    generated = ort_model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    expected = subnet.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert (generated == expected).float().mean() > 0.95  # fp16: a near-tie may flip late tokens
