"""benchmarks/atman_memory.py end to end in its CPU mode (the GPU run uses the same code paths)."""

import json

import pytest

from tests.benchmark_scripts import load_benchmark

pytestmark = pytest.mark.unit


def test_cpu_mode_measures_every_method(tmp_path):
    bench = load_benchmark("atman_memory")
    assert bench.main(["--device", "cpu", "--model", "tiny", "--lengths", "20", "28", "--target-tokens", "4",
                       "--repeats", "1", "--atman-batches", "2", "--batch-size", "4", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "atman_memory.json").read_text())
    assert {(p["method"], p["length"]) for p in results["points"]} == {
        (m, n) for m in bench.DEFAULT_METHODS for n in (20, 28)}
    for p in results["points"]:
        assert p["status"] == "ok" and p["seconds"] > 0
        assert p["projected"] == p["method"].startswith("atman")
        if p["projected"]:  # 17 (25) passes in batches of 4 = 5 (7) batches, 2 of them timed
            batches = {20: 5, 28: 7}[p["length"]]
            assert p["seconds"] == pytest.approx(p["seconds_measured"] * batches / 2)
    assert max(results["sanity"].values()) < 1e-5  # f = 0 reproduces the stock logits
    assert (tmp_path / "atman_memory.md").read_text().count("| 28 |") == 2
    assert (tmp_path / "atman_memory.png").is_file()
