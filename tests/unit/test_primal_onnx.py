"""ONNX export of models with Primal-Attention layers: the running sums as past / present (two
fixed-size tensors per primal layer, the other layers keep their KV cache), validated against PyTorch
like every export, and ONNX Runtime greedy generation (ORTSubnetModelForCausalLM, ``optimum-cli subnet
generate``) equal to PyTorch's, with the near-tie check of ``tests/numerics.py``."""

from __future__ import annotations

import json

import pytest
import torch

from optimum_subnet.core.errors import SubnetError
from optimum_subnet.onnx.export import OnnxExportConfig, export_onnx
from tests.conftest import char_tokenizer
from tests.numerics import assert_same_greedy_tokens, teacher_forced_logits
from tests.unit import test_primal_families as families
from tests.unit.families.test_contract import VOCAB

pytestmark = pytest.mark.unit

#: layer 0 primal in every case (the position count comes from the state); each family's peculiarity:
#: plain GQA (LLaMA), q/k norms, softmax scale and sliding / global layers (Gemma3), a subnet with fused
#: qkv and partial rotary (Phi-3), a subnet with q/k biases and sliding layers (Qwen2)
CASES = [pytest.param("llama", False, id="llama-dense"), pytest.param("gemma3_text", False, id="gemma3-dense"),
         pytest.param("phi3", True, id="phi3-subnet"), pytest.param("qwen2", True, id="qwen2-subnet")]


def _export(model, folder):
    # 20 tokens: longer than the sliding windows (12), so the exported masks are exercised
    return export_onnx(model, folder, OnnxExportConfig(validation_sequence_length=20), tokenizer=char_tokenizer())


@pytest.mark.parametrize("family, subnet", CASES)
def test_export_carries_the_state_as_past_and_present_and_generates_like_pytorch(tmp_path, family, subnet):
    import onnx

    from optimum_subnet.runtime.loading import load_ort_model

    model = families._converted(family, subnet)
    out = _export(model, tmp_path / "onnx")
    report = json.loads((out / "validation.json").read_text())
    assert report["builder"] == "torch"  # the default export: the direct builder does not write primal layers
    validation = report["unfused"]
    assert validation["passed"] and [s["step"] for s in validation["steps"]] == ["prefill", "decode"]
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    shapes = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}
    for index, layer in enumerate(model.model.layers):
        attention = layer.self_attn
        if index in families.PRIMAL_LAYERS:  # fixed size: only the batch axis is dynamic
            assert shapes[f"past_key_values.{index}.query_sum"] == ["batch_size", attention.num_heads,
                                                                    attention.head_dim]
            assert shapes[f"past_key_values.{index}.key_sum"] == ["batch_size", attention.num_key_value_heads,
                                                                  attention.head_dim]
            assert f"past_key_values.{index}.key" not in shapes
            entry = next(e for s in validation["steps"] if s["step"] == "decode" for e in s["layers"]
                         if e["layer"] == index)
            assert entry["state_max_scaled_diff"] <= 1e-3
        else:
            assert shapes[f"past_key_values.{index}.key"][2] == "past_sequence_length"
    ort = load_ort_model(out)
    assert ort.state_names == {f"past_key_values.{i}.{p}" for i in families.PRIMAL_LAYERS
                               for p in ("query_sum", "key_sum")}
    ids = torch.randint(3, VOCAB, (2, 14), generator=torch.Generator().manual_seed(4))
    got = ort.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=2)
    with torch.no_grad():
        expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                  pad_token_id=2)
    assert_same_greedy_tokens(got, expected, teacher_forced_logits(model, expected, 8))


def test_left_padded_batch_generates_like_pytorch(tmp_path):
    """Padding is excluded from the running sums in the graph as in PyTorch (read from the mask)."""
    from optimum_subnet.runtime.loading import load_ort_model

    from optimum.onnxruntime import ORTModelForCausalLM

    from optimum_subnet.runtime import ORTSubnetModelForCausalLM

    model = families._converted("llama", False)
    ort = load_ort_model(_export(model, tmp_path / "onnx"))
    # Optimum's stock class hands a primal export to ours (its name filter would miss the query sums)
    assert type(ORTModelForCausalLM.from_pretrained(tmp_path / "onnx")) is ORTSubnetModelForCausalLM
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(ids)
    ids[1, :5], mask[1, :5] = 2, 0  # the second prompt is 7 tokens, left-padded
    new = 8
    got = ort.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=2)
    with torch.no_grad():
        expected = model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=2)
        full_mask = torch.cat([mask, torch.ones(2, new, dtype=mask.dtype)], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(expected, attention_mask=full_mask, position_ids=positions).logits[:, -new - 1:-1]
    assert_same_greedy_tokens(got, expected, logits)
    unpadded = ids[1:, 5:]
    with torch.no_grad():  # and the padded row continues as the unpadded prompt alone does
        alone = model.generate(unpadded, attention_mask=torch.ones_like(unpadded), max_new_tokens=new,
                               do_sample=False, pad_token_id=2)
    assert torch.equal(expected[1, 12:], alone[0, 7:])


def test_fused_attention_is_refused_for_primal_models_with_nothing_written(tmp_path):
    model = families._converted("llama", False)
    with pytest.raises(SubnetError, match="not available for models with Primal-Attention layers"):
        export_onnx(model, tmp_path / "onnx", OnnxExportConfig(fuse_attention=True))
    assert not (tmp_path / "onnx").exists()


def test_the_direct_builder_refuses_primal_models_with_nothing_written(tmp_path):
    from optimum_subnet.onnx.builder.decoder import check_buildable

    check_buildable(families._base("llama", False).config)  # the base family is one the direct builder writes
    model = families._converted("llama", False)
    with pytest.raises(SubnetError, match="does not write Primal-Attention layers; export this model with "
                                          'builder="torch"'):
        export_onnx(model, tmp_path / "onnx", OnnxExportConfig(builder="direct"))
    assert not (tmp_path / "onnx").exists()


def test_cli_export_and_generate_equal_pytorch_generate(tmp_path, monkeypatch):
    import contextlib
    import io

    from optimum_subnet.primal.save import save_primal
    from tests.bad_inputs import run_cli

    monkeypatch.chdir(tmp_path)
    # a family the direct builder writes: the default export and generate's default engine (the generator,
    # for direct graphs) both step aside for the primal model
    model = families._converted("qwen3", False)
    save_primal(model, char_tokenizer(), tmp_path / "primal")
    code, err = run_cli(["export", "--model", "primal", "--output", "onnx"])
    assert code == 0, err
    tokens = {}
    for folder in ("primal", "onnx"):  # PyTorch, then ONNX Runtime
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code, err = run_cli(["generate", "--model", folder, "--prompt", "The cat sat", "--max-new-tokens", "8"])
        assert code == 0, err
        text = stdout.getvalue().rstrip("\n")
        assert text.startswith("The cat sat") and len(text) == len("The cat sat") + 8  # one character a token
        tokens[folder] = torch.tensor([char_tokenizer()(text)["input_ids"]])
    assert_same_greedy_tokens(tokens["onnx"], tokens["primal"], teacher_forced_logits(model, tokens["primal"], 8))
