import pytest
import torch

from optimum_subnet.families import get_adapter
from optimum_subnet.calibration import BlockwiseRunner, GramAccumulator, record_inputs
from optimum_subnet.core.errors import NonFiniteError
from optimum_subnet.stages.importance import compute_importance
from optimum_subnet.algorithms import importance as imp
from optimum_subnet.stages.reformation import reform
from optimum_subnet.core.spec import SubnetSpec
from optimum_subnet.stages.surgery import extract_subnet
from tests.unit.test_modeling import _random_spec

pytestmark = pytest.mark.unit


def test_gram_accumulator_matches_direct_product():
    x = torch.randn(3, 7, 5)
    acc = GramAccumulator()
    acc.add(x[:2])
    acc.add(x[2:])
    flat = x.reshape(-1, 5).double()
    assert torch.allclose(acc.mean, flat.T @ flat / 21, atol=1e-6)
    with pytest.raises(NonFiniteError):
        acc.add(torch.tensor([[float("nan"), 1.0, 0, 0, 0]]))


def test_record_inputs_removes_hooks_even_on_error(model):
    linear = model.model.layers[0].mlp.down_proj
    with pytest.raises(RuntimeError):
        with record_inputs({"down": linear}, lambda n, x: None):
            raise RuntimeError("boom")
    assert not linear._forward_pre_hooks


def test_blockwise_runner_reproduces_full_forward(model):
    adapter = get_adapter(model.config)
    windows = torch.randint(0, model.config.vocab_size, (5, 24))
    runner = BlockwiseRunner(model, adapter, windows, batch_size=2, device="cpu")
    states = runner.initial_states()
    for layer in adapter.decoder_layers(model):
        states = runner.run_layer(layer, states)
    with torch.no_grad():
        expected = model(windows, output_hidden_states=True).hidden_states[-1]
    got = model.model.norm(torch.cat(states))
    assert torch.allclose(got, expected, atol=1e-5)


def test_importance_pass_matches_direct_computation(model):
    adapter = get_adapter(model.config)
    windows = torch.randint(0, model.config.vocab_size, (4, 32))
    scores = compute_importance(model, adapter, windows, batch_size=3, device="cpu", damp=0.01)
    # direct: inputs of layer 2's down_proj over all tokens
    captured = []
    layer = model.model.layers[2]
    with record_inputs({"down": layer.mlp.down_proj}, lambda n, x: captured.append(x.reshape(-1, x.shape[-1]))):
        with torch.no_grad():
            model(windows)
    x = torch.cat(captured).double()
    gram = x.T @ x / x.shape[0]
    phi_down = imp.obs_saliency(layer.mlp.down_proj.weight.detach(), gram, 0.01)
    captured.clear()
    with record_inputs({"gate": layer.mlp.gate_proj}, lambda n, x: captured.append(x.reshape(-1, x.shape[-1]))):
        with torch.no_grad():
            model(windows)
    x = torch.cat(captured).double()
    gram_in = x.T @ x / x.shape[0]
    expected = (imp.obs_saliency(layer.mlp.gate_proj.weight.detach(), gram_in, 0.01).sum(1)
                + imp.obs_saliency(layer.mlp.up_proj.weight.detach(), gram_in, 0.01).sum(1)
                + phi_down.sum(0))
    assert torch.allclose(scores.mlp[2], expected, rtol=1e-4)
    assert scores.attention[0].shape == (2, 16)


def _layer_output_error(dense, subnet, spec, windows):
    with torch.no_grad():
        d = dense(windows, output_hidden_states=True).hidden_states
        s = subnet(windows, output_hidden_states=True).hidden_states
    return float((s[-1] - d[-1]).norm() / d[-1].norm())


@pytest.mark.parametrize("method", ["closed_form", "admm"])
def test_reformation_never_hurts_and_closed_form_helps(model, method):
    adapter = get_adapter(model.config)
    spec = _random_spec(model, drop_layer=False)
    windows = torch.randint(0, model.config.vocab_size, (16, 48))
    held_out = torch.randint(0, model.config.vocab_size, (4, 48))
    subnet = extract_subnet(model, spec)
    before = _layer_output_error(model, subnet, spec, held_out)
    result = reform(model, subnet, spec, adapter, windows, batch_size=4, device="cpu", method=method,
                    iterations=30)
    after = _layer_output_error(model, subnet, spec, held_out)
    for layer in result.layers:
        for site in ("attention", "mlp"):
            # a fit is applied only if it beats inheritance on the validation windows
            assert layer[f"{site}_validation_error"] <= layer[f"{site}_validation_error_inherited"]
    if method == "closed_form":
        assert after < before
        assert result.mean_error("mlp_error_after") < result.mean_error("mlp_error_before")
    else:
        assert after <= before * 1.05


def test_damping_is_chosen_on_held_out_windows(model):
    adapter = get_adapter(model.config)
    spec = _random_spec(model, drop_layer=False)
    subnet = extract_subnet(model, spec)
    result = reform(model, subnet, spec, adapter, torch.randint(0, model.config.vocab_size, (8, 32)), 4, "cpu",
                    damp_grid=(1e-3, 1.0))
    assert {layer["mlp_damp"] for layer in result.layers} <= {1e-3, 1.0, "inherit"}
    fixed = extract_subnet(model, spec)
    result = reform(model, fixed, spec, adapter, torch.randint(0, model.config.vocab_size, (8, 32)), 4, "cpu",
                    damp=0.05)
    assert {layer["mlp_damp"] for layer in result.layers} <= {0.05, "inherit"}


def test_reformation_of_dense_spec_changes_nothing(model):
    adapter = get_adapter(model.config)
    spec = SubnetSpec.dense(adapter.shape(model.config))
    subnet = extract_subnet(model, spec)
    before = {k: v.clone() for k, v in subnet.state_dict().items()}
    reform(model, subnet, spec, adapter, torch.randint(0, 50, (2, 16)), 2, "cpu")
    for k, v in subnet.state_dict().items():
        assert torch.equal(v, before[k]), k
