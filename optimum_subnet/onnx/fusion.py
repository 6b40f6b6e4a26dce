"""Graph pass: rewrite each decoder layer's attention into ``com.microsoft::GroupQueryAttention``.

ONNX Runtime's transformer optimizer never fuses LLaMA attention, so an exported model decodes
with unfused MatMul/Softmax attention and a KV cache that is concatenated (copied) at every step.
This pass replaces, per layer, everything between the Q/K/V projections and the output
projection with one GroupQueryAttention node (flash / memory-efficient kernels on CUDA, in-place
KV cache with a shared past/present buffer), using **that layer's own** ``num_heads``,
``kv_num_heads`` and head size (ORT's own fusion code writes one global head count; it must never
touch a heterogeneous model).

Rotary embedding:

* a layer that keeps the same rotary channels in every KV head (dense layers, and subnets searched
  with one mask per layer) gets ``do_rotary=1`` with its own cos/sin cache, built from the channels
  it kept (``cos(pos * inv_freq[pairs])``), when its head size is a multiple of 16 (ORT's
  requirement for fused rotary);
* otherwise (per-KV-head channel masks, or head sizes like 56) the rotation is applied explicitly
  before the node (Gather of each head's original frequencies, rotate-half, Mul/Add) and the node
  runs with ``do_rotary=0``;
* a layer whose head size is not a multiple of 8 (no GroupQueryAttention kernel) stays unfused.

The pass finds each layer's projections by the module scopes the exporter writes into node names
(``/model/layers.{i}/self_attn/{q,k,v,o}_proj/...``), which our exporter controls; the graph
inputs/outputs keep their names (``past_key_values.{i}.key`` -> ``present.{i}.key``), so the same
runtime class loads fused and unfused exports. GroupQueryAttention derives positions from the
attention mask (``seqlens_k``): batches must be unpadded or right-padded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
_TWO_GB = 2**31


def layer_attention_specs(config) -> list[dict[str, Any]]:
    """Per layer: heads, KV heads, head size and the original rotary channels each KV head keeps."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layers = getattr(config, "subnet_layers", None)
    if layers is None:
        return [{"num_attention_heads": config.num_attention_heads,
                 "num_key_value_heads": config.num_key_value_heads, "head_dim": head_dim,
                 "rope_channels": None} for _ in range(config.num_hidden_layers)]
    return [dict(layer) for layer in layers]


def rotary_tables(config) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of shape (max_positions, original head_dim) exactly as transformers computes them
    (``ROPE_INIT_FUNCTIONS``: default, llama3, linear, ... scalings)."""
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope_scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    positions = torch.arange(config.max_position_embeddings, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq.float())
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * attention_scaling).numpy(), (emb.sin() * attention_scaling).numpy()


class _GraphEditor:
    def __init__(self, model):
        from onnx import helper

        self.model = model
        self.graph = model.graph
        self.helper = helper
        self.new_nodes: list = []
        self.new_inits: list = []
        self.counter = 0
        self.by_name = {node.name: node for node in self.graph.node}
        self.value_infos: list = []

    def name(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "", name: str | None = None,
             **attrs) -> list[str]:
        name = name or self.name(f"/subnet_fusion/{op}")
        outs = outputs if isinstance(outputs, list) else [f"{name}_output_{i}" for i in range(outputs)]
        self.new_nodes.append(self.helper.make_node(op, inputs, outs, name=name, domain=domain or None, **attrs))
        return outs

    def const(self, array: np.ndarray, base: str) -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name


def _projection_output(editor: _GraphEditor, layer: int, proj: str) -> str:
    """Output of a layer's projection (MatMul, or its bias Add when present)."""
    scope = f"/model/layers.{layer}/self_attn/{proj}/"
    matmul = editor.by_name.get(scope + "MatMul")
    if matmul is None:
        raise ValueError(f"layer {layer}: no {proj} MatMul named {scope}MatMul in the graph (unexpected exporter)")
    add = editor.by_name.get(scope + "Add")
    return add.output[0] if add is not None else matmul.output[0]


