"""The GPU benchmark scripts of large models run (tiny shapes, on the CPU): they measure nothing here, but a
broken script would cost a GPU session. ``distributed_search.py`` needs torchrun: its code paths are those
of ``tests/unit/test_distributed_search.py`` (run by hand: see its docstring)."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import BENCHMARKS, load_benchmark

pytestmark = pytest.mark.unit


TINY = ["--shape", "tiny", "--device", "cpu", "--num-samples", "4", "--seq-len", "32", "--fitness-seq-len", "32",
        "--population", "4", "--eval-seq-len", "32", "--forward-repeats", "1",
        "--ratio", "0.6"]  # tiny's 16-channel heads keep multiples of 4 channels: 0.5 is out of reach


def test_offload_benchmark_resident_against_offloaded(tmp_path, capsys):
    load_benchmark("offload").main([*TINY, "--output", str(tmp_path / "tiny")])
    results = json.loads((tmp_path / "tiny.json").read_text())
    resident, offloaded = results["phases"]
    assert resident["plan"]["plan"] == "resident" and offloaded["plan"]["plan"] == "offload"
    assert offloaded["plan"]["streaming"]["peak_resident_blocks"] <= 2
    assert resident["spec"] == offloaded["spec"] and resident["ppl"] == offloaded["ppl"]
    assert "Same searched spec in every phase: yes." in capsys.readouterr().out


def test_offload_benchmark_memory_mapped(tmp_path):
    load_benchmark("offload").main([*TINY, "--layers", "3", "--ratio", "0.7", "--phases", "offload", "--generations", "0",
                            "--memory-map", str(tmp_path / "weights"), "--output", str(tmp_path / "mapped")])
    results = json.loads((tmp_path / "mapped.json").read_text())
    assert results["memory_map"]["files"] == 4 and results["layers"] == 3
    assert results["phases"][0]["plan"]["plan"] == "offload"
    assert sorted(p.name for p in (tmp_path / "weights").iterdir())[-1] == "config.json"


def _script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their neighbours (shapes, reference_engine)
    return load_benchmark(name)


def test_search_cost_times_built_and_masked_screening(tmp_path, monkeypatch):
    """``owed.sh screening``'s command on the tiny shape: both screening methods measured in one run."""
    _script("search_cost", monkeypatch).main(["--shape", "tiny", "--device", "cpu", "--dtype", "float32", "--ratio", "0.6",
                                 "--population", "4", "--generations", "2", "--fitness-windows", "2",
                                 "--fitness-seq-len", "32", "--screening-keep", "0.5", "--screening-seq-len", "16",
                                 "--screening-methods", "subnet,masked", "--skip-decode", "--reform-layers", "0",
                                 "--output", str(tmp_path / "sc")])
    results = json.loads((tmp_path / "sc.json").read_text())
    built, masked = results["search"], results["search_masked"]
    assert built["screening_method"] == "subnet" and masked["screening_method"] == "masked"
    assert masked["subnets_reused"] == 0 and built["screening"]["screenings"] > 0
    assert "under channel masks" in (tmp_path / "sc.md").read_text()
