"""Structured-pruning baselines: exact scores, FLAP's bias compensation, budgets, the shared pass."""

import json

import pytest
import torch

from optimum_subnet.families import get_adapter
from optimum_subnet.algorithms import structured
from optimum_subnet.stages.baselines import BASELINES, UnitLayout, get_baseline
from optimum_subnet.calibration import MomentAccumulator
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.spec import SubnetSpec
from optimum_subnet.stages.surgery import extract_subnet, masked_copy

pytestmark = pytest.mark.unit


def _random(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------- scores, exactly
def test_wanda_sp_score_equals_direct_computation():
    w, x = _random(0, 5, 7), _random(1, 40, 7)  # W: out x in, X: tokens x in
    moments = MomentAccumulator()
    moments.add(x[:25])
    moments.add(x[25:])
    got = structured.wanda_sp_scores(w, moments.mean_square)
    for j in range(7):
        norm = sum(float(x[t, j]) ** 2 for t in range(40)) ** 0.5 / 40 ** 0.5  # RMS of channel j
        expected = sum(abs(float(w[i, j])) * norm for i in range(5)) / 5
        assert float(got[j]) == pytest.approx(expected, rel=1e-12)


def test_flap_fluctuation_score_equals_direct_computation():
    w, x = _random(2, 6, 4), _random(3, 30, 4) * 3 + 1
    moments = MomentAccumulator()
    for chunk in x.split(7):
        moments.add(chunk)
    got = structured.fluctuation_scores(w, moments.variance)
    for j in range(4):
        column = [float(x[t, j]) for t in range(30)]
        mean = sum(column) / 30
        variance = sum((v - mean) ** 2 for v in column) / 29
        expected = variance * sum(float(w[i, j]) ** 2 for i in range(6))
        assert float(got[j]) == pytest.approx(expected, rel=1e-10)
    assert torch.allclose(moments.mean, x.mean(0))


def test_magnitude_and_standardization_are_exact():
    w = _random(4, 3, 5)
    got = structured.magnitude_scores(w)
    for j in range(5):
        assert float(got[j]) == pytest.approx(sum(float(w[i, j]) ** 2 for i in range(3)) ** 0.5)
    s = _random(5, 2, 9)
    z = structured.standardize(s)
    for row, zrow in zip(s.tolist(), z.tolist()):
        mean = sum(row) / 9
        std = (sum((v - mean) ** 2 for v in row) / 8) ** 0.5
        assert zrow == pytest.approx([(v - mean) / std for v in row])
    assert torch.equal(structured.standardize(torch.ones(1, 4)), torch.zeros(1, 4))  # no NaN for a constant row


def test_attention_grouping_follows_gqa_and_rope_pairs():
    # 2 KV heads, 3 query heads each, head_dim 4: W_O input channel h*4 + c belongs to KV head h // 3
    scores = torch.arange(24, dtype=torch.float64)
    kv = structured.group_attention_channels(scores, num_kv_heads=2, group_size=3, head_dim=4, reduce="sum")
    assert kv[0].tolist() == [0 + 4 + 8, 1 + 5 + 9, 2 + 6 + 10, 3 + 7 + 11]
    assert kv[1, 0] == 12 + 16 + 20
    pairs = structured.pair_scores(kv)  # pairs (0, 2) and (1, 3)
    assert pairs[0].tolist() == [kv[0, 0] + kv[0, 2], kv[0, 1] + kv[0, 3]]
    assert structured.head_scores(kv).tolist() == [float(kv[0].sum()), float(kv[1].sum())]


# ------------------------------------------------------------------ FLAP bias compensation
def test_flap_bias_keeps_the_mean_output_on_calibration_data():
    w, x = _random(6, 8, 10), _random(7, 200, 10) + 2.0
    kept = torch.tensor([0, 2, 3, 7, 9])
    moments = MomentAccumulator()
    moments.add(x)
    bias = structured.bias_compensation(w, moments.mean, kept)
    dense_mean = (x @ w.T).mean(0)
    pruned_mean = (x[:, kept] @ w[:, kept].T + bias).mean(0)
    assert torch.allclose(pruned_mean, dense_mean, atol=1e-10)
    uncompensated = (x[:, kept] @ w[:, kept].T).mean(0)
    assert not torch.allclose(uncompensated, dense_mean, atol=1e-3)


def test_flap_subnet_keeps_each_layers_mean_output(model, tokenizer):
    """End to end on a tiny model: with FLAP's bias, every pruned W_O / W_down reproduces the dense
    layer's mean output on the calibration inputs it was computed from (dense statistics)."""
    from optimum_subnet.calibration import BlockwiseRunner, record_inputs

    adapter = get_adapter(model.config)
    windows = torch.randint(3, 90, (6, 32), generator=torch.Generator().manual_seed(0))
    result = get_baseline("flap").prune(model, adapter, windows, target_ratio=0.7, batch_size=3, device="cpu",
                                        attention_unit="pair")
    subnet = extract_subnet(model, result.spec, adapter)
    result.apply_biases(subnet, adapter)
    runner = BlockwiseRunner(model, adapter, windows, 3, "cpu")
    states = runner.initial_states()
    for index, layer in enumerate(adapter.decoder_layers(model)):
        inputs = {"attn_out": [], "mlp_out": []}
        with record_inputs({s: adapter.site_modules(layer)[s] for s in inputs}, lambda s, x: inputs[s].append(x)):
            states = runner.run_layer(layer, states)
        sub_layer = adapter.decoder_layers(subnet)[index]
        kept = adapter.kept_rows(result.spec.layers[index], result.spec.shape)
        for site, role, sub_role in (("attn_out", "o", "o"), ("mlp_out", "down", "down")):
            x = torch.cat([t.reshape(-1, t.shape[-1]) for t in inputs[site]])
            dense = adapter.linears(layer)[role](x).mean(0)
            pruned = adapter.linears(sub_layer)[sub_role](x[:, kept[role]]).mean(0)
            assert torch.allclose(pruned, dense, atol=1e-5), (index, site)


# ------------------------------------------------------------------------ budget / layout
@pytest.mark.parametrize("unit", ["head", "pair"])
@pytest.mark.parametrize("ratio", [0.9, 0.7, 0.55])
def test_uniform_and_global_allocations_meet_the_budget(model, unit, ratio):
    shape = get_adapter(model.config).shape(model.config)
    layout = UnitLayout(shape, unit, head_dim_multiple=4, mlp_multiple=8)
    uniform = layout.uniform(ratio)
    assert len(set(uniform.attention)) == 1  # the same structure in every layer
    assert max(uniform.mlp) - min(uniform.mlp) <= layout.mlp_step
    ratio_of = lambda a: (shape.embedding_params() + layout.block_params(a)) / shape.dense_params()  # noqa: E731
    # tiny model: one MLP step of one layer is 0.4% of it; SmolLM2's steps are ~0.1%
    assert abs(ratio_of(uniform) - ratio) < 0.012
    scores = [torch.rand(layout.attention_universe, generator=torch.Generator().manual_seed(i))
              for i in range(shape.num_layers)]
    mlp = [torch.rand(shape.intermediate_size, generator=torch.Generator().manual_seed(10 + i))
           for i in range(shape.num_layers)]
    allocation, threshold = layout.global_threshold(scores, mlp, ratio)
    assert abs(ratio_of(allocation) - ratio) < 0.03
    assert all(a >= 1 for a in allocation.attention) and all(m >= layout.mlp_step for m in allocation.mlp)


def test_unreachable_ratio_is_refused(model):
    shape = get_adapter(model.config).shape(model.config)
    with pytest.raises(SubnetError, match="unreachable"):
        UnitLayout(shape, "head").uniform(0.05)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("unit", ["head", "pair"])
def test_every_baseline_gives_a_valid_spec_that_runs_like_the_masked_model(model, name, unit):
    adapter = get_adapter(model.config)
    windows = torch.randint(3, 90, (4, 24), generator=torch.Generator().manual_seed(1))
    bias = False  # masked_copy has no bias terms: compare the structure alone
    result = get_baseline(name).prune(model, adapter, windows, target_ratio=0.7, batch_size=2, device="cpu",
                                      attention_unit=unit, bias=bias, head_dim_multiple=4, mlp_multiple=8)
    spec = SubnetSpec.from_dict(json.loads(json.dumps(result.spec.to_dict())))  # JSON round trip, validated
    assert abs(spec.inheriting_ratio() - 0.7) < 0.02
    if unit == "pair":
        assert all(layer.num_kv_heads == spec.shape.num_key_value_heads for layer in spec.layers)
    else:
        assert all(layer.head_dim == spec.shape.head_dim for layer in spec.layers)
    subnet = extract_subnet(model, spec, adapter)
    ids = windows[:2]
    torch.testing.assert_close(subnet(ids).logits, masked_copy(model, spec, adapter)(ids).logits, atol=1e-5,
                               rtol=1e-4)


def test_scores_differ_between_methods_and_random_depends_on_seed(model):
    adapter = get_adapter(model.config)
    windows = torch.randint(3, 90, (4, 24), generator=torch.Generator().manual_seed(2))
    keys = {}
    for name in ("flap", "wanda-sp", "magnitude"):
        keys[name] = get_baseline(name).prune(model, adapter, windows, target_ratio=0.6, batch_size=2, device="cpu",
                                              attention_unit="pair", bias=False).spec.key()
    assert len(set(keys.values())) == 3
    a = get_baseline("random").prune(model, adapter, None, target_ratio=0.6, batch_size=2, device="cpu", seed=0)
    b = get_baseline("random").prune(model, adapter, None, target_ratio=0.6, batch_size=2, device="cpu", seed=1)
    assert a.spec.key() != b.spec.key()


def test_wanda_sp_statistics_are_sequential(model):
    """Wanda-sp's statistics come from the already-pruned upstream layers: with a spec from dense
    statistics at layer 0 equal, later layers' scores differ from a dense-statistics run."""
    adapter = get_adapter(model.config)
    windows = torch.randint(3, 90, (4, 24), generator=torch.Generator().manual_seed(3))
    method = get_baseline("wanda-sp")
    sequential = method.prune(model, adapter, windows, target_ratio=0.55, batch_size=2, device="cpu",
                              attention_unit="pair")
    assert sequential.details["statistics"] == "sequential"
    dense = method.prune(model, adapter, windows, target_ratio=0.55, batch_size=2, device="cpu",
                         attention_unit="pair", structure="global")
    assert dense.details["statistics"] == "dense"


# --------------------------------------------------------------------- the pass and CLI
def test_optimizer_runs_a_baseline_and_saves_the_same_kind_of_folder(tmp_path, model, tokenizer, text_files):
    from optimum_subnet import SubnetConfig, SubnetOptimizer

    cal, ev = text_files
    config = SubnetConfig.preset("fast", 0.7, method="flap", device="cpu", data__dataset=str(cal),
                                 data__eval_dataset=str(ev), data__seq_len=32, data__num_samples=8,
                                 data__eval_seq_len=32, data__eval_max_windows=4, faithfulness__prompts=0,
                                 baseline__attention_unit="pair")
    assert config.reformation.method == "none" and config.uses_bias_compensation
    out = SubnetOptimizer(model, tokenizer).optimize(config, tmp_path / "flap")
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "flap" and report["baseline"]["bias_compensation"] is True
    assert abs(report["subnet"]["inheriting_ratio"] - 0.7) < 0.02
    # exact: without a reformation the final perplexities are the searched ones (nothing recomputed)
    assert report["subnet"]["ppl"] == report["searched"]["ppl"]
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.model.layers[0].self_attn.o_proj.bias is not None
    assert "pruned (flap)" in (out / "report.md").read_text()


def test_bias_with_reformation_is_refused():
    from optimum_subnet import SubnetConfig
    from optimum_subnet.core.config import BaselineConfig

    with pytest.raises(SubnetError, match="bias compensation and reformation"):
        SubnetConfig(method="flap", baseline=BaselineConfig(bias_compensation=True))
    config = SubnetConfig(method="flap")  # reformation on: it replaces FLAP's bias
    assert not config.uses_bias_compensation
