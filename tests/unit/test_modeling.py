"""LLaMA specifics of the heterogeneous subnet model (the family contract, tests/unit/families, covers the rest)."""

import random
import subprocess
import sys
import textwrap

import pytest
import torch

from optimum_subnet.families import get_adapter
from optimum_subnet.stages.surgery import save_subnet
from optimum_subnet.core.spec import SubnetSpec
from optimum_subnet.stages.surgery import extract_subnet, masked_copy
from tests.numerics import assert_same_greedy_tokens

pytestmark = pytest.mark.unit


def _random_spec(model, seed=0, per_head=True, drop_layer=True):
    shape = get_adapter(model.config).shape(model.config)
    spec = SubnetSpec.dense(shape)
    rng = random.Random(seed)
    half = shape.head_dim // 2
    for layer in spec.layers:
        width = rng.choice([3, 5, 6])
        shared = sorted(rng.sample(range(half), width))
        channels = []
        for _ in layer.kv_heads:
            pairs = sorted(rng.sample(range(half), width)) if per_head else shared
            channels.append(pairs + [p + half for p in pairs])
        layer.attention_channels = channels
        layer.mlp_channels = sorted(rng.sample(range(shape.intermediate_size), rng.choice([20, 64, 100])))
    if drop_layer:
        del spec.layers[1]
    return spec.validate()


@pytest.mark.parametrize("per_head", [True, False])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_pruned_model_equals_dense_model_with_channels_masked(model, per_head, attn):
    model.config._attn_implementation = attn
    spec = _random_spec(model, per_head=per_head)
    subnet = extract_subnet(model, spec)
    assert subnet.model.layers[0].self_attn.rope_mode == ("per_head" if per_head else "shared")
    masked = masked_copy(model, spec)
    ids = torch.randint(0, model.config.vocab_size, (2, 40))
    with torch.no_grad():
        expected, actual = masked(ids).logits, subnet(ids).logits
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(actual, model(ids).logits, atol=1e-3)  # the pruning really changed something


def test_subnet_keeps_the_dense_softmax_scale(model):
    subnet = extract_subnet(model, _random_spec(model))
    for layer in subnet.model.layers:
        assert layer.self_attn.head_dim < model.config.head_dim
        assert layer.self_attn.scaling == model.config.head_dim ** -0.5


def test_incremental_decoding_with_cache_matches_full_forward(model):
    subnet = extract_subnet(model, _random_spec(model))
    ids = torch.randint(3, model.config.vocab_size, (1, 12))
    with torch.no_grad():
        generated = subnet.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
        full = subnet(generated).logits
    # each generated token is the argmax of the full (uncached) forward at the previous position; the
    # cached steps and the full forward multiply other shapes (other roundings), so this is checked
    # only where no step is a near tie (asserted)
    assert_same_greedy_tokens(full[:, 11:-1].argmax(-1), generated[:, 12:], full[:, 11:-1])


def test_loading_without_plugin_or_trust_fails_clearly(tmp_path, model, tokenizer):
    spec = _random_spec(model)
    save_subnet(extract_subnet(model, spec), tokenizer, spec, tmp_path)
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.startswith("optimum_subnet"):
                    raise ImportError("blocked")
        sys.meta_path.insert(0, Block())
        from transformers import AutoModelForCausalLM
        AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=False)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode != 0
    assert "trust_remote_code" in out.stderr
