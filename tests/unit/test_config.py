import json

import pytest

from optimum_subnet import SubnetConfig
from optimum_subnet.core.errors import SubnetError

pytestmark = pytest.mark.unit


def test_round_trip(tmp_path):
    config = SubnetConfig.preset("fast", 0.7, seed=3, search__generations=2, data__dataset="x.txt")
    path = config.save_pretrained(tmp_path)
    assert json.loads(path.read_text())["search"]["generations"] == 2
    loaded = SubnetConfig.from_pretrained(tmp_path)
    assert loaded == config and loaded.seed == 3 and loaded.data.dataset == "x.txt"


def test_presets():
    paper = SubnetConfig.preset("paper", 0.5)
    assert (paper.search.population_size, paper.search.generations, paper.search.top_k) == (100, 50, 10)
    assert (paper.data.num_samples, paper.data.seq_len) == (128, 2048)
    fast = SubnetConfig.preset("fast", 0.5)
    assert fast.search.population_size < 100 and fast.data.seq_len < 2048
    assert SubnetConfig.preset("auto", 0.5).preset in ("fast", "paper")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_ratio": 0}, "target ratio"),
        ({"target_ratio": 1.2}, "target ratio"),
        ({"target_ratio": -0.5}, "target ratio"),
        ({"search__top_k": 500}, "top_k"),
        ({"search__depth_search": "maybe"}, "depth_search"),
        ({"reformation__method": "magic"}, "reformation method"),
        ({"data__num_samples": 0}, "at least one sample"),
        ({"data__eval_max_windows": 0}, "eval_max_windows must be >= 1"),
        ({"data__eval_max_windows": -1}, "eval_max_windows must be >= 1"),
        ({"data__batch_size": 0}, "batch sizes must be >= 1"),
        ({"search__num_mutations": 90, "search__num_crossovers": 30}, "must not exceed"),
    ],
)
def test_invalid_values_are_rejected(kwargs, message):
    with pytest.raises(SubnetError, match=message):
        SubnetConfig.preset("paper", 0.8).replace(**kwargs) if "target_ratio" not in kwargs else SubnetConfig(**kwargs)


def test_config_json_that_is_not_an_object(tmp_path):
    (tmp_path / "subnet_optimization.json").write_text("[0.8]")
    with pytest.raises(SubnetError, match="is not a subnet configuration"):
        SubnetConfig.from_pretrained(tmp_path)
    with pytest.raises(SubnetError, match="a subnet configuration is a JSON object, got list"):
        SubnetConfig.from_dict([0.8])


def test_unknown_option_in_json(tmp_path):
    (tmp_path / "subnet_optimization.json").write_text(json.dumps({"target_ratio": 0.8, "search": {"bogus": 1}}))
    with pytest.raises(SubnetError, match="unknown search option"):
        SubnetConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("config_cls", ["subnet", "primal"])
def test_both_pass_configs_share_the_json_rules(config_cls, tmp_path):
    from optimum_subnet.primal.config import PrimalConfig

    cls, section, field, what = {
        "subnet": (SubnetConfig, "search", "generations", "subnet configuration"),
        "primal": (PrimalConfig, "fine_tune", "steps", "Primal-Attention configuration")}[config_cls]
    config = cls()
    assert cls.from_pretrained(config.save_pretrained(tmp_path)) == config
    (tmp_path / cls.CONFIG_NAME).write_text("[1]")
    with pytest.raises(SubnetError, match=f"is not a {what} \\(a JSON object\\), got a JSON list"):
        cls.from_pretrained(tmp_path)
    with pytest.raises(SubnetError, match=f"invalid {what}: {section} must be a JSON object, got list"):
        cls.from_dict({section: [1]})
    # a section given as a dict updates only the fields it names
    replaced = config.replace(**{section: {field: 7}})
    assert replaced.to_dict()[section] == {**config.to_dict()[section], field: 7}
    assert replaced.to_dict() == config.replace(**{f"{section}__{field}": 7}).to_dict()
