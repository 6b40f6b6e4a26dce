"""benchmarks/quality.py: every ``ours@VARIANT`` is a valid config that differs from plain ``ours``
in the setting it names (a typo in an override key or value fails here, not hours into a run)."""

from dataclasses import asdict

import pytest

from optimum_subnet import SubnetConfig
from tests.benchmark_scripts import load_benchmark

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("variant", ["mlp", "pair", "layer"])
def test_each_variant_of_ours_changes_the_setting_it_names(variant):
    overrides = load_benchmark("quality").OURS_VARIANTS[variant]
    plain = asdict(SubnetConfig.preset("fast", 0.5, method="ours"))
    config = asdict(SubnetConfig.preset("fast", 0.5, method="ours", **overrides))
    for key, value in overrides.items():
        section, field = key.split("__")
        assert config[section][field] == value
        assert plain[section][field] != value


def test_an_unknown_variant_of_ours_is_refused_before_any_work():
    with pytest.raises(SystemExit, match="unknown variant of ours: ours@heads"):
        load_benchmark("quality").main(["--methods", "ours@heads", "--output", "/nonexistent/never-written"])


def _zero_shot(acc, stderr):
    return {"tasks": {"boolq": {"acc": acc, "acc_stderr": stderr, "documents": 3270}}, "average": acc,
            "average_stderr": stderr, "average_metric": {"boolq": "acc"}, "harness": "lm-eval 0.4.13",
            "data": "test"}


def test_the_zero_shot_table_shows_each_accuracy_with_its_standard_error():
    quality = load_benchmark("quality")
    entries = [{"method": "dense", "target_ratio": 1.0, "inheriting_ratio": 1.0, "ppl": {"wiki@512": 20.0},
                "zero_shot": _zero_shot(0.62, 0.0083)},
               {"method": "flap", "target_ratio": 0.5, "inheriting_ratio": 0.5, "block_ratio": 0.5,
                "ppl": {"wiki@512": 90.0}, "zero_shot": _zero_shot(0.5, 0.0087)}]
    settings = {"model": "smollm2-135m", "preset": "fast", "seed": 0, "overrides": {}}
    text = quality.markdown({"settings": settings, "windows": {"wiki@512": [2, 512]}, "entries": entries})
    assert "| dense | 1.0 | 62.0 ± 0.8 | 62.00 ± 0.83 |" in text
    assert "| flap | 0.5 | 50.0 ± 0.9 | 50.00 ± 0.87 |" in text
    assert "standard error" in text
