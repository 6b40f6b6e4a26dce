"""benchmarks/quality.py: every ``ours@VARIANT`` is a valid config that differs from plain ``ours``
in the setting it names (a typo in an override key or value fails here, not hours into a run)."""

import importlib.util
from dataclasses import asdict
from pathlib import Path

import pytest

from optimum_subnet import SubnetConfig

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


def _load():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", ["mlp", "pair", "layer"])
def test_each_variant_of_ours_changes_the_setting_it_names(variant):
    overrides = _load().OURS_VARIANTS[variant]
    plain = asdict(SubnetConfig.preset("fast", 0.5, method="ours"))
    config = asdict(SubnetConfig.preset("fast", 0.5, method="ours", **overrides))
    for key, value in overrides.items():
        section, field = key.split("__")
        assert config[section][field] == value
        assert plain[section][field] != value


def test_an_unknown_variant_of_ours_is_refused_before_any_work():
    with pytest.raises(SystemExit, match="unknown variant of ours: ours@heads"):
        _load().main(["--methods", "ours@heads", "--output", "/nonexistent/never-written"])
