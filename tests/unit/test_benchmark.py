"""``optimum-cli subnet benchmark`` end to end on CPU with tiny models (what is measured, not how fast)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from conftest import char_tokenizer, tiny_llama
from optimum_subnet.families import get_adapter
from optimum_subnet.runtime.benchmark import BenchmarkConfig, ratios
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.stages.surgery import save_subnet
from optimum_subnet.core.spec import SubnetSpec
from optimum_subnet.stages.surgery import extract_subnet

pytestmark = pytest.mark.unit


def _cli(*args):
    env = dict(os.environ, OPTIMUM_SUBNET_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "optimum.commands.optimum_cli", *args], capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    model = tiny_llama()
    dense = root / "dense"
    model.save_pretrained(dense, safe_serialization=True)
    char_tokenizer().save_pretrained(dense)
    spec = SubnetSpec.dense(get_adapter(model.config).shape(model.config))
    for layer in spec.layers:  # half the MLP, 12 of 16 channels per head, biases on W_O / W_down
        layer.mlp_channels = list(range(0, 128, 2))
        layer.attention_channels = [[0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]] * 2
    spec = SubnetSpec(shape=spec.shape, layers=[dataclasses.replace(layer, attention_out_bias=True, mlp_out_bias=True)
                                                 for layer in spec.layers]).validate()
    subnet = root / "subnet"
    save_subnet(extract_subnet(model, spec), char_tokenizer(), spec, subnet)
    return dense, subnet, spec


def test_benchmark_measures_both_models_and_backends_in_one_run(tmp_path, folders):
    dense, subnet, spec = folders
    out = _cli("subnet", "benchmark", "--model", str(subnet), "--baseline", str(dense), "--provider", "cpu",
               "--batch-sizes", "1,2", "--prompt-lengths", "8", "--new-tokens", "3", "--warmup", "0", "--repeats", "2",
               "--output", str(tmp_path / "bench"))
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    measured = {(r["model"], r["backend"], r["batch"]) for r in results["runs"]}
    assert measured == {(m, b, n) for m in ("dense", "subnet") for b in ("onnxruntime", "pytorch") for n in (1, 2)}
    for run in results["runs"]:
        assert run["prefill_ms"] > 0 and run["decode_tokens_per_s"] > 0 and len(run["decode_s_all"]) == 2
    models = results["models"]
    assert models["subnet"]["weight_bytes"] == spec.params() * 4
    assert models["dense"]["weight_bytes"] == spec.shape.dense_params() * 4
    ideal = models["dense"]["weight_bytes"] / models["subnet"]["weight_bytes"]
    same = [r for r in results["ratios"] if r["backend"] == r["reference_backend"]]
    assert len(same) == 4 and all(r["ideal_decode_speedup"] == pytest.approx(ideal) for r in same)
    # the ORT subnet is also compared with the dense model in PyTorch (what a user would otherwise run)
    assert any(r["backend"] == "onnxruntime" and r["reference_backend"] == "pytorch" for r in results["ratios"])
    for name in ("benchmark.md", "benchmark.png"):
        assert (tmp_path / "bench" / name).is_file()
    assert "subnet/dense" in out.stdout  # the short table comes last


def test_static_cache_backend_measures_through_the_static_decoder(folders):
    from optimum_subnet.runtime.benchmark import benchmark

    dense, subnet, _ = folders
    config = BenchmarkConfig(provider="cpu", backends=["pytorch-static"], batch_sizes=[2], prompt_lengths=[8],
                             new_tokens=3, warmup=0, repeats=2)
    results = benchmark(subnet, dense, config)
    assert {(r["model"], r["backend"]) for r in results["runs"]} == {("dense", "pytorch-static"),
                                                                       ("subnet", "pytorch-static")}
    for run in results["runs"]:
        assert run["prefill_ms"] > 0 and run["decode_tokens_per_s"] > 0 and run["cuda_graph"] is False
    assert [r["reference_backend"] for r in results["ratios"]] == ["pytorch-static"]


def test_existing_results_and_bad_options_are_refused(tmp_path, folders):
    dense, subnet, _ = folders
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "benchmark.json").write_text("{}")
    out = _cli("subnet", "benchmark", "--model", str(subnet), "--output", str(tmp_path / "bench"))
    assert out.returncode == 2 and "--overwrite" in out.stderr
    out = _cli("subnet", "benchmark", "--model", str(subnet), "--provider", "cpu", "--dtype", "fp16")
    assert out.returncode == 2 and "fp16 runs on CUDA only" in out.stderr
    out = _cli("subnet", "benchmark", "--model", str(tmp_path / "missing"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    with pytest.raises(SubnetError, match="backends"):
        BenchmarkConfig(backends=["tensorrt"]).validate()


def test_the_baseline_may_be_a_built_in_alias(monkeypatch, folders):
    import optimum_subnet.loading as loading
    from optimum_subnet.runtime.benchmark import benchmark

    dense, subnet, _ = folders
    monkeypatch.setitem(loading.BUILTIN_MODELS, "tiny-alias", None)
    monkeypatch.setattr(loading, "builtin_model_dir", lambda alias: dense)  # the alias's cached folder
    config = BenchmarkConfig(provider="cpu", backends=["pytorch"], batch_sizes=[1], prompt_lengths=[8], new_tokens=2,
                             warmup=0, repeats=1)
    results = benchmark(subnet, "tiny-alias", config)
    assert results["models"]["dense"]["path"] == str(dense)
    assert {r["model"] for r in results["runs"]} == {"dense", "subnet"}


def test_ratios_come_from_matching_runs():
    runs = [{"model": m, "backend": "pytorch", "batch": 1, "prompt": 8, "prefill_ms": p, "decode_tokens_per_s": d}
            for m, p, d in (("dense", 10.0, 100.0), ("subnet", 5.0, 150.0))]
    result = ratios({"runs": runs, "models": {"dense": {"weight_bytes": 400}, "subnet": {"weight_bytes": 200}}})
    assert result == [{"backend": "pytorch", "reference_backend": "pytorch", "batch": 1, "prompt": 8,
                       "prefill_speedup": 2.0, "decode_speedup": 1.5, "ideal_decode_speedup": 2.0,
                       "decode_fraction_of_ideal": 0.75}]


@pytest.mark.gpu
def test_static_cache_backend_replays_cuda_graphs_on_gpu(folders):
    from optimum_subnet.runtime.benchmark import benchmark

    dense, subnet, _ = folders
    config = BenchmarkConfig(provider="cuda", backends=["pytorch-static", "pytorch"], batch_sizes=[1],
                             prompt_lengths=[16], new_tokens=8, warmup=1, repeats=2)
    results = benchmark(subnet, dense, config)
    static = [r for r in results["runs"] if r["backend"] == "pytorch-static"]
    assert len(static) == 2 and all(r["cuda_graph"] for r in static)
    assert results["models"]["subnet"]["pytorch-static"]["peak_memory_bytes"] > 0
