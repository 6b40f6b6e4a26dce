"""benchmarks/calibration_size_probe.py: the table puts each subnet's N side by side, with the paired Δ where
the default N was measured."""

import pytest

from tests.benchmark_scripts import load_benchmark

pytestmark = pytest.mark.unit


def test_table_shows_each_calibration_size_and_the_paired_difference():
    script = load_benchmark("calibration_size_probe")
    settings = {"ratio": 0.5, "seed": 0, "seq_len": 256, "eval_windows": 2, "default_samples": 32, "argv": []}
    rows = [{"subnet": "a", "samples": 32, "ppl": 500.0, "seconds": 120.0, "delta": None},
            {"subnet": "a", "samples": 128, "ppl": 400.0, "seconds": 290.0,
             "delta": {"mean": -0.223, "se": 0.05}},
            {"subnet": "b", "samples": 128, "ppl": 300.0, "seconds": 280.0, "delta": None}]
    text = script.markdown({"settings": settings, "rows": rows, "notes": ["measured"]})
    assert "| subnet | N = 32 | N = 128 |" in text
    assert "| a | 500.00, 120 s | 400.00 (Δ -0.223 ± 0.050), 290 s |" in text
    assert "| b | - | 300.00, 280 s |" in text
    assert "* measured" in text
