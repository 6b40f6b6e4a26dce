"""benchmarks/primal_gpu.py: its plain-PyTorch layers compute what the package's do (so the GPU numbers
are about the shipped computation), and the script runs end to end in its CPU smoke mode."""

import json

import pytest
import torch

from optimum_subnet.primal.modeling_primal import PrimalAttention, PrimalStateLayer
from tests.benchmark_scripts import load_benchmark
from tests.numerics import assert_close_to_scale

pytestmark = pytest.mark.unit


def test_the_benchmarks_primal_layer_is_the_packages_primal_attention():
    bench = load_benchmark("primal_gpu")
    torch.manual_seed(0)
    layer = bench.PrimalLayer(48, 6, 2, 16, 5).eval()
    reference = PrimalAttention(48, 6, 2, 16, 5, layer_idx=0).eval()
    with torch.no_grad():
        for name in ("q_proj", "k_proj", "out_proj"):
            getattr(reference, name).load_state_dict(getattr(layer, name).state_dict())
        reference.w_e.copy_(layer.w_e)
        reference.w_r.copy_(layer.w_r)
        x = torch.randn(2, 11, 48)
        out, state = layer.prefill(x[:, :7])
        expected_state = PrimalStateLayer()
        expected = reference.scores(x[:, :7], state=expected_state)
        assert_close_to_scale(out, reference.out_proj(reference.features(*expected)), 1e-5)
        assert_close_to_scale(state[0], expected_state.query_sum, 1e-6)
        full = reference(x)[0]
        steps = [layer.decode(x[:, t:t + 1], state) for t in range(7, 11)]
    # incremental steps of the benchmark's layer = the package's full forward at those positions
    assert_close_to_scale(torch.cat(steps, dim=1), full[:, 7:], 1e-5)


def test_the_benchmarks_cached_sdpa_decode_equals_its_causal_prefill():
    bench = load_benchmark("primal_gpu")
    torch.manual_seed(0)
    attention = bench.SdpaAttention(48, 6, 2, 16).eval()
    x = torch.randn(2, 10, 48)
    with torch.no_grad():
        full, (keys, values) = attention.prefill(x)
        _, (k6, v6) = attention.prefill(x[:, :6])
        cache = tuple(torch.zeros(2, 2, 10, 16) for _ in range(2))
        cache[0][:, :, :6], cache[1][:, :, :6] = k6, v6
        steps = [attention.decode(x[:, t:t + 1], cache, t) for t in range(6, 10)]
    assert_close_to_scale(torch.cat(steps, dim=1), full[:, 6:], 1e-5)
    assert_close_to_scale(cache[0], keys, 1e-6)


def test_cpu_smoke_run_writes_every_row_and_prints_the_table_last(tmp_path, capsys):
    bench = load_benchmark("primal_gpu")
    assert bench.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "primal_gpu.json").read_text())
    assert [r["seq_len"] for r in data["layer"]] == [64, 128]
    for row in data["layer"]:
        assert row["sdpa_prefill_ms"] > 0 and row["primal_decode_ms_per_token"] > 0
        # the KV cache of an N-token context against the fixed-size state (batch 1, float32)
        assert row["sdpa_kv_cache_bytes"] == 2 * 2 * row["seq_len"] * 16 * 4
        assert row["primal_state_bytes"] == (4 + 2) * 16 * 4
    model = {r["primal_layers"]: r for r in data["model"]}
    assert sorted(model) == [0, 2, 4]
    assert model[0]["kv_cache_bytes"] == 2 * model[2]["kv_cache_bytes"] and model[4]["kv_cache_bytes"] == 0
    output = capsys.readouterr().out
    assert output.index("| N |") < output.index("| K |") < output.index("JSON:")


def test_cpu_smoke_run_of_the_shipped_code_part(tmp_path, capsys):
    bench = load_benchmark("primal_gpu")
    assert bench.main(["--device", "cpu", "--tiny", "--package", "--out", str(tmp_path)]) == 0
    package = json.loads((tmp_path / "primal_gpu.json").read_text())["package"]
    assert "error" not in package, package
    rows = {r["primal_layers"]: r for r in package["rows"]}
    assert sorted(rows) == [0, 2]
    # 4 layers, batch 2, 2 KV heads / 4 heads of size 16, float32: KV of 48 tokens per layer against the state
    assert rows[0]["kv_cache_bytes"] == 4 * 2 * 2 * 2 * 48 * 16 * 4 and rows[0]["state_bytes"] == 0
    assert rows[2]["kv_cache_bytes"] == 2 * 2 * 2 * 2 * 48 * 16 * 4
    assert rows[2]["state_bytes"] == 2 * 2 * (4 + 2) * 16 * 4
    assert all(r["decode_ms_per_token"] > 0 for r in rows.values())
    # the converted model's incremental decode equals its full forward
    for check in package["incremental_check"]:
        assert check["max_diff_relative_to_max_logit"] < 1e-4
    output = capsys.readouterr().out
    assert output.index("| K | N |") < output.index("Incremental step") < output.index("JSON:")
