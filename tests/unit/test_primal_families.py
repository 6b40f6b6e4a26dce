"""Primal-Attention on every supported family (dense and subnet), on the tiny random models of the
adapter contract: the module is built from the family's own attention (fused q/k/v, biases, q/k
norms), the converted model is causal, incremental decoding with the fixed-size state equals the full
forward (also when a primal layer is the cache's first sliding-window or full layer, whose sizes the
model's masks are built from), and saved models load with the plugin and with ``trust_remote_code``."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_subnet.primal.convert import convert_model
from optimum_subnet.primal.modeling_primal import PrimalAttention, PrimalStateLayer
from optimum_subnet.primal.registration import FAMILIES
from optimum_subnet.primal.save import save_primal
from optimum_subnet.stages.surgery import extract_subnet
from tests.conftest import char_tokenizer
from tests.numerics import assert_close_to_scale
from tests.plugin_free import run_without_plugin
from tests.unit.families import test_contract as contract

pytestmark = pytest.mark.unit

FAMILY_TESTS = {"llama": contract.TestLlama, "mistral": contract.TestMistral, "qwen2": contract.TestQwen2,
                "qwen3": contract.TestQwen3, "gemma3_text": contract.TestGemma3, "phi3": contract.TestPhi3}
#: layer 0 is the first layer of every tiny model: the cache layer whose sizes the masks of its
#: attention type come from (sliding for Mistral / Gemma3, full for Qwen2); layer 2 is Gemma3's full
#: layer and Qwen2's first sliding one
PRIMAL_LAYERS = (0, 2)


def _dense(family: str):
    torch.manual_seed(0)
    config = FAMILY_TESTS[family]().config()
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # the contract's weights: large enough that every part of the layer matters
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
            elif "norm" in name:
                p.uniform_(-0.3, 0.3) if "gemma" in family else p.uniform_(0.7, 1.3)
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
    return model


def _base(family: str, subnet: bool):
    model = _dense(family)
    if subnet:  # heterogeneous widths, one layer dropped
        model = extract_subnet(model, FAMILY_TESTS[family]().spec(model))
        model.config._attn_implementation = "eager"
    return model


@functools.lru_cache(maxsize=None)
def _converted_once(family: str, subnet: bool):
    model = _base(family, subnet)
    windows = torch.randint(3, contract.VOCAB, (6, 24), generator=torch.Generator().manual_seed(0))
    convert_model(model, {i: 4 for i in PRIMAL_LAYERS}, windows)
    return model.eval()


def _converted(family: str, subnet: bool):
    """The converted tiny model (fitted once per module; each test gets its own copy)."""
    return copy.deepcopy(_converted_once(family, subnet))


CASES = [pytest.param(f, s, id=f"{f}-{'subnet' if s else 'dense'}") for f in FAMILY_TESTS for s in (False, True)]


def test_every_family_and_its_subnets_have_a_primal_type():
    from optimum_subnet.families import subnet_model_types, supported_model_types

    assert sorted(FAMILIES) == sorted(supported_model_types() + subnet_model_types())
    for base, family in FAMILIES.items():
        assert family.model_type == f"primal_{base}"
        assert issubclass(family.lm, family.base_lm) and issubclass(family.config, family.base_config)


@pytest.mark.parametrize("family, subnet", CASES)
def test_converted_model_is_causal_and_its_type_resolves_to_the_family_adapter(family, subnet):
    from optimum_subnet.families import get_adapter_for_subnet

    model = _converted(family, subnet)
    adapter = get_adapter_for_subnet(model.config)  # through the primal config's base classes
    assert family in adapter.model_types
    assert model.config.model_type == f"primal_{adapter.subnet_model_type if subnet else family}"
    for index in PRIMAL_LAYERS:
        assert isinstance(adapter.attention(adapter.decoder_layers(model)[index]), PrimalAttention)
    ids = torch.randint(3, contract.VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
    other = ids.clone()
    other[:, 13:] = torch.randint(3, contract.VOCAB, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = model(ids).logits, model(other).logits
    # the same prefix through the same operations on other tensor shapes: equal up to blocking
    assert_close_to_scale(b[:, :13], a[:, :13], 1e-5)
    assert (b[:, 13:] - a[:, 13:]).abs().max() > 1e-3 * a.abs().max()


@pytest.mark.parametrize("family, subnet", CASES)
def test_incremental_decoding_with_the_state_equals_the_full_forward(family, subnet):
    model = _converted(family, subnet)
    ids = torch.randint(3, contract.VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # 20 tokens: past the sliding windows (12), so the windowed masks are exercised
        full = model(ids).logits
        out = model(ids[:, :9], use_cache=True)
        steps, past = [out.logits], out.past_key_values
        for t in range(9, 20):
            out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True)
            steps.append(out.logits)
            past = out.past_key_values
    assert_close_to_scale(torch.cat(steps, dim=1), full, 1e-5)
    for index in PRIMAL_LAYERS:
        state = past.layers[index]
        module = model.model.layers[index].self_attn
        assert isinstance(state, PrimalStateLayer) and state.get_seq_length() == 20
        # fixed size: one running sum per query head and per KV head, whatever the context length
        assert state.query_sum.shape == (2, module.num_heads, module.head_dim)
        assert state.key_sum.shape == (2, module.num_key_value_heads, module.head_dim)
    others = [i for i in range(len(model.model.layers)) if i not in PRIMAL_LAYERS]
    assert all(not isinstance(past.layers[i], PrimalStateLayer) for i in others)


@pytest.mark.parametrize("family", list(FAMILY_TESTS))
def test_the_module_takes_the_familys_queries_and_keys_as_its_softmax_compares_them(family):
    """Before RoPE, after the q/k norms (Qwen3, Gemma3), with the biases (Qwen2), from the fused
    projection's query and key rows (Phi-3); the softmax scale has no counterpart (a cosine)."""
    model = _dense(family)
    attention = copy.deepcopy(model.model.layers[2].self_attn)
    converted = _converted(family, False)
    primal = converted.model.layers[2].self_attn
    x = torch.randn(2, 7, model.config.hidden_size)
    hd = attention.head_dim
    with torch.no_grad():
        if hasattr(attention, "qkv_proj"):
            q_size = attention.o_proj.in_features
            qkv, kv_size = attention.qkv_proj(x), primal.num_key_value_heads * hd
            q_raw, k_raw = qkv[..., :q_size], qkv[..., q_size:q_size + kv_size]
            assert not hasattr(primal, "qkv_proj") and primal.q_proj.out_features == q_size
        else:
            q_raw, k_raw = attention.q_proj(x), attention.k_proj(x)
            assert (primal.q_proj.bias is not None) == (attention.q_proj.bias is not None)
        q, k = q_raw.view(2, 7, -1, hd), k_raw.view(2, 7, -1, hd)
        if hasattr(attention, "q_norm"):
            q, k = attention.q_norm(q), attention.k_norm(k)
            assert torch.equal(primal.q_norm.weight, attention.q_norm.weight)
        got_q, got_k = primal.project(x)
    assert hasattr(primal, "q_norm") == (family in ("qwen3", "gemma3_text"))
    assert_close_to_scale(got_q, q.transpose(1, 2), 1e-6)
    assert_close_to_scale(got_k, k.transpose(1, 2), 1e-6)
    assert primal.is_sliding == bool(getattr(attention, "is_sliding", False))


