"""The direct ONNX builder: graphs written from the weights (dense and heterogeneous subnets), validated
against PyTorch on the CPU EP in fp32, holding exactly the model's weights, with no host-side shape work."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from optimum_subnet import OnnxExportConfig, SubnetSpec, export_onnx
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.families import get_adapter
from optimum_subnet.families import get_adapter_for_subnet
from optimum_subnet.onnx.builder import BuildConfig, build_decoder, plan_layers, read_graph_info
from optimum_subnet.stages.surgery import extract_subnet
from tests.conftest import char_tokenizer, tiny_llama

pytestmark = pytest.mark.unit

#: ops that compute on tensor shapes (ONNX Runtime places them on the host): none may appear
SHAPE_OPS = {"Shape", "ConstantOfShape", "Range", "Expand", "Size", "NonZero", "If", "Loop", "Where", "Equal"}


def wide_llama(seed=0, **overrides):
    """Head size 32 (so a 16-channel subset still rotates in-kernel), 5 layers, untied LM head."""
    values = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=5,
                  intermediate_size=96, tie_word_embeddings=False)
    values.update(overrides)
    return tiny_llama(seed=seed, **values)


def hetero_spec(model):
    """Every rotary path and a dropped layer: dense layer (in-kernel), a 16-channel mask shared by the KV
    heads (in-kernel, its own cos/sin cache), per-KV-head 16-channel masks (explicit), an 8-channel mask
    (head size 8: explicit), layer 3 dropped; MLP widths per layer."""
    spec = SubnetSpec.dense(get_adapter(model.config).shape(model.config))
    layers = spec.layers
    layers[1].attention_channels = [[0, 2, 3, 5, 7, 8, 11, 13, 16, 18, 19, 21, 23, 24, 27, 29]] * 2
    layers[2].attention_channels = [[0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23],
                                    [8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31]]
    layers[4].attention_channels = [[1, 4, 9, 14, 17, 20, 25, 30]] * 2
    for i, layer in enumerate(layers):
        layer.mlp_channels = list(range(0, 96, i + 1))
    del layers[3]
    return spec.validate()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = wide_llama()
    return model, extract_subnet(model, hetero_spec(model))


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("direct")
    _, sub = models
    return export_onnx(sub, root / "subnet", OnnxExportConfig(validation_sequence_length=12),
                       tokenizer=char_tokenizer())


def _initializers(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_subnet_graph_validates_with_every_rotary_path(exported):
    report = json.loads((exported / "validation.json").read_text())
    assert report["builder"] == "direct" and report["direct"]["passed"]
    # fp32 graph vs fp32 PyTorch: rounding only (1e-3 is the export's tolerance)
    assert report["direct"]["max_abs_diff"] < 1e-4
    assert [s["step"] for s in report["direct"]["steps"]] == ["prefill", "decode"]
    layers = read_graph_info(exported / "model.onnx")["layers"]
    assert [(p["head_dim"], p["rotary"], p["shared_channels"]) for p in layers] == [
        (32, "fused", True), (16, "fused", True), (16, "explicit", False), (8, "explicit", True)]
    assert report["build"]["rotary"] == {"fused": 2, "explicit": 2, "none": 0}


def test_explicit_rotary_equals_in_kernel_rotary(models, tmp_path):
    """The explicit rotation (Gathers of cos/sin and of x with its partners, Mul, ReduceSum) and the kernel's,
    on the same layers."""
    import onnxruntime as ort

    from optimum_subnet.onnx.builder.validate import run_direct

    _, sub = models
    outs = []
    for force in (False, True):
        folder = tmp_path / str(force)
        build_decoder(sub, sub.config, folder, BuildConfig(force_explicit_rotary=force))
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        ids = np.random.default_rng(0).integers(3, 90, (2, 7))
        past = {i.name: np.zeros((2, i.shape[1], 8, i.shape[3]), np.float32) for i in session.get_inputs()
                if i.name.startswith("past_key_values.")}
        outs.append(run_direct(session, ids, np.tile(np.arange(7), (2, 1)), 7, np.arange(14).reshape(2, 7), past))
    scale = np.abs(outs[0]["logits"]).max()
    assert np.abs(outs[0]["logits"] - outs[1]["logits"]).max() < 1e-5 * scale
    assert np.abs(outs[0]["present.1.key"] - outs[1]["present.1.key"]).max() < 1e-5


def test_graph_holds_exactly_the_model_weights(models, exported):
    """Each parameter once (packed/transposed as the kernels take it, values unchanged), nothing else of
    weight size, and every initializer read by a node (no dead or duplicated tensors)."""
    _, sub = models
    proto = onnx.load(str(exported / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    used = {name for node in proto.graph.node for name in node.input}
    assert set(inits) <= used, sorted(set(inits) - used)
    state = {k: v.detach().numpy() for k, v in sub.state_dict().items()}
    expected = {"model.embed_tokens.weight": state["model.embed_tokens.weight"],
                "model.norm.weight": state["model.norm.weight"], "lm_head.weight": state["lm_head.weight"].T}
    for i in range(len(sub.config.subnet_layers)):
        p = f"model.layers.{i}."
        expected[p + "self_attn.qkv_proj.weight"] = np.concatenate(
            [state[p + f"self_attn.{r}_proj.weight"] for r in "qkv"]).T
        expected[p + "self_attn.o_proj.weight"] = state[p + "self_attn.o_proj.weight"].T
        expected[p + "mlp.gate_up_proj.weight"] = np.concatenate(
            [state[p + "mlp.gate_proj.weight"], state[p + "mlp.up_proj.weight"]]).T
        expected[p + "mlp.down_proj.weight"] = state[p + "mlp.down_proj.weight"].T
        for norm in ("input_layernorm", "post_attention_layernorm"):
            expected[p + f"{norm}.weight"] = state[p + f"{norm}.weight"]
    for name, value in expected.items():
        assert np.array_equal(inits[name], value), name
    weights = {n: a for n, a in inits.items() if not n.startswith("/")}  # "/...": rotary tables, index constants
    assert set(weights) == set(expected)
    assert sum(a.nbytes for a in weights.values()) == 4 * sum(p.numel() for p in sub.parameters())
    # the rest: rotary tables (one row per position: cos/sin caches of the in-kernel layers, the extended
    # tables of the explicit rotation) and int64 index/shape constants
    for name, array in inits.items():
        if name.startswith("/"):
            assert (name.startswith("/rotary/") and array.shape[0] == 256) or array.dtype == np.int64, name
    keys = [(a.dtype.str, a.shape, a.tobytes()) for a in inits.values() if a.size > 64]
    assert len(keys) == len(set(keys)), "two initializers hold the same tensor"


def test_tied_embeddings_are_stored_once(tmp_path):
    model = tiny_llama(seed=1)  # tie_word_embeddings=True
    summary = build_decoder(model, model.config, tmp_path / "tied")
    inits = _initializers(tmp_path / "tied" / "model.onnx")
    assert "lm_head.weight" not in inits
    assert summary["weight_bytes"] == 4 * sum(p.numel() for p in model.parameters())  # parameters() dedups ties
    lm_head = [n for n in onnx.load(str(tmp_path / "tied" / "model.onnx")).graph.node if n.name.startswith("/lm_head")]
    assert [n.op_type for n in lm_head] == ["Reshape", "Gather", "FusedMatMul"]


def test_no_host_side_shape_work(exported, models):
    """No op that ONNX Runtime computes on the host from tensor shapes; GroupQueryAttention reads its
    sequence lengths from the positions (ReduceMax + Cast on the device) and the total length from an
    input; per layer: two norms, four MatMuls, GQA, Split, QuickGelu, Mul (+ the explicit rotation)."""
    graph = onnx.load(str(exported / "model.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert not SHAPE_OPS & set(ops), sorted(SHAPE_OPS & set(ops))
    producers = {o: n for n in graph.node for o in n.output}
    gqa = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == 4
    for node in gqa:
        seqlens, total = node.input[5], node.input[6]
        cast = producers[seqlens]
        assert cast.op_type == "Cast" and producers[cast.input[0]].op_type == "ReduceMax"
        assert producers[cast.input[0]].input[0] == "position_ids" and total == "total_sequence_length"
        assert node.input[3].startswith("past_key_values.") and node.output[1].startswith("present.")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert abs(attrs["scale"] - 32 ** -0.5) < 1e-7  # the dense model's softmax scale
    layer_ops = {}
    for node in graph.node:
        if node.name.startswith("/model/layers."):
            layer_ops.setdefault(node.name.split("/")[2], []).append(node.op_type)
    fused = ["SimplifiedLayerNormalization", "MatMul", "GroupQueryAttention", "MatMul", "SkipSimplifiedLayerNormalization",
             "MatMul", "Split", "QuickGelu", "Mul", "MatMul"]
    assert sorted(layer_ops["layers.0"]) == sorted(fused)
    # + the explicit rotation: two Gathers, Mul, Reshape (no kernel), ReduceSum
    assert len(layer_ops["layers.1"]) == 10 and len(layer_ops["layers.2"]) == 10 + 5
    # seqlens + embedding, layers, rotations, the position table, final norm + LM head (Reshape, Gather, MatMul)
    assert len(graph.node) == 3 + 10 * 4 + 5 * 2 + 1 + 4


def test_fp16_graph_and_external_data(models, tmp_path):
    """fp16 weights (what CUDA runs) and weights in model.onnx.data: the same graph, half the bytes."""
    _, sub = models
    summary = build_decoder(sub, sub.config, tmp_path / "fp16", BuildConfig(dtype="fp16", external_data=True))
    assert summary["external_data"] and (tmp_path / "fp16" / "model.onnx.data").is_file()
    proto = onnx.load(str(tmp_path / "fp16" / "model.onnx"))  # loads the external data
    weight = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "model.norm.weight"))
    assert weight.dtype == np.float16 and np.array_equal(weight, sub.model.norm.weight.detach().half().numpy())
    assert summary["weight_bytes"] == 2 * sum(p.numel() for p in sub.parameters())
    assert {i.type.tensor_type.elem_type for i in proto.graph.input if i.name.startswith("past")} == {10}


def test_builder_refuses_what_it_cannot_write(models, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model, _ = models
    spec = SubnetSpec.dense(get_adapter(model.config).shape(model.config))
    spec.layers[2].attention_channels = [[0, 1, 2, 16, 17, 18]] * 2  # head size 6: no GQA kernel
    odd = extract_subnet(model, spec.validate())
    with pytest.raises(SubnetError, match='layer 2 has head size 6.*builder="torch"'):
        export_onnx(odd, tmp_path / "odd", OnnxExportConfig(builder="direct"))
    assert not (tmp_path / "odd").exists()
    # the default picks the torch exporter for it instead (and says so in validation.json)
    out = export_onnx(odd, tmp_path / "auto", OnnxExportConfig(validation_sequence_length=8))
    assert json.loads((out / "validation.json").read_text())["builder"] == "torch"
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(SubnetError, match="unsupported architecture 'gpt2'"):
        export_onnx(gpt2, tmp_path / "gpt2", OnnxExportConfig(builder="direct"))
    with pytest.raises(SubnetError, match='task "text-generation-with-past" or builder="torch"'):
        OnnxExportConfig(builder="direct", task="text-generation")
    with pytest.raises(SubnetError, match='GroupQueryAttention runs in fp16 on CUDA'):
        OnnxExportConfig(builder="direct", device="cuda")
    with pytest.raises(SubnetError, match="unknown ONNX builder 'fast'"):
        OnnxExportConfig(builder="fast")
    assert not (tmp_path / "gpt2").exists()


def test_family_without_the_direct_builder_is_named(models, monkeypatch, tmp_path):
    from optimum_subnet.families.llama.adapter import LlamaAdapter

    _, sub = models
    monkeypatch.setattr(LlamaAdapter, "direct_onnx", False)
    with pytest.raises(SubnetError, match="does not support the 'subnet_llama' family yet"):
        build_decoder(sub, sub.config, tmp_path / "x")


def test_plan_matches_the_config(models):
    _, sub = models
    plans = plan_layers(sub.config, get_adapter_for_subnet(sub.config))
    assert [p.heads for p in plans] == [4, 4, 4, 4] and [p.intermediate for p in plans] == [96, 48, 32, 20]
    assert plans[1].rotary_pairs == [0, 2, 3, 5, 7, 8, 11, 13]
