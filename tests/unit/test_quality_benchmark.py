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