def test_saved_models_of_every_family_load_with_the_plugin_and_with_trust_remote_code_without_it(tmp_path):
    ids = torch.randint(3, contract.VOCAB, (1, 16), generator=torch.Generator().manual_seed(9))
    expected = {}
    for family in FAMILY_TESTS:
        for subnet in (False, True):
            model = _converted(family, subnet)
            folder = tmp_path / f"{family}-{subnet}"
            save_primal(model, char_tokenizer(), folder)
            loaded = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
            assert type(loaded) is type(model) and loaded.config.model_type == model.config.model_type
            assert isinstance(loaded.model.layers[PRIMAL_LAYERS[-1]].self_attn, PrimalAttention)
            assert not any(name.endswith(("v_proj.weight", "qkv_proj.weight")) for name in
                           loaded.model.layers[PRIMAL_LAYERS[-1]].state_dict())
            with torch.no_grad():  # same code, same weights, same operations
                logits = model(ids).logits
                assert torch.equal(loaded(ids).logits, logits), folder.name
            expected[folder.name] = (type(model).__name__, logits)
    torch.save({"ids": ids, "expected": expected}, tmp_path / "expected.pt")
    script = f"""
        import torch
        from transformers import AutoModelForCausalLM
        data = torch.load({str(tmp_path / "expected.pt")!r})
        for name, (class_name, logits) in data["expected"].items():
            model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r} + "/" + name, trust_remote_code=True,
                                                         attn_implementation="eager")
            assert type(model).__name__ == class_name and type(model).__module__.startswith("transformers_modules")
            with torch.no_grad():
                got = model(data["ids"]).logits
                assert torch.equal(got, logits), (name, (got - logits).abs().max())
                out = model.generate(data["ids"][:, :8], max_new_tokens=4, do_sample=False, pad_token_id=2)
            assert out.shape[1] == 12
            print("OK", name)
        assert "optimum_subnet" not in sys.modules
    """
    # exact: the copied code is the plugin's, same weights, same thread count (tests/plugin_free.py)
    out = run_without_plugin(script, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("OK ") == 2 * len(FAMILY_TESTS), out.stdout
