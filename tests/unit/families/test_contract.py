"""The adapter contract: every supported family passes the same suite on a tiny random model of its own.

A new family is one folder under ``optimum_subnet/families``, one line in ``families/registry.py`` and
one subclass here (its tiny config). Exact (bitwise) comparisons are made only where both sides run
the same operations in the same order (an all-ones spec runs the family's own computation; a saved
and reloaded subnet runs the same code); everything else is compared with a tolerance relative to
the values' scale.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_subnet.core.spec import SubnetSpec
from optimum_subnet.families import get_adapter
from optimum_subnet.stages.surgery import extract_subnet, masked_as, masked_copy, save_subnet
from tests.conftest import char_tokenizer
from tests.plugin_free import run_without_plugin

pytestmark = pytest.mark.unit

VOCAB = len(char_tokenizer())
COMMON = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=128, num_hidden_layers=4, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal up to float summation order: a tolerance scaled to the values' magnitude."""
    return bool(((actual - expected).abs().max() <= rel * expected.abs().max() + 1e-6).item())


class FamilyContract:
    """Subclasses set ``model_type`` and implement :meth:`config`."""

    model_type: str

    def config(self):
        raise NotImplementedError

    # -------------------------------------------------------------------------------- helpers
    @pytest.fixture
    def model(self):
        from transformers import AutoModelForCausalLM as Auto

        torch.manual_seed(0)
        config = self.config()
        config._attn_implementation = "eager"
        model = Auto.from_config(config).eval()
        with torch.no_grad():  # larger-than-default weights so that pruning visibly changes outputs
            for name, p in model.named_parameters():
                if p.dim() == 2:
                    p.normal_(0, 0.08)
                elif "norm" in name:
                    p.uniform_(-0.3, 0.3) if "gemma" in self.model_type else p.uniform_(0.7, 1.3)
                elif name.endswith("bias"):
                    p.normal_(0, 0.05)
        return model

    def spec(self, model, seed: int = 0, heads: bool = False, drop_layer: bool = True,
             widths: tuple[int, ...] = (3, 5, 6)) -> SubnetSpec:
        """A random heterogeneous spec: in-head RoPE pairs (the same in every head for q/k-norm families)
        or whole KV heads, per-layer MLP widths, one dropped layer."""
        from optimum_subnet.algorithms import rope

        adapter = get_adapter(model.config)
        shape = adapter.shape(model.config)
        spec = SubnetSpec.dense(shape)
        rng = random.Random(seed)
        units = shape.head_dim // 2
        for layer in spec.layers:
            if heads:
                layer.kv_heads = sorted(rng.sample(range(shape.num_key_value_heads), 1))
                layer.attention_channels = [list(range(shape.head_dim))]
            else:
                width = rng.choice(list(widths))
                shared = sorted(rng.sample(range(units), width))
                layer.attention_channels = [
                    rope.channels_of(shared if shape.qk_norm else sorted(rng.sample(range(units), width)),
                                     shape.head_dim, shape.rotary_dim)
                    for _ in layer.kv_heads]
            layer.mlp_channels = sorted(rng.sample(range(shape.intermediate_size), rng.choice([20, 64, 100])))
        if drop_layer:
            del spec.layers[1]
        return spec.validate()

    def subnet_with_out_biases(self, model):
        """The random spec's subnet with W_O / W_down biases on every other layer (what FLAP's bias
        compensation and the reformation's intercept add), filled with random values so that saving,
        loading and exporting must carry them."""
        spec = self.spec(model)
        spec = SubnetSpec(shape=spec.shape, layers=[
            dataclasses.replace(layer, attention_out_bias=i % 2 == 0, mlp_out_bias=i % 2 == 0)
            for i, layer in enumerate(spec.layers)]).validate()
        subnet = extract_subnet(model, spec)
        adapter = get_adapter(model.config)
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for layer in adapter.decoder_layers(subnet):
                for role in ("o", "down"):
                    bias = adapter.linears(layer)[role].bias
                    if bias is not None:
                        bias.copy_(0.05 * torch.randn(bias.shape, generator=generator))
        assert sum(p.numel() for p in subnet.parameters()) == spec.params()
        return subnet, spec

    # -------------------------------------------------------------------------------- the contract
    def test_adapter_is_chosen_by_model_type(self, model):
        adapter = get_adapter(model.config)
        assert self.model_type in adapter.model_types
        shape = adapter.shape(model.config)
        assert SubnetSpec.dense(shape).params() == sum(p.numel() for p in model.parameters())

    def test_all_ones_spec_reproduces_dense_logits_exactly(self, model):
        # the subnet runs the family's own operations in the same order: bitwise equal
        subnet = extract_subnet(model, SubnetSpec.dense(get_adapter(model.config).shape(model.config)))
        ids = torch.randint(3, VOCAB, (2, 33), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.equal(model(ids).logits, subnet(ids).logits)

    @pytest.mark.parametrize("attn", ["eager", "sdpa"])
    def test_pruned_model_equals_dense_model_with_channels_masked(self, model, attn):
        model.config._attn_implementation = attn
        adapter = get_adapter(model.config)
        # in-head pruning is exact where the family allows it; whole heads always are
        specs = [self.spec(model, heads=True)]
        if adapter.traits.in_head_pruning_exact:
            specs.append(self.spec(model))
        ids = torch.randint(3, VOCAB, (2, 40), generator=torch.Generator().manual_seed(2))
        for spec in specs:
            subnet = extract_subnet(model, spec)
            with torch.no_grad():
                expected, actual = masked_copy(model, spec)(ids).logits, subnet(ids).logits
            # the masked dense model sums zeros the subnet does not have: equal up to summation order
            assert _close(actual, expected), (actual - expected).abs().max()
            assert not _close(actual, model(ids).logits, 1e-3)  # the pruning really changed something

    @pytest.mark.parametrize("attn", ["eager", "sdpa"])
    def test_masked_dense_model_computes_the_subnet(self, model, attn):
        """``masked_as`` (the screening's subnet without building it) equals the extracted subnet, dropped
        layer included, and leaves the dense model as it was."""
        model.config._attn_implementation = attn
        adapter = get_adapter(model.config)
        specs = [self.spec(model, heads=True)]
        if adapter.traits.in_head_pruning_exact:
            specs.append(self.spec(model, seed=3))
        ids = torch.randint(3, VOCAB, (2, 40), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            dense = model(ids).logits
            for spec in specs:
                expected = extract_subnet(model, spec)(ids).logits
                with masked_as(model, spec, adapter):
                    actual = model(ids).logits
                assert _close(actual, expected), (actual - expected).abs().max()
                assert not _close(actual, dense, 1e-3)
            assert torch.equal(model(ids).logits, dense)  # hooks and bypasses removed

    def test_in_head_pruning_runs_and_is_physically_smaller(self, model):
        spec = self.spec(model)
        subnet = extract_subnet(model, spec)
        assert sum(p.numel() for p in subnet.parameters()) == spec.params()
        ids = torch.randint(3, VOCAB, (1, 24))
        with torch.no_grad():
            assert torch.isfinite(subnet(ids).logits).all()

    def test_dropping_a_layer_keeps_the_other_layers_types(self, model):
        spec = self.spec(model)
        subnet = extract_subnet(model, spec)
        types = getattr(model.config, "layer_types", None)
        if types is None:
            pytest.skip("this family has one attention type")
        assert subnet.config.layer_types == [types[layer.source_index] for layer in spec.layers]
        for new, layer in enumerate(spec.layers):
            assert subnet.model.layers[new].attention_type == types[layer.source_index]

    def test_incremental_decoding_with_cache_matches_full_forward(self, model):
        subnet = extract_subnet(model, self.spec(model))
        ids = torch.randint(3, VOCAB, (1, 20), generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            full = subnet(ids).logits
            out = subnet(ids[:, :12], use_cache=True)
            steps = [out.logits]
            past = out.past_key_values
            for t in range(12, 20):
                out = subnet(ids[:, t:t + 1], past_key_values=past, use_cache=True)
                past = out.past_key_values
                steps.append(out.logits)
        # cached decode attends over the same keys in another blocking: equal up to summation order
        assert _close(torch.cat(steps, dim=1), full)

    def test_save_and_load_with_plugin(self, tmp_path, model):
        subnet, spec = self.subnet_with_out_biases(model)
        save_subnet(subnet, char_tokenizer(), spec, tmp_path)
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
        assert type(loaded).__name__ == type(subnet).__name__
        ids = torch.randint(3, VOCAB, (1, 20))
        subnet.config._attn_implementation = "eager"
        with torch.no_grad():  # same code, same weights, same operations
            assert torch.equal(loaded(ids).logits, subnet(ids).logits)
        assert SubnetSpec.load(tmp_path).key() == spec.key()

    def test_memory_mapped_loading_equals_the_resident_load(self, tmp_path, model):
        """``load_model(offload_folder=...)`` (weights memory-mapped from disk) builds the same model, the LM head
        tied where the family's class ties it (its own tied keys, not a hard-coded name)."""
        from optimum_subnet.loading import load_model

        model.save_pretrained(tmp_path / "dense")
        char_tokenizer().save_pretrained(tmp_path / "dense")
        resident, _ = load_model(str(tmp_path / "dense"))
        mapped, _ = load_model(str(tmp_path / "dense"), offload_folder=str(tmp_path / "mapped"))
        ids = torch.randint(3, VOCAB, (1, 16), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            assert _close(mapped(ids).logits, resident(ids).logits)
        head, embedding = mapped.get_output_embeddings().weight, mapped.get_input_embeddings().weight
        assert (head.data_ptr() == embedding.data_ptr()) == bool(model.config.tie_word_embeddings)

    def test_trust_remote_code_loads_without_the_plugin(self, tmp_path, model):
        subnet, spec = self.subnet_with_out_biases(model)
        subnet.config._attn_implementation = "eager"
        save_subnet(subnet, char_tokenizer(), spec, tmp_path)
        ids = torch.randint(3, VOCAB, (1, 16))
        with torch.no_grad():
            expected = subnet(ids).logits
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
            print("OK", type(model).__module__)
        """
        # exact: the copied code is the plugin's, same weights, same thread count (tests/plugin_free.py)
        out = run_without_plugin(script, tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "OK transformers_modules" in out.stdout


    def test_chunked_perplexity_equals_the_models_own_loss(self, model):
        from optimum_subnet.evaluation.perplexity import negative_log_likelihood

        model.config.final_logit_softcapping = 30.0 if "gemma" in self.model_type else None
        ids = torch.randint(3, VOCAB, (3, 24), generator=torch.Generator().manual_seed(5))
        total, count = negative_log_likelihood(model, ids, batch_size=2, token_chunk=7)
        with torch.no_grad():
            logits = model(ids).logits[:, :-1]
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                     ids[:, 1:].reshape(-1), reduction="sum").item()
        assert count == 3 * 23
        # the same logits in other chunks and batches: equal up to summation order
        assert abs(total - expected) <= 1e-5 * abs(expected)

    # ------------------------------------------------------------------------ the whole pipeline
    def test_search_reform_save_evaluate(self, tmp_path, model, text_files):
        """Ours end to end (importance -> search -> reformation -> a saved, reloadable subnet) at 0.7."""
        import json

        from optimum_subnet import SubnetConfig, SubnetOptimizer

        cal, ev = text_files
        config = SubnetConfig.preset("fast", 0.7, device="cpu", data__dataset=str(cal), data__eval_dataset=str(ev),
                                     data__seq_len=32, data__num_samples=8, data__eval_seq_len=32,
                                     data__eval_max_windows=4, search__generations=1, search__population_size=4,
                                     search__num_mutations=2, search__num_crossovers=1, search__top_k=2,
                                     search__fitness_windows=2, search__fitness_seq_len=32, faithfulness__prompts=0)
        out = SubnetOptimizer(model, char_tokenizer(), self.model_type).optimize(config, tmp_path / "subnet")
        report = json.loads((out / "report.json").read_text())
        assert abs(report["subnet"]["inheriting_ratio"] - 0.7) < 0.03
        spec = SubnetSpec.load(out)
        qk_norm = get_adapter(model.config).traits.qk_norm
        if qk_norm:  # one q/k norm weight: every head keeps the same channels
            assert all(len(layer.head_dim_set()) == 1 for layer in spec.layers)
        # the family's default attention space (search.attention_pruning = "auto"): whole for q/k-norm families
        assert report["search"]["space"]["attention_pruning"] == ("none" if qk_norm else "in_head")
        if qk_norm:
            shape = spec.shape  # every kept layer keeps all its KV heads and channels (removed layers: none)
            assert all((layer.num_kv_heads, layer.head_dim) in ((0, 0), (shape.num_key_value_heads, shape.head_dim))
                       for layer in spec.layers)
        loaded = AutoModelForCausalLM.from_pretrained(out)
        assert sum(p.numel() for p in loaded.parameters()) == spec.params()
        # the saved folder evaluates as a user would (``optimum-cli subnet evaluate``), to the report's value
        from optimum_subnet.evaluation.perplexity import evaluate_model

        evaluated = evaluate_model(str(out), dataset=str(ev), seq_lens=(32,), max_windows=4, device="cpu")
        ((name, value),) = report["subnet"]["ppl"].items()
        assert evaluated["ppl"][name] == pytest.approx(value, rel=1e-4)

    @pytest.mark.parametrize("method", ["flap", "wanda-sp", "magnitude", "random"])
    @pytest.mark.parametrize("unit", ["head", "pair"])
    def test_every_baseline_prunes_to_the_budget(self, model, method, unit):
        from optimum_subnet.stages.baselines import get_baseline
        from optimum_subnet.stages.reformation import reform

        adapter = get_adapter(model.config)
        windows = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
        result = get_baseline(method).prune(model, adapter, windows, target_ratio=0.7, batch_size=2, device="cpu",
                                            attention_unit=unit, bias=method == "flap")
        assert abs(result.spec.inheriting_ratio() - 0.7) < 0.05
        subnet = extract_subnet(model, result.spec, adapter)
        result.apply_biases(subnet, adapter)
        before = subnet(windows).logits
        reform(model, subnet, result.spec, adapter, windows, batch_size=2, device="cpu")
        assert torch.isfinite(subnet(windows).logits).all() and before.shape == subnet(windows).logits.shape

    def test_atman_explains_dense_and_subnet(self, model):
        from optimum_subnet.explain import AtManConfig, AtManExplainer

        subnet = extract_subnet(model, self.spec(model))
        tokenizer = char_tokenizer()
        for m in (model, subnet):
            explanation = AtManExplainer(m, tokenizer, AtManConfig(batch_size=4)).explain("The cat sat on", " the")
            scores = [unit.relevance for unit in explanation.units]
            assert len(scores) > 3 and all(torch.isfinite(torch.tensor(scores)))
            assert m.config._attn_implementation != "atman"  # restored afterwards

    @pytest.mark.parametrize("mode", ["multiplicative", "log_bias"])
    def test_atman_attention_is_the_familys_attention(self, model, mode):
        """AtMan's attention function runs the family's own masks (sliding windows: 20 tokens > 12), scale and
        q/k path: no suppression reproduces the stock logits, a suppressed token changes nothing before it."""
        from optimum_subnet.explain import Suppression, atman_attention

        subnet = extract_subnet(model, self.spec(model))
        ids = torch.randint(3, VOCAB, (2, 20), generator=torch.Generator().manual_seed(6))
        factors = torch.zeros(2, 20)
        factors[:, 9] = 0.9
        for m in (model, subnet):
            with torch.no_grad():
                stock = m(ids).logits
                with atman_attention(m):
                    untouched = m(ids, atman=Suppression(torch.zeros(2, 20), mode, query_chunk=6)).logits
                    suppressed = m(ids, atman=Suppression(factors, mode, query_chunk=6)).logits
            assert _close(untouched, stock)  # another kernel and query chunks: equal up to summation order
            assert torch.equal(suppressed[:, :9], untouched[:, :9])  # the same operations, key 9 masked there
            assert not _close(suppressed[:, 9:], untouched[:, 9:], 1e-3)  # and it acts from position 9 on

    # ------------------------------------------------------------------------ deployment
    def test_onnx_export_is_validated_and_generates_like_pytorch(self, tmp_path, model):
        import json

        from optimum_subnet.onnx.export import OnnxExportConfig, export_onnx
        from optimum_subnet.runtime.loading import load_ort_model

        subnet, _ = self.subnet_with_out_biases(model)
        # 20 tokens: longer than the sliding windows (12), so the exported masks are exercised
        out = export_onnx(subnet, tmp_path / "onnx", OnnxExportConfig(validation_sequence_length=20, builder="torch"),
                          tokenizer=char_tokenizer())
        assert json.loads((out / "validation.json").read_text())["unfused"]["passed"]
        ort = load_ort_model(out)  # a torch export: transformers' loop over Optimum's forward
        ids = torch.randint(3, VOCAB, (1, 14), generator=torch.Generator().manual_seed(4))
        generated = ort.generate(ids, max_new_tokens=10, do_sample=False)
        with torch.no_grad():
            logits = subnet(generated).logits[0, 13:-1]
        _assert_greedy(generated[0, 14:], logits)

    def test_benchmark_measures_the_subnet_on_both_backends(self, tmp_path, model):
        """``optimum-cli subnet benchmark``'s measurement on CPU: ONNX Runtime (exported on the fly) and PyTorch."""
        from optimum_subnet.runtime.benchmark import BenchmarkConfig, benchmark

        subnet, spec = self.subnet_with_out_biases(model)
        save_subnet(subnet, char_tokenizer(), spec, tmp_path / "subnet")
        config = BenchmarkConfig(provider="cpu", backends=["onnxruntime", "pytorch"], batch_sizes=[2],
                                 prompt_lengths=[14], new_tokens=2, warmup=0, repeats=1)
        results = benchmark(tmp_path / "subnet", None, config)
        assert {run["backend"] for run in results["runs"]} == {"onnxruntime", "pytorch"}
        assert all(run["prefill_ms"] > 0 and run["decode_tokens_per_s"] > 0 for run in results["runs"])
        assert results["models"]["subnet"]["weight_bytes"] == spec.params() * 4

    def test_attention_fusion_is_validated_or_refused_by_name(self, tmp_path, model):
        import json

        from optimum_subnet.core.errors import SubnetError
        from optimum_subnet.onnx.export import OnnxExportConfig, export_onnx

        adapter = get_adapter(model.config)
        spec = self.spec(model)
        for layer in spec.layers:  # head sizes the kernels take (multiples of 8)
            layer.attention_channels = [list(range(8)) + list(range(spec.shape.head_dim // 2,
                                                                     spec.shape.head_dim // 2 + 8))
                                        if not spec.shape.rotary_dim else c for c in layer.attention_channels]
        spec.validate()
        subnet = extract_subnet(model, spec)
        config = OnnxExportConfig(fuse_attention=True, validation_sequence_length=20, builder="torch")
        refused = adapter.traits.qk_norm or adapter.traits.fused_qkv or spec.shape.rotary_dim
        if refused:
            with pytest.raises(SubnetError, match="not available for"):
                export_onnx(subnet, tmp_path / "onnx", config)
            assert not (tmp_path / "onnx").exists()
            return
        out = export_onnx(subnet, tmp_path / "onnx", config)
        validation = json.loads((out / "validation.json").read_text())
        assert validation["fused"]["passed"]
        assert validation["fusion"]["rotary"]["unfused"] == 0


    @pytest.mark.parametrize("which", ["dense", "subnet"])
    def test_direct_graph_is_validated_and_generates_like_pytorch(self, tmp_path, model, which):
        """The direct builder's graph: the dense model (in-kernel rotary) and a subnet with 4 RoPE pairs per
        head (head size 8; per-KV-head masks where the family allows them: explicit rotary) and a dropped
        layer, validated against PyTorch and generating its greedy tokens."""
        import json

        from optimum_subnet.onnx.export import OnnxExportConfig, export_onnx
        from optimum_subnet.runtime.loading import load_ort_model

        net = model if which == "dense" else extract_subnet(model, self.spec(model, seed=2, widths=(4,)))
        out = export_onnx(net, tmp_path / "onnx", OnnxExportConfig(validation_sequence_length=20),
                          tokenizer=char_tokenizer())
        report = json.loads((out / "validation.json").read_text())
        assert report["builder"] == "direct" and report["direct"]["passed"]
        assert report["direct"]["max_abs_diff"] < 1e-4
        rotary = report["build"]["rotary"]
        partial = get_adapter(model.config).shape(model.config).rotary_dim  # 8 of 16: too narrow for the kernel
        assert rotary["explicit" if which == "subnet" or partial % 16 else "fused"] == report["build"]["layers"]
        ort = load_ort_model(out)
        assert ort.direct_graph is not None
        ids = torch.randint(3, VOCAB, (1, 14), generator=torch.Generator().manual_seed(4))
        generated = ort.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None)
        with torch.no_grad():
            logits = net(generated).logits[0, 13:-1]
        _assert_greedy(generated[0, 14:], logits)


def _assert_greedy(tokens: torch.Tensor, reference_logits: torch.Tensor) -> None:
    """Each generated token is PyTorch's argmax at that position, except where PyTorch's two best
    logits are closer than float noise between the two runtimes (then either choice is right)."""
    top = reference_logits.topk(2, dim=-1)
    margin = top.values[:, 0] - top.values[:, 1]
    noise = 1e-4 * reference_logits.abs().max()
    agree = tokens == top.indices[:, 0]
    assert bool((agree | (margin <= noise)).all()), (tokens.tolist(), top.indices[:, 0].tolist())
    assert int(agree.sum()) >= len(tokens) - 1  # a near-tie may flip one token, not the whole continuation


class TestLlama(FamilyContract):
    model_type = "llama"

    def config(self):
        from transformers import LlamaConfig

        return LlamaConfig(**COMMON, head_dim=16, tie_word_embeddings=True)


class TestMistral(FamilyContract):
    model_type = "mistral"

    def config(self):
        from transformers import MistralConfig

        return MistralConfig(**COMMON, head_dim=16, sliding_window=12, tie_word_embeddings=False)


class TestQwen2(FamilyContract):
    model_type = "qwen2"

    def config(self):
        from transformers import Qwen2Config

        values = dict(COMMON, hidden_size=96)  # Qwen2's head size is hidden / heads: 16
        return Qwen2Config(**values, use_sliding_window=True, sliding_window=12, max_window_layers=2,
                           tie_word_embeddings=True)


class TestQwen3(FamilyContract):
    model_type = "qwen3"

    def config(self):
        from transformers import Qwen3Config

        return Qwen3Config(**COMMON, head_dim=16, tie_word_embeddings=True)


class TestGemma3(FamilyContract):
    model_type = "gemma3_text"

    def config(self):
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**COMMON, head_dim=16, query_pre_attn_scalar=16, sliding_window=12,
                                layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                             "sliding_attention"],
                                rope_theta=1_000_000.0, rope_local_base_freq=10_000.0)


class TestPhi3(FamilyContract):
    model_type = "phi3"

    def config(self):
        from transformers import Phi3Config

        values = dict(COMMON, hidden_size=96)  # Phi-3's head size is hidden / heads: 16
        return Phi3Config(**values, partial_rotary_factor=0.5, sliding_window=None, tie_word_embeddings=False)