def fuse_group_query_attention(src: str | Path, dst: str | Path, config) -> dict[str, Any]:
    """Rewrite ``src`` into ``dst`` with one GroupQueryAttention node per layer; returns a summary."""
    import onnx

    from optimum_subnet.core.errors import SubnetError
    from optimum_subnet.families import get_adapter_for_subnet

    adapter = get_adapter_for_subnet(config)
    if adapter.traits.qk_norm or adapter.traits.fused_qkv or getattr(config, "partial_rotary_factor", 1.0) != 1.0:
        raise SubnetError(f"fused attention (GroupQueryAttention) is not available for {config.model_type} exports "
                          "(q/k norms, fused projections or partial rotary); export without attention fusion")
    windows = adapter.layer_windows(config)
    scales = adapter.softmax_scales(config)
    model = onnx.load(str(src), load_external_data=True)
    graph = model.graph
    input_names = {i.name: i for i in graph.input}
    if "past_key_values.0.key" not in input_names:
        raise ValueError("attention fusion needs an export with a KV cache (task text-generation-with-past)")
    elem_type = input_names["past_key_values.0.key"].type.tensor_type.elem_type
    np_dtype = np.float16 if elem_type == onnx.TensorProto.FLOAT16 else np.float32
    editor = _GraphEditor(model)
    initializer_types = {t.name: t.data_type for t in graph.initializer}
    specs = layer_attention_specs(config)
    original_head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    half = original_head_dim // 2
    cos_table, sin_table = rotary_tables(config)

    # Shared by all layers: sequence lengths from the attention mask.
    mask_sum = editor.node("ReduceSum", ["attention_mask", editor.const(np.array([1], np.int64), "axes")],
                           keepdims=0)[0]
    seqlens = editor.node("Sub", [mask_sum, editor.const(np.array(1, np.int64), "one")])[0]
    seqlens_k = editor.node("Cast", [seqlens], to=onnx.TensorProto.INT32)[0]
    mask_shape = editor.node("Shape", ["attention_mask"])[0]
    total = editor.node("Gather", [mask_shape, editor.const(np.array(1, np.int64), "one_index")], axis=0)[0]
    total_len = editor.node("Cast", [total], to=onnx.TensorProto.INT32)[0]
    explicit_tables: dict[str, str] = {}

    replaced_outputs: set[str] = set()
    summary_layers = []
    for index, spec in enumerate(specs):
        heads, kv_heads, head_dim = spec["num_attention_heads"], spec["num_key_value_heads"], spec["head_dim"]
        channels = spec.get("rope_channels") or [list(range(original_head_dim))] * kv_heads
        shared = all(list(c) == list(channels[0]) for c in channels)
        if head_dim % 8 != 0:  # GroupQueryAttention kernels need a head size that is a multiple of 8
            summary_layers.append({"layer": index, "num_heads": heads, "kv_num_heads": kv_heads,
                                   "head_size": head_dim, "rotary": "unfused (head size not a multiple of 8)"})
            continue
        q, k, v = (_projection_output(editor, index, p) for p in ("q_proj", "k_proj", "v_proj"))
        o_proj = editor.by_name[f"/model/layers.{index}/self_attn/o_proj/MatMul"]
        gqa_inputs = None
        if shared and head_dim % 16 == 0:
            pairs = [c for c in channels[0] if c < half]
            cos = editor.const(cos_table[:, pairs].astype(np_dtype), f"/subnet_fusion/layers.{index}/cos_cache")
            sin = editor.const(sin_table[:, pairs].astype(np_dtype), f"/subnet_fusion/layers.{index}/sin_cache")
            gqa_inputs = [q, k, v, f"past_key_values.{index}.key", f"past_key_values.{index}.value", seqlens_k,
                          total_len, cos, sin]
            do_rotary = 1
        else:
            if not explicit_tables:
                for kind, table in (("cos", cos_table), ("sin", sin_table)):
                    full = editor.const(table.astype(np_dtype), f"/subnet_fusion/{kind}_table")
                    explicit_tables[kind] = editor.node("Gather", [full, "position_ids"], axis=0)[0]  # (B,S,D)
            q_index = [c for chans in channels for _ in range(heads // kv_heads) for c in chans]
            k_index = [c for chans in channels for c in chans]
            q = _explicit_rotary(editor, q, q_index, heads, head_dim, explicit_tables, index, "q")
            k = _explicit_rotary(editor, k, k_index, kv_heads, head_dim, explicit_tables, index, "k")
            gqa_inputs = [q, k, v, f"past_key_values.{index}.key", f"past_key_values.{index}.value", seqlens_k,
                          total_len]
            do_rotary = 0
        attn_out = editor.node(
            "GroupQueryAttention", gqa_inputs,
            [f"/subnet_fusion/layers.{index}/attn_output", f"present.{index}.key", f"present.{index}.value"],
            domain=MS_DOMAIN, name=f"/model/layers.{index}/self_attn/GroupQueryAttention",
            num_heads=heads, kv_num_heads=kv_heads, scale=scales[index], do_rotary=do_rotary,
            local_window_size=-1 if windows[index] is None else int(windows[index]),
        )[0]
        # Type/shape of the contrib op's output, so ONNX shape inference (used by ORT's quantizer)
        # can type everything downstream of it.
        editor.value_infos.append(onnx.helper.make_tensor_value_info(
            attn_out, elem_type, ["batch_size", "sequence_length", heads * head_dim]))
        weight_type = initializer_types.get(o_proj.input[1], elem_type)
        if weight_type != elem_type:  # e.g. an export that kept the attention product in fp32
            attn_out = editor.node("Cast", [attn_out], to=weight_type)[0]
        o_proj.input[0] = attn_out
        replaced_outputs.update({f"present.{index}.key", f"present.{index}.value"})
        summary_layers.append({"layer": index, "num_heads": heads, "kv_num_heads": kv_heads, "head_size": head_dim,
                               "rotary": "fused" if do_rotary else "explicit"})

    # Drop the old producers of the present outputs, add the new nodes, then remove dead nodes.
    kept = [n for n in graph.node if not (set(n.output) & replaced_outputs)]
    del graph.node[:]
    graph.node.extend(kept + editor.new_nodes)
    graph.initializer.extend(editor.new_inits)
    graph.value_info.extend(editor.value_infos)
    _topological_sort(graph)
    _eliminate_dead_nodes(graph)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    _save(model, Path(dst))
    counts = {kind: sum(layer["rotary"] == kind for layer in summary_layers) for kind in ("fused", "explicit")}
    counts["unfused"] = len(summary_layers) - counts["fused"] - counts["explicit"]
    logger.info("GroupQueryAttention fusion: %d of %d layers (%d with fused rotary, %d with explicit rotary)",
                counts["fused"] + counts["explicit"], len(summary_layers), counts["fused"], counts["explicit"])
    return {"layers": summary_layers, "rotary": counts, "nodes": len(graph.node)}


def _explicit_rotary(editor: _GraphEditor, x: str, channel_index: list[int], heads: int, head_dim: int,
                     tables: dict[str, str], layer: int, which: str) -> str:
    """(B, S, heads*head_dim) -> rotated by each head's original RoPE frequencies, same layout."""
    index = editor.const(np.array(channel_index, np.int64), f"/subnet_fusion/layers.{layer}/{which}_rope_index")
    shape4 = editor.const(np.array([0, 0, heads, head_dim], np.int64), f"/subnet_fusion/layers.{layer}/{which}_4d")
    x4 = editor.node("Reshape", [x, shape4])[0]
    cos = editor.node("Reshape", [editor.node("Gather", [tables["cos"], index], axis=2)[0], shape4])[0]
    sin = editor.node("Reshape", [editor.node("Gather", [tables["sin"], index], axis=2)[0], shape4])[0]
    h = head_dim // 2
    axes = editor.const(np.array([3], np.int64), "axes3")
    first = editor.node("Slice", [x4, editor.const(np.array([0], np.int64), "s0"),
                                  editor.const(np.array([h], np.int64), "sh"), axes])[0]
    second = editor.node("Slice", [x4, editor.const(np.array([h], np.int64), "sh"),
                                   editor.const(np.array([head_dim], np.int64), "se"), axes])[0]
    rotated = editor.node("Concat", [editor.node("Neg", [second])[0], first], axis=3)[0]
    out4 = editor.node("Add", [editor.node("Mul", [x4, cos])[0], editor.node("Mul", [rotated, sin])[0]])[0]
    shape3 = editor.const(np.array([0, 0, heads * head_dim], np.int64), f"/subnet_fusion/layers.{layer}/{which}_3d")
    return editor.node("Reshape", [out4, shape3])[0]


def _topological_sort(graph) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            missing = sorted({n for node in rest for n in node.input if n not in available})[:5]
            raise ValueError(f"fusion produced a graph with unresolved inputs: {missing}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _eliminate_dead_nodes(graph) -> None:
    needed = {o.name for o in graph.output}
    alive = []
    for node in reversed(list(graph.node)):
        if set(node.output) & needed:
            alive.append(node)
            needed.update(node.input)
    alive.reverse()
    del graph.node[:]
    graph.node.extend(alive)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _save(model, path: Path) -> None:
    import onnx

    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights >= _TWO_GB - 2**26:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}_data")
    else:
        onnx.save(model, str(path))
