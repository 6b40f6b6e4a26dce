import copy
import json

import pytest

from optimum_subnet.families import get_adapter
from optimum_subnet.core.errors import InvalidSpecError, UnsupportedModelError
from optimum_subnet.core.spec import SubnetSpec
from optimum_subnet.stages.surgery import extract_subnet
from tests.conftest import tiny_llama, tiny_llama_config

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("tied", [True, False])
def test_dense_parameter_count_matches_model(tied):
    model = tiny_llama(tie_word_embeddings=tied)
    spec = SubnetSpec.dense(get_adapter(model.config).shape(model.config))
    assert spec.params() == sum(p.numel() for p in model.parameters())
    assert spec.inheriting_ratio() == 1.0 and spec.block_ratio() == 1.0


def test_pruned_parameter_count_matches_extracted_model(model):
    spec = SubnetSpec.dense(get_adapter(model.config).shape(model.config))
    spec.layers[0].mlp_channels = spec.layers[0].mlp_channels[:64]
    spec.layers[1].attention_channels = [[0, 1, 8, 9], [2, 3, 10, 11]]
    del spec.layers[2]
    subnet = extract_subnet(model, spec)
    assert spec.params() == sum(p.numel() for p in subnet.parameters())
    assert spec.params() < SubnetSpec.dense(spec.shape).params()


def test_json_round_trip(tmp_path, model):
    spec = SubnetSpec.dense(get_adapter(model.config).shape(model.config))
    spec.layers[1].mlp_channels = [0, 5, 7]
    spec.metadata["note"] = "x"
    spec.save(tmp_path / "subnet_config.json")
    loaded = SubnetSpec.load(tmp_path)
    assert loaded.to_dict() == spec.to_dict()
    assert loaded.key() == spec.key()


def _spec(model):
    return SubnetSpec.dense(get_adapter(model.config).shape(model.config))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["layers"].append(copy.deepcopy(d["layers"][0])), "increasing order"),
        (lambda d: d["layers"][0].update(source_index=9), "outside"),
        (lambda d: d["layers"][0].update(mlp_channels=[0, 0, 1]), "unique and sorted"),
        (lambda d: d["layers"][0].update(mlp_channels=[0, 500]), "out of range"),
        (lambda d: d["layers"][0].update(mlp_channels=[]), "no MLP channel"),
        (lambda d: d["layers"][0].update(attention_channels=[[0, 8], [1]]), "same, non-zero"),
        (lambda d: d["layers"][0].update(attention_channels=[[0, 1], [0, 8]]), "pairs"),
        (lambda d: d["layers"][0].update(kv_heads=[0, 7]), "out of range"),
        (lambda d: d["shape"].update(hidden_size=64) or None, None),
        (lambda d: d.update(layers=[]), "no decoder layer"),
        (lambda d: d["layers"][0].pop("mlp_channels"), "malformed"),
        (lambda d: d.update(format_version=99), "format_version"),
    ],
)
def test_malformed_specs_are_rejected(model, mutate, message):
    data = _spec(model).to_dict()
    mutate(data)
    if message is None:  # a spec for another model: loads alone, rejected against this model
        spec = SubnetSpec.from_dict(data)
        with pytest.raises(InvalidSpecError, match="another model"):
            spec.validate(get_adapter(model.config).shape(model.config))
        return
    with pytest.raises(InvalidSpecError, match=message):
        SubnetSpec.from_dict(json.loads(json.dumps(data)))


def test_unsupported_architecture():
    from transformers import GPT2Config

    with pytest.raises(UnsupportedModelError, match="unsupported architecture 'gpt2'"):
        get_adapter(GPT2Config())


def test_subnet_is_not_re_pruned(model):
    subnet = extract_subnet(model, _spec(model))
    with pytest.raises(UnsupportedModelError, match="already a subnet"):
        get_adapter(subnet.config)


def test_shape_of_config_without_head_dim():
    config = tiny_llama_config(head_dim=None)
    shape = get_adapter(config).shape(config)
    assert shape.head_dim == config.hidden_size // config.num_attention_heads
