"""Every way of building a SubnetConfig gives a JSON-serializable config that round-trips."""

import json

import pytest

from optimum_subnet import SubnetConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("build", [
    lambda: SubnetConfig(),
    lambda: SubnetConfig.from_dict({}),
    lambda: SubnetConfig.from_dict({"search": {"generations": 1}, "data": {"seq_len": 64}}),
    lambda: SubnetConfig.preset("fast", 0.5).replace(seed=3),
    lambda: SubnetConfig.preset("fast", 0.5, search__attention_pruning="none"),
])
def test_config_round_trips_through_json(build):
    config = build()
    assert isinstance(config.preset, str)
    assert SubnetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
