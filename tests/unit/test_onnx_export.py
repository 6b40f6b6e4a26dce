"""ONNX export, validation, ONNX Runtime generation, stock-tool chain and attention fusion (CPU)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from optimum_subnet import OnnxExportConfig, ORTSubnetModelForCausalLM, SubnetSpec, export_onnx
from optimum_subnet.families import get_adapter
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.stages.surgery import save_subnet
from optimum_subnet.stages.surgery import extract_subnet
from tests.conftest import char_tokenizer, tiny_llama
from tests.numerics import assert_close_to_scale, assert_same_greedy_tokens, teacher_forced_logits

pytestmark = pytest.mark.unit


def mixed_spec(model):
    """Layers exercising every fusion path: full heads (fused rotary), a shared 8-channel mask
    (explicit rotary), per-KV-head masks (explicit rotary), head size 6 (left unfused)."""
    spec = SubnetSpec.dense(get_adapter(model.config).shape(model.config))
    layers = spec.layers
    layers[1].attention_channels = [[0, 2, 5, 7, 8, 10, 13, 15]] * 2
    layers[2].attention_channels = [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]
    layers[3].attention_channels = [[0, 1, 2, 8, 9, 10]] * 2
    for layer in layers[1:]:
        layer.mlp_channels = list(range(0, 128, 2))
    return spec.validate()


@pytest.fixture(scope="module")
def subnet():
    model = tiny_llama()
    return model, extract_subnet(model, mixed_spec(model))


@pytest.fixture(scope="module")
def exported(subnet, tmp_path_factory):
    _, sub = subnet
    root = tmp_path_factory.mktemp("onnx")
    # the torch exporter (builder="torch"), the slower path kept beside the direct builder
    unfused = export_onnx(sub, root / "unfused", OnnxExportConfig(builder="torch"), tokenizer=char_tokenizer())
    fused = export_onnx(sub, root / "fused", OnnxExportConfig(fuse_attention=True, builder="torch"),
                        tokenizer=char_tokenizer())
    return unfused, fused


def _prompt():
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (2, 9))
    return ids, torch.ones_like(ids)


def test_export_has_per_layer_kv_shapes_and_validation(exported, subnet):
    import onnxruntime as ort

    unfused, _ = exported
    for name in ("model.onnx", "config.json", "validation.json", "export_config.json", "tokenizer.json"):
        assert (unfused / name).is_file(), name
    session = ort.InferenceSession(str(unfused / "model.onnx"))
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert [shapes[f"past_key_values.{i}.key"][3] for i in range(4)] == [16, 8, 8, 6]
    assert all(isinstance(shapes[f"past_key_values.{i}.key"][2], str) for i in range(4))  # dynamic past length
    report = json.loads((unfused / "validation.json").read_text())["unfused"]
    assert report["passed"] and report["max_abs_diff"] < 1e-4
    assert [step["step"] for step in report["steps"]] == ["prefill", "decode"]
    assert len(report["steps"][1]["layers"]) == 4 and report["steps"][1]["layers"][3]["shape"] == [2, 2, 17, 6]


@pytest.mark.parametrize("io_binding", [False, True])
@pytest.mark.parametrize("which", [0, 1])
def test_ort_greedy_generation_equals_pytorch(exported, subnet, io_binding, which):
    _, sub = subnet
    model = ORTSubnetModelForCausalLM.from_pretrained(exported[which], use_io_binding=io_binding)
    ids, mask = _prompt()
    expected = sub.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    reference = teacher_forced_logits(sub, expected, 8)
    # ONNX Runtime and PyTorch run other kernels: logits agree to rounding (1e-4 of their scale, the
    # bound assert_same_greedy_tokens assumes), and tokens are compared where no step is a near tie
    logits = model(expected, attention_mask=torch.ones_like(expected)).logits[:, -9:-1]
    assert_close_to_scale(logits, reference, rel=1e-4)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert_same_greedy_tokens(got, expected, reference)


def test_fusion_rewrites_each_layer_with_its_own_shape(exported):
    import onnx

    _, fused = exported
    summary = json.loads((fused / "validation.json").read_text())
    assert summary["fusion"]["rotary"] == {"fused": 1, "explicit": 2, "unfused": 1}
    assert summary["fused"]["passed"] and summary["fused"]["max_abs_diff"] < 1e-4
    nodes = [n for n in onnx.load(str(fused / "model.onnx")).graph.node if n.op_type == "GroupQueryAttention"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    assert [(a["num_heads"], a["kv_num_heads"], a["do_rotary"]) for a in attrs] == [(6, 2, 1), (6, 2, 0), (6, 2, 0)]
    assert all(abs(a["scale"] - 16 ** -0.5) < 1e-7 for a in attrs)  # the dense model's softmax scale


def test_stock_ort_class_dispatches_to_subnet_class(exported, subnet):
    from optimum.onnxruntime import ORTModelForCausalLM

    model = ORTModelForCausalLM.from_pretrained(exported[0])
    assert isinstance(model, ORTSubnetModelForCausalLM)
    ids, mask = _prompt()
    expected = subnet[1].generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    # ONNX Runtime vs PyTorch: compared where no step is a near tie
    assert_same_greedy_tokens(model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False), expected,
                              teacher_forced_logits(subnet[1], expected, 5))


def test_dense_model_goes_through_the_same_path(tmp_path):
    model = tiny_llama(seed=3)
    path = export_onnx(model, tmp_path / "dense", OnnxExportConfig(fuse_attention=True, builder="torch"),
                       tokenizer=char_tokenizer())
    report = json.loads((path / "validation.json").read_text())
    assert report["fusion"]["rotary"]["fused"] == 4 and report["fused"]["passed"]
    ids, mask = _prompt()
    ort_model = ORTSubnetModelForCausalLM.from_pretrained(path)
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    # ONNX Runtime (fused attention) vs PyTorch: compared where no step is a near tie
    assert_same_greedy_tokens(ort_model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False),
                              expected, teacher_forced_logits(model, expected, 6))


def test_export_outside_tolerance_fails_and_writes_nothing(subnet, tmp_path):
    _, sub = subnet
    with pytest.raises(SubnetError, match="validation failed"):
        export_onnx(sub, tmp_path / "strict", OnnxExportConfig(atol=1e-12, builder="torch"))
    assert not (tmp_path / "strict").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_bad_inputs(tmp_path, subnet):
    from transformers import GPT2Config, GPT2LMHeadModel

    from optimum_subnet.runtime.loading import load_ort_model

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(SubnetError, match="cannot export: unsupported architecture 'gpt2'"):
        export_onnx(gpt2, tmp_path / "gpt2")
    assert not (tmp_path / "gpt2").exists()
    with pytest.raises(SubnetError, match="fp16 export runs on a GPU"):
        OnnxExportConfig(dtype="fp16", device="cpu")
    # refused when the config is made, before any export work (the library's terms: atol, opset)
    for bad in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(SubnetError, match="tolerance atol must be a positive finite number"):
            OnnxExportConfig(atol=bad)
    for bad in (0, 5, 13, 99):
        with pytest.raises(SubnetError, match=f"ONNX opset {bad} is not supported: use 14 to"):
            OnnxExportConfig(opset=bad)
    assert OnnxExportConfig(atol=1e-4, opset=14).tolerance == 1e-4
    with pytest.raises(SubnetError, match="validation_batch_size must be an integer >= 1"):
        OnnxExportConfig(validation_batch_size=0)
    from optimum_subnet.runtime.loading import generate_text

    for bad in (0, -5, 2.5):
        with pytest.raises(SubnetError, match="max_new_tokens must be a positive integer"):
            generate_text(tmp_path / "anything", "Hi", max_new_tokens=bad)  # before any file is read
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "model.onnx").write_bytes(b"")
    with pytest.raises(SubnetError, match="has no config.json"):
        load_ort_model(no_config)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(SubnetError, match="install onnxruntime-gpu"):
            export_onnx(subnet[1], tmp_path / "cuda", OnnxExportConfig(device="cuda"))
        assert not (tmp_path / "cuda").exists()


def _cli(*args, cwd=None):
    env = dict(os.environ, OPTIMUM_SUBNET_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "optimum.commands.optimum_cli", *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=cwd)


def test_cli_export_then_stock_quantize_and_optimize(tmp_path, subnet):
    model, sub = subnet
    spec = mixed_spec(model)
    save_subnet(extract_subnet(model, spec), char_tokenizer(), spec, tmp_path / "subnet")
    out = _cli("export", "subnet-onnx", "--model", str(tmp_path / "subnet"), "--output", str(tmp_path / "onnx"),
               "--builder", "torch")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "max |ONNX - PyTorch|" in out.stdout
    out = _cli("onnxruntime", "quantize", "--onnx_model", str(tmp_path / "onnx"), "--avx2", "-o", str(tmp_path / "q"))
    assert out.returncode == 0, out.stderr[-3000:]
    out = _cli("onnxruntime", "optimize", "--onnx_model", str(tmp_path / "onnx"), "-O2", "-o", str(tmp_path / "o2"))
    assert out.returncode == 0, out.stderr[-3000:]

    ids, mask = _prompt()
    with torch.no_grad():
        reference = sub(ids, attention_mask=mask).logits
    expected_tokens = sub.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    optimized = ORTSubnetModelForCausalLM.from_pretrained(tmp_path / "o2", file_name="model_optimized.onnx")
    assert (optimized(ids, attention_mask=mask).logits - reference).abs().max() < 1e-4
    # the O2-optimized graph vs PyTorch: other kernels, compared where no step is a near tie
    assert_same_greedy_tokens(optimized.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False),
                              expected_tokens, teacher_forced_logits(sub, expected_tokens, 6))
    quantized = ORTSubnetModelForCausalLM.from_pretrained(tmp_path / "q", file_name="model_quantized.onnx")
    q_logits = quantized(ids, attention_mask=mask).logits
    # int8 weights: not bit-equal, but close, and the same next-token choice almost everywhere
    assert (q_logits - reference).abs().max() < 0.25 * reference.abs().max()
    assert (q_logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9
    assert quantized.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False).shape == expected_tokens.shape


def test_cli_generate_and_missing_config(tmp_path, exported):
    # a torch export runs with the slower engine only; the default engine names the fix
    out = _cli("subnet", "generate", "--model", str(exported[1]), "--prompt", "The quick", "--max-new-tokens", "5")
    assert out.returncode == 2 and "re-export it with --builder direct (or use --engine optimum" in out.stderr
    out = _cli("subnet", "generate", "--model", str(exported[1]), "--prompt", "The quick", "--max-new-tokens", "5",
               "--engine", "optimum")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("The quick")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes((exported[0] / "model.onnx").read_bytes())
    out = _cli("subnet", "generate", "--model", str(broken), "--prompt", "x")
    assert out.returncode == 2 and "has no config.json" in out.stderr


def test_static_kv_cache_decodes_in_place(tmp_path):
    """Every layer fused: past and present share one preallocated buffer per layer (GQA writes in place)."""
    model = tiny_llama(seed=4)
    spec = SubnetSpec.dense(get_adapter(model.config).shape(model.config))
    spec.layers[1].attention_channels = [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]  # explicit rotary
    spec.layers[2].mlp_channels = list(range(0, 128, 2))
    sub = extract_subnet(model, spec.validate())
    path = export_onnx(sub, tmp_path / "fused", OnnxExportConfig(fuse_attention=True, builder="torch"),
                       tokenizer=char_tokenizer())
    ort_model = ORTSubnetModelForCausalLM.from_pretrained(path)
    ids, mask = _prompt()
    expected = sub.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    dynamic = ort_model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    ort_model.enable_static_cache(max_length=32)
    static = ort_model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    # ONNX Runtime (in-place static cache, or dynamic) vs PyTorch: compared where no step is a near tie
    reference = teacher_forced_logits(sub, expected, 10)
    assert_same_greedy_tokens(static, expected, reference)
    assert_same_greedy_tokens(dynamic, expected, reference)
    buffers = ort_model._static_buffers
    assert buffers[0].shape == (2, 2, 32, 16) and buffers[2].shape == (2, 2, 32, 8)
    with pytest.raises(ValueError, match="exceeds the static cache"):
        ort_model.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False)


def test_static_cache_refuses_unfused_layers(exported):
    unfused = ORTSubnetModelForCausalLM.from_pretrained(exported[0])
    with pytest.raises(ValueError, match="needs every layer fused"):
        unfused.enable_static_cache(64)
    partly = ORTSubnetModelForCausalLM.from_pretrained(exported[1])  # layer 3 (head size 6) stays unfused
    with pytest.raises(ValueError, match="needs every layer fused"):
        partly.enable_static_cache(64)
