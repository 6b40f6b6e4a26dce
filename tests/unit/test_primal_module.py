"""PrimalAttention in a model: causal, GQA-aware, the fixed-size decoding state equals the full
forward, the calibration fit is the Eckart-Young optimum, save / load with and without the plugin."""


import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from optimum_subnet.algorithms.primal import causal_features
from optimum_subnet.primal.convert import convert_model, fit_layer
from optimum_subnet.primal.modeling_primal import PrimalAttention, PrimalStateLayer
from optimum_subnet.primal.save import save_primal
from tests.conftest import char_tokenizer, tiny_llama
from tests.plugin_free import run_without_plugin

pytestmark = pytest.mark.unit
VOCAB = len(char_tokenizer())


def _windows(n=6, length=24, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _close(a, b):
    """Two computation paths over the same numbers (float32, different blocking): 1e-4 relative to scale."""
    scale = float(b.abs().max())
    return float((a - b).abs().max()) <= 1e-4 * max(scale, 1e-6)


def _primal_model(subnet=False, layers=(2, 3), rank=4):
    model = tiny_llama()
    if subnet:
        from tests.unit.test_modeling import _random_spec
        from optimum_subnet.stages.surgery import extract_subnet

        model = extract_subnet(model, _random_spec(model, drop_layer=False))
    convert_model(model, {i: rank for i in layers}, _windows())
    return model.eval()


def test_module_is_causal_and_gqa_aware():
    model = _primal_model()
    attn = model.model.layers[3].self_attn
    assert isinstance(attn, PrimalAttention)
    assert (attn.num_heads, attn.num_key_value_heads, attn.head_dim) == (6, 2, 16)  # GQA: 3 query heads per KV head
    assert attn.k_proj.out_features == 2 * 16  # keys are projected (and summed) once per KV head
    x = torch.randn(2, 12, model.config.hidden_size)
    y = x.clone()
    y[:, 7:] = torch.randn(2, 5, model.config.hidden_size)
    with torch.no_grad():
        a, b = attn(x)[0], attn(y)[0]
    assert torch.equal(a[:, :7], b[:, :7])  # same prefix, same operations: bit-identical
    assert not torch.equal(a[:, 7:], b[:, 7:])
    ids = _windows(1, 20)
    other = ids.clone()
    other[:, 12:] = _windows(1, 8, seed=5)
    with torch.no_grad():  # whole model (softmax layers too): later tokens never reach earlier logits
        assert _close(model(other).logits[:, :12], model(ids).logits[:, :12])


def test_incremental_step_equals_full_forward():
    model = _primal_model()
    attn = model.model.layers[2].self_attn
    x = torch.randn(2, 10, model.config.hidden_size)
    cache = DynamicCache()
    with torch.no_grad():
        full = attn(x)[0]
        steps = [attn(x[:, :4], past_key_values=cache)[0]]
        steps += [attn(x[:, t: t + 1], past_key_values=cache)[0] for t in range(4, 10)]
    state = cache.layers[2]
    assert isinstance(state, PrimalStateLayer) and state.get_seq_length() == 10
    assert state.query_sum.shape == (2, 6, 16) and state.key_sum.shape == (2, 2, 16)  # fixed size
    assert _close(torch.cat(steps, dim=1), full)


@pytest.mark.parametrize("subnet", [False, True])
def test_greedy_generation_with_the_state_equals_the_full_forward_each_step(subnet):
    model = _primal_model(subnet=subnet)
    prompt = _windows(2, 9, seed=3)
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=True, return_dict_in_generate=True,
                             pad_token_id=2)
        tokens = prompt
        for _ in range(10):  # no cache: every step recomputes the whole sequence
            tokens = torch.cat([tokens, model(tokens, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out.sequences, tokens)
    cache = out.past_key_values
    assert isinstance(cache.layers[3], PrimalStateLayer) and cache.layers[3].get_seq_length() == 18
    assert cache.layers[1].keys.shape[-2] == 18  # softmax layers keep their KV cache


def test_left_padding_is_excluded_from_the_running_sums():
    model = _primal_model()
    ids = _windows(1, 10, seed=4)
    padded = torch.cat([torch.full((1, 3), 2), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        plain = model(ids).logits
    # the real tokens keep positions 0..9, as unpadded
    position_ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.arange(10)[None]], dim=1)
    with torch.no_grad():
        left = model(padded, attention_mask=mask, position_ids=position_ids).logits[:, 3:]
    assert _close(left, plain)


def test_calibration_fit_on_one_sequence_is_the_eckart_young_optimum():
    model = tiny_llama()
    from optimum_subnet.families import get_adapter_for_subnet
    from optimum_subnet.primal.convert import SuffixRunner

    adapter = get_adapter_for_subnet(model.config)
    window = _windows(1, 40, seed=7)
    runner = SuffixRunner(model, adapter, 3, "cpu")
    states = runner.prefix(window, 1)
    primal, fit = fit_layer(model.model.layers[3], adapter, 3, 5, states, runner.context, model.config.hidden_size,
                            1e-3)
    assert abs(fit.ksvd_objective) < 1e-4  # lambda = sigma^-1/2: the KSVD's stationary value J = 0
    with torch.no_grad():
        x = model.model.layers[3].input_layernorm(states[0])
        b, n, _ = x.shape
        q = primal.q_proj(x).view(b, n, 6, 16).transpose(1, 2).double()
        k = primal.k_proj(x).view(b, n, 2, 16).transpose(1, 2).double()
        phi_q, _ = causal_features(q)
        phi_k, _ = causal_features(k)
        e, r = primal.scores(x)
    for head in range(6):  # head h's kernel uses the keys of KV head h // 3
        kernel = phi_q[0, head] @ phi_k[0, head // 3].T / n
        u, s, vh = torch.linalg.svd(kernel)
        best = u[:, :5] @ torch.diag(s[:5]) @ vh[:5]
        sigma = primal.lam[head].double().pow(-2)
        approx = e[0, head].double() @ torch.diag(1 / sigma) @ r[0, head].double().T / n
        # float32 weights and scores against a float64 SVD: 1e-4 relative to the kernel's scale
        assert float((approx - best).abs().max()) <= 1e-4 * float(kernel.abs().max())


@pytest.mark.parametrize("subnet", [False, True])
def test_save_and_load_with_plugin_and_with_trust_remote_code_without_it(tmp_path, subnet):
    model = _primal_model(subnet=subnet)
    model.config._attn_implementation = "eager"
    save_primal(model, char_tokenizer(), tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert type(loaded).__name__ == ("PrimalSubnetLlamaForCausalLM" if subnet else "PrimalLlamaForCausalLM")
    assert isinstance(loaded.model.layers[3].self_attn, PrimalAttention)
    assert not hasattr(loaded.model.layers[3].self_attn, "v_proj")
    ids = _windows(1, 16, seed=9)
    with torch.no_grad():
        expected = model(ids).logits
        assert torch.equal(loaded(ids).logits, expected)  # same code, same weights, same operations
    torch.save({"ids": ids, "logits": expected}, tmp_path / "expected.pt")
    script = f"""
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True,
                                                     attn_implementation="eager")
        assert "optimum_subnet" not in sys.modules
        data = torch.load({str(tmp_path / "expected.pt")!r})
        with torch.no_grad():
            logits = model(data["ids"]).logits
            assert torch.equal(logits, data["logits"]), (logits - data["logits"]).abs().max()
            out = model.generate(data["ids"][:, :8], max_new_tokens=4, do_sample=False, pad_token_id=2)
        print("OK", type(model).__module__, out.shape[1])
    """
    # exact: the copied code is the plugin's, same weights, same thread count (tests/plugin_free.py)
    out = run_without_plugin(script, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK transformers_modules" in out.stdout and out.stdout.strip().endswith("12")


def test_loading_without_the_plugin_or_trust_fails_instead_of_dropping_weights(tmp_path):
    save_primal(_primal_model(), char_tokenizer(), tmp_path)
    script = f"""
        from transformers import AutoModelForCausalLM
        try:
            AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})
        except ValueError as e:
            print("REFUSED", "trust_remote_code" in str(e))
    """
    out = run_without_plugin(script, tmp_path)
    assert "REFUSED True" in out.stdout, out.stderr[-2000:]
