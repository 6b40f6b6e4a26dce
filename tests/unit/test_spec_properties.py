"""Property-based tests (hypothesis) of the spec parser and of surgery on the tiny LLaMA.

* Any valid spec (random layer subsets, KV-head subsets, RoPE-paired channel subsets of one width per
  layer, MLP subsets) survives a JSON round trip, and surgery turns it into a model with exactly
  ``spec.params()`` parameters whose logits equal the dense model's with the pruned channels masked.
* Any invalid spec (a valid one broken by one mutation: out of range, duplicate, unsorted, unpaired
  RoPE channel, unequal head widths, wrong counts, wrong types, another model's shape, ...) is
  rejected with :class:`InvalidSpecError` by the parser or by surgery's validation, before a single
  weight is sliced.
* Arbitrary JSON never crashes the parser with anything but :class:`InvalidSpecError`.
"""

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from optimum_subnet.families import get_adapter
from optimum_subnet.core.errors import InvalidSpecError
from optimum_subnet.core.spec import LayerSpec, ModelShape, SubnetSpec
from optimum_subnet.stages.surgery import extract_subnet, masked_copy
from tests.conftest import tiny_llama

pytestmark = pytest.mark.unit

MODEL = tiny_llama()
ADAPTER = get_adapter(MODEL.config)
SHAPE = ADAPTER.shape(MODEL.config)
HALF = SHAPE.head_dim // 2
IDS = torch.randint(3, MODEL.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
#: The adapter with weight slicing booby-trapped: an invalid spec must be rejected before any of it.
TRAPPED = get_adapter(MODEL.config)
TRAPPED.slice_state_dict = lambda *a, **k: pytest.fail("weights were sliced for an invalid spec")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def subsets(upper: int, min_size: int = 1, size: int | None = None):
    return st.sets(st.integers(0, upper - 1), min_size=size or min_size, max_size=size or upper).map(sorted)


@st.composite
def valid_specs(draw) -> SubnetSpec:
    layers = []
    for index in draw(subsets(SHAPE.num_layers)):
        kv_heads = draw(subsets(SHAPE.num_key_value_heads))
        pairs = draw(st.integers(1, HALF))  # one head size per layer
        channels = []
        for _ in kv_heads:
            kept = draw(subsets(HALF, size=pairs))
            channels.append(sorted(kept + [p + HALF for p in kept]))
        layers.append(LayerSpec(source_index=index, kv_heads=kv_heads, attention_channels=channels,
                                mlp_channels=draw(subsets(SHAPE.intermediate_size))))
    return SubnetSpec(shape=SHAPE, layers=layers)


@FAST
@given(valid_specs())
def test_any_valid_spec_round_trips_loads_and_runs(spec):
    loaded = SubnetSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert loaded.to_dict() == spec.to_dict()
    subnet = extract_subnet(MODEL, loaded, ADAPTER)
    assert sum(p.numel() for p in subnet.parameters()) == spec.params()
    with torch.no_grad():
        actual = subnet(IDS).logits
        expected = masked_copy(MODEL, spec, ADAPTER)(IDS).logits
    assert torch.isfinite(actual).all()
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ invalid specs
def _lists(data, layer):
    """(name, list) of every index list of a layer dict."""
    return [("kv_heads", layer["kv_heads"]), ("mlp_channels", layer["mlp_channels"])] + [
        (f"attention_channels[{h}]", c) for h, c in enumerate(layer["attention_channels"])]


def _pick_layer(draw, data):
    return draw(st.sampled_from(data["layers"]))


def _upper(name):
    return {"kv_heads": SHAPE.num_key_value_heads, "mlp_channels": SHAPE.intermediate_size}.get(name, SHAPE.head_dim)


def out_of_range(draw, data):
    layer = _pick_layer(draw, data)
    name, values = draw(st.sampled_from(_lists(data, layer)))
    if draw(st.booleans()):
        values[-1] = _upper(name) + draw(st.integers(0, 50))
    else:
        values[0] = -draw(st.integers(1, 50))


def duplicate(draw, data):
    layer = _pick_layer(draw, data)
    _, values = draw(st.sampled_from(_lists(data, layer)))
    values.insert(draw(st.integers(0, len(values))), draw(st.sampled_from(values)))


def unsorted(draw, data):
    layer = _pick_layer(draw, data)
    candidates = [v for _, v in _lists(data, layer) if len(set(v)) >= 2]
    assume(candidates)
    values = draw(st.sampled_from(candidates))
    values.reverse()


def unpaired_rope(draw, data):
    layer = _pick_layer(draw, data)
    head = draw(st.sampled_from(layer["attention_channels"]))
    partner = draw(st.sampled_from([c for c in head if c >= HALF]))
    head.remove(partner)
    for other in layer["attention_channels"]:  # keep widths equal so only the pairing is wrong
        if other is not head:
            other.remove(max(other))


def unequal_widths(draw, data):
    layers = [layer for layer in data["layers"] if len(layer["attention_channels"]) >= 2]
    assume(layers)
    layer = draw(st.sampled_from(layers))
    head = layer["attention_channels"][0]
    missing = [p for p in range(HALF) if p not in head]
    if missing:
        head.extend([missing[0], missing[0] + HALF])
    else:
        head[:] = [p for p in head if p not in (0, HALF)]
    head.sort()


def channel_lists_vs_heads(draw, data):
    layer = _pick_layer(draw, data)
    if draw(st.booleans()) or len(layer["attention_channels"]) == 1:
        layer["attention_channels"].append(list(layer["attention_channels"][0]))
    else:
        layer["attention_channels"].pop()


def empty(draw, data):
    what = draw(st.sampled_from(["layers", "mlp", "kv", "channels"]))
    if what == "layers":
        data["layers"] = []
    else:
        layer = _pick_layer(draw, data)
        if what == "mlp":
            layer["mlp_channels"] = []
        elif what == "kv":
            layer["kv_heads"], layer["attention_channels"] = [], []
        else:
            layer["attention_channels"] = [[] for _ in layer["kv_heads"]]


def layer_order(draw, data):
    if len(data["layers"]) >= 2 and draw(st.booleans()):
        data["layers"].reverse()
    else:
        data["layers"].append(copy.deepcopy(data["layers"][-1]))
        if draw(st.booleans()):
            data["layers"][-1]["source_index"] = SHAPE.num_layers + draw(st.integers(0, 5))


def wrong_type(draw, data):
    layer = _pick_layer(draw, data)
    key = draw(st.sampled_from(["source_index", "kv_heads", "mlp_channels", "attention_channels"]))
    bad = draw(st.sampled_from([1.5, "3", True, None, {"a": 1}, [[1]]]))
    if key == "source_index" or not layer[key]:
        layer[key] = bad
    elif key == "attention_channels":
        layer[key][0] = bad if not isinstance(bad, list) else 7
    else:
        layer[key][0] = bad


def broken_structure(draw, data):
    what = draw(st.sampled_from(["missing", "extra", "shape-field", "version", "layers-type"]))
    if what == "missing":
        layer = _pick_layer(draw, data)
        del layer[draw(st.sampled_from(["source_index", "kv_heads", "attention_channels", "mlp_channels"]))]
    elif what == "extra":
        _pick_layer(draw, data)["heads"] = [0]
    elif what == "shape-field":
        data["shape"][draw(st.sampled_from(["hidden_size", "num_layers"]))] = draw(st.sampled_from([0, -1, "48", 2.0]))
    elif what == "version":
        data["format_version"] = draw(st.integers(2, 9))
    else:
        data["layers"] = {"0": data["layers"][0]}


def other_model(draw, data):
    """A spec that is fine on its own but made for another shape (rejected against this model)."""
    field, value = draw(st.sampled_from([("hidden_size", 64), ("num_layers", 6), ("intermediate_size", 256),
                                         ("vocab_size", 50), ("tie_word_embeddings", False)]))
    data["shape"][field] = value


MUTATIONS = [out_of_range, duplicate, unsorted, unpaired_rope, unequal_widths, channel_lists_vs_heads, empty,
             layer_order, wrong_type, broken_structure, other_model]


@FAST
@given(valid_specs(), st.sampled_from(MUTATIONS), st.data())
def test_any_invalid_spec_is_rejected_before_work(spec, mutation, data):
    broken = spec.to_dict()
    mutation(data.draw, broken)
    text = json.dumps(broken)  # what a user's file holds
    with pytest.raises(InvalidSpecError):
        SubnetSpec.from_dict(json.loads(text)).validate(SHAPE)  # what the CLI does before loading data
    if mutation in (wrong_type, broken_structure):
        return  # JSON-level damage: objects cannot even be built from it, the parser is the gate
    # Surgery validates too (objects built without the parser), before slicing a single weight.
    unchecked = SubnetSpec(shape=ModelShape(**broken["shape"]), layers=[LayerSpec(**layer) for layer in broken["layers"]])
    with pytest.raises(InvalidSpecError):
        extract_subnet(MODEL, unchecked, TRAPPED)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"shape": json_values, "layers": json_values})))
def test_parser_never_crashes_on_arbitrary_json(value):
    try:
        SubnetSpec.from_dict(value)
    except InvalidSpecError:
        pass
