"""Emit the decoder graph of a dense model or a heterogeneous subnet directly from its weights.

No tracing: each layer is written from its own shapes (``config.subnet_layers``, or the dense sizes) and
the family's :class:`~optimum_subnet.families.base.GraphLayout`. Per decoder layer::

    SkipSimplifiedLayerNormalization (residual add fused; the first layer: SimplifiedLayerNormalization)
    MatMul (packed q|k|v) [+ Add bias]        [Split, q/k SimplifiedLayerNormalization: q/k-norm families]
    [explicit rotary: Gather cos|sin, Gather x|partner, Mul, ReduceSum]   (only where the kernel cannot)
    com.microsoft::GroupQueryAttention (this layer's heads, KV heads, head size, scale, window; in-kernel
        rotary from the channels the layer kept; past and present share one buffer of fixed length)
    MatMul (o) [+ Add bias]                   [Gemma: SimplifiedLayerNormalization (post-attention)]
    SkipSimplifiedLayerNormalization
    MatMul (packed gate|up) [+ Add], Split, QuickGelu (SiLU) or FastGelu, Mul, MatMul (down) [+ Add]

Inputs: ``input_ids`` (B, S) int64; ``position_ids`` (B, S) int64 (each row's positions; a right-padded
row repeats its last real position in its padding, so ``max(position_ids[b]) = seqlens_k[b]``, which the
graph computes with ReduceMax + Cast on the device); ``total_sequence_length`` () int32 (GQA reads it on
the host: S for a prompt, the buffer length when decoding); ``logits_index`` (B, K) int64: which of the
B*S flattened positions get logits (the last real token of each row when generating, all when
validating); ``past_key_values.{i}.key/value`` (B, kv heads, max_length, head size): the KV buffers,
written in place when bound to the same memory as ``present.{i}.*``. Outputs: ``logits`` (B, K, vocab)
and ``present.{i}.key/value``.

Patterns reused from onnxruntime-genai's model builder (``src/python/py/models/builders/base.py``): packed
QKV and gate/up MatMuls, SkipSimplifiedLayerNormalization chaining through its ``input_skip_bias_sum``
output, GroupQueryAttention with ``past_present_share_buffer`` and in-kernel rotary (``do_rotary``, cos/sin
caches of half the rotary width), q/k norms as SimplifiedLayerNormalization on a (B, S, heads, dim) view,
bias Adds before attention, ``x * (1 + w)`` norms folded into the weights (Gemma), two rotary caches for
Gemma3's local/global layers. Ours differs where subnets need it: every layer has its own head counts,
head size, MLP width, scale and cos/sin caches (from the channels it kept), per-KV-head channel masks get
an explicit rotation, and seqlens come from the positions instead of an attention mask.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optimum_subnet.core.errors import SubnetError, UnsupportedModelError
from optimum_subnet.onnx.builder.graph import MS_DOMAIN, GraphWriter

logger = logging.getLogger(__name__)

#: ``model.onnx`` metadata key naming a graph written by this builder (the runtime looks for it)
GRAPH_KEY = "optimum_subnet.graph"
GRAPH_KIND = "direct-decoder"
GRAPH_VERSION = "1"
LAYERS_KEY = "optimum_subnet.layers"
DEFAULT_OPSET = 17
#: weights above this go to an external data file (protobuf refuses files over 2 GiB)
EXTERNAL_DATA_BYTES = 1 << 30
ONNX_FLOAT, ONNX_FLOAT16, ONNX_INT32, ONNX_INT64 = 1, 10, 6, 7


@dataclass
class BuildConfig:
    """How to build (the export's dtype and opset; the rest for benchmarks and tests)."""

    dtype: str = "fp32"  # fp32 | fp16
    opset: int = DEFAULT_OPSET
    #: rows of the rotary tables: the longest sequence the graph runs (default: max_position_embeddings)
    max_positions: int | None = None
    #: weights in model.onnx.data (None: when they exceed 1 GiB)
    external_data: bool | None = None
    #: rotate every layer explicitly (tests: the explicit path on layers the kernel could rotate)
    force_explicit_rotary: bool = False

    def __post_init__(self):
        if self.dtype not in ("fp32", "fp16"):
            raise SubnetError(f"unsupported graph dtype {self.dtype!r}; use fp32 or fp16")


@dataclass
class LayerPlan:
    """One decoder layer as the graph writes it."""

    index: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    #: per KV head, the original head channels it keeps, in the order of its weights' rows
    channels: list[list[int]]
    scale: float
    window: int | None
    rope: str
    rotary: str = "fused"  # fused (in GQA) | explicit | none
    rotary_pairs: list[int] = field(default_factory=list)  # in-kernel: the kept channels c < rotary_dim/2

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("channels", "rotary_pairs")}
        out["shared_channels"] = all(c == self.channels[0] for c in self.channels)
        return out


def _np_dtype(dtype: str):
    return np.float16 if dtype == "fp16" else np.float32


def rotary_map(channels: list[int], rotary_dim: int) -> tuple[list[int], list[int], list[int], bool, list[int]]:
    """For one head's kept channels (original indices, in row order): each channel's cos column, signed-sin
    column and partner position (``rotate_half`` pairs ``c`` with ``c +- r/2``), whether the layout is the
    kernel's (``[pairs | their partners in order | pass-through]``), and the kept pairs ``c < r/2``.

    Columns index ``[cos (r) | 1]`` and ``[sin (r) | -sin (r) | 0]``: channel ``c < r/2`` takes ``-sin``,
    ``r/2 <= c < r`` takes ``sin``, pass-through channels (partial rotary) take cos 1 and sin 0.
    """
    half = rotary_dim // 2
    position = {c: p for p, c in enumerate(channels)}
    cos_col, sin_col, partner = [], [], []
    for p, c in enumerate(channels):
        if c < rotary_dim:
            mate = c + half if c < half else c - half
            if mate not in position:
                raise SubnetError(f"kept channel {c} lacks its rotary partner {mate}: channels must be kept in "
                                  "RoPE pairs")
            cos_col.append(c)
            sin_col.append(rotary_dim + c if c < half else c)
            partner.append(position[mate])
        else:
            cos_col.append(rotary_dim)
            sin_col.append(2 * rotary_dim)
            partner.append(p)
    pairs = [c for c in channels if c < half]
    n = len(pairs)
    standard = (channels[:n] == pairs and channels[n:2 * n] == [c + half for c in pairs]
                and all(c >= rotary_dim for c in channels[2 * n:]))
    return cos_col, sin_col, partner, standard, pairs


def plan_layers(config, adapter, force_explicit: bool = False) -> list[LayerPlan]:
    """Each layer's shapes and rotary path (in-kernel wherever GroupQueryAttention can rotate it)."""
    original = adapter.head_dim(config)
    rotary_dim = adapter.graph_layout(config).rotary_dim
    entries = getattr(config, "subnet_layers", None)
    if entries is None:
        kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        entries = [{"num_attention_heads": config.num_attention_heads, "num_key_value_heads": kv,
                    "head_dim": original, "rope_channels": None, "intermediate_size": config.intermediate_size}
                   ] * config.num_hidden_layers
    windows, scales, kinds = adapter.layer_windows(config), adapter.softmax_scales(config), adapter.rope_kinds(config)
    plans = []
    for i, entry in enumerate(entries):
        heads, kv_heads, head_dim = entry["num_attention_heads"], entry["num_key_value_heads"], entry["head_dim"]
        if head_dim % 8:
            raise SubnetError(f"layer {i} has head size {head_dim}; GroupQueryAttention needs a multiple of 8 "
                              "(search with head_dim_multiple 8, the default) or export with builder=\"torch\"")
        if heads % kv_heads:
            raise SubnetError(f"layer {i}: {heads} query heads do not group over {kv_heads} KV heads")
        channels = entry.get("rope_channels") or [list(range(original))] * kv_heads
        channels = [list(c) for c in channels]
        if any(len(c) != head_dim for c in channels):
            raise SubnetError(f"layer {i}: rope_channels do not match head size {head_dim}")
        plan = LayerPlan(index=i, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                         intermediate=entry["intermediate_size"], channels=channels, scale=float(scales[i]),
                         window=None if windows[i] is None else int(windows[i]), rope=kinds[i])
        maps = [rotary_map(c, rotary_dim) for c in channels]
        shared = all(c == channels[0] for c in channels)
        pairs = maps[0][4]
        if not any(m[4] for m in maps):
            plan.rotary = "none"
        elif shared and maps[0][3] and head_dim % 16 == 0 and len(pairs) % 8 == 0 and not force_explicit:
            # GroupQueryAttention rotates in-kernel for head sizes that are multiples of 16 and cos/sin caches
            # of a multiple of 8 columns (its own checks)
            plan.rotary, plan.rotary_pairs = "fused", pairs
        else:
            plan.rotary = "explicit"
        plans.append(plan)
    return plans


class _Builder:
    def __init__(self, config, adapter, source, writer: GraphWriter, build: BuildConfig, positions: int):
        self.config, self.adapter, self.source, self.w, self.build = config, adapter, source, writer, build
        self.layout = adapter.graph_layout(config)
        self.np_dtype = _np_dtype(build.dtype)
        self.elem = ONNX_FLOAT16 if build.dtype == "fp16" else ONNX_FLOAT
        self.positions = positions
        self.rope = self.layout.rotary_dim
        self._tables: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._position_tables: dict[str, tuple[str, str]] = {}
        self._caches: dict[tuple, tuple[str, str]] = {}
        self.weight_names: list[str] = []

    # ------------------------------------------------------------------------------- tensors
    def weight(self, name: str, tensor, transpose: bool = False, offset: float = 0.0) -> str:
        """A model weight as an initializer (converted to the graph dtype; projections transposed)."""
        import torch

        t = tensor.detach()
        if offset:
            t = t.float() + offset
        t = t.to(dtype=torch.float16 if self.build.dtype == "fp16" else torch.float32)
        if transpose:
            t = t.t()
        array = t.contiguous().cpu().numpy()
        self.weight_names.append(name)
        return self.w.initializer(name, array)

    def packed(self, name: str, tensors: list, transpose: bool = True) -> str:
        import torch

        return self.weight(name, torch.cat([t.detach() for t in tensors], dim=0), transpose=transpose)

    def tables(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._tables is None:
            self._tables = self.adapter.rope_tables(self.config, self.positions)
        return self._tables

    def fused_cache(self, kind: str, pairs: list[int]) -> tuple[str, str]:
        """GroupQueryAttention's cos/sin caches (positions, len(pairs)) for the kept rotary channels."""
        key = (kind, tuple(pairs))
        if key not in self._caches:
            cos, sin = self.tables()[kind]
            tag = f"/rotary/{kind}/{len(self._caches)}"
            self._caches[key] = (self.w.initializer(f"{tag}/cos_cache", cos[:, pairs].astype(self.np_dtype)),
                                 self.w.initializer(f"{tag}/sin_cache", sin[:, pairs].astype(self.np_dtype)))
        return self._caches[key]

    def position_table(self, kind: str) -> str:
        """Per step, once per table: ``[cos | 1 | sin | -sin | 0]`` gathered at the positions: (B, S, 3r + 2)."""
        if kind not in self._position_tables:
            cos, sin = self.tables()[kind]
            rows = cos.shape[0]
            table = np.concatenate([cos, np.ones((rows, 1), cos.dtype), sin, -sin, np.zeros((rows, 1), sin.dtype)],
                                   axis=1).astype(self.np_dtype)
            name = self.w.initializer(f"/rotary/{kind}/cos_sin_table", table)
            self._position_tables[kind] = self.w.node("Gather", [name, "position_ids"], f"/rotary/{kind}/Gather",
                                                      axis=0)[0]
        return self._position_tables[kind]

    # ----------------------------------------------------------------------------------- ops
    def rms(self, x: str, weight: str, name: str) -> str:
        return self.w.node("SimplifiedLayerNormalization", [x, weight], name, axis=-1,
                           epsilon=self.layout.rms_norm_eps, stash_type=1)[0]

    def skip_rms(self, residual: str, skip: str, weight: str, name: str, keep_sum: bool = True) -> tuple[str, str]:
        """(normalized, residual + skip) in one SkipSimplifiedLayerNormalization."""
        outs = [f"{name}/output_0", "", "", f"{name}/output_3"] if keep_sum else [f"{name}/output_0"]
        outs = self.w.node("SkipSimplifiedLayerNormalization", [residual, skip, weight], name, outputs=outs,
                           domain=MS_DOMAIN, epsilon=self.layout.rms_norm_eps)
        return outs[0], (outs[3] if keep_sum else "")

    def linear(self, x: str, weight: str, bias: str | None, name: str) -> str:
        y = self.w.node("MatMul", [x, weight], f"{name}/MatMul")[0]
        if bias is not None:
            y = self.w.node("Add", [y, bias], f"{name}/Add")[0]
        return y

    def explicit_rotary(self, x: str, plan: LayerPlan, heads: list[tuple[int, str]], name: str) -> str:
        """Rotate ``x`` (B, S, sum of heads * head size): ``heads`` lists (KV head, 'rot'|'pass') per head.

        Four kernels: gather ``[cos | +-sin]`` of each channel from the step's position table, gather
        ``[x | partner]``, multiply, and sum the two halves: ``x * cos + partner * (+-sin)``."""
        r, d = self.rope, plan.head_dim
        cos_col, sin_col, partner = [], [], []
        for offset, (kv_head, kind) in enumerate(heads):
            if kind == "pass":
                cos_col += [r] * d
                sin_col += [2 * r] * d
                partner += [offset * d + p for p in range(d)]
                continue
            c, s, p, _, _ = rotary_map(plan.channels[kv_head], r)
            cos_col += c
            sin_col += s
            partner += [offset * d + q for q in p]
        width = len(partner)
        # columns of the position table: cos c -> c, 1 -> r, sin c -> r + 1 + c, -sin c -> 2r + 1 + c, 0 -> 3r + 1
        table_index = np.array(cos_col + [r + 1 + col for col in sin_col], np.int64)
        x_index = np.array(list(range(width)) + partner, np.int64)
        base = f"/model/layers.{plan.index}/attn/rotary/{name}"
        w = self.w
        cos_sin = w.node("Gather", [self.position_table(plan.rope), w.const(table_index, f"{base}/table_index")],
                         f"{base}/cos_sin/Gather", axis=2)[0]
        pair = w.node("Gather", [x, w.const(x_index, f"{base}/x_index")], f"{base}/x_partner/Gather", axis=2)[0]
        product = w.node("Mul", [pair, cos_sin], f"{base}/Mul")[0]
        split = w.node("Reshape", [product, w.const(np.array([0, 0, 2, width], np.int64))], f"{base}/Reshape")[0]
        return w.node("ReduceSum", [split, w.const(np.array([2], np.int64))], f"{base}/ReduceSum", keepdims=0)[0]

    def qk_norm(self, x: str, heads: int, d: int, weight: str, name: str) -> str:
        x4 = self.w.node("Reshape", [x, self.w.const(np.array([0, 0, heads, d], np.int64))], f"{name}/Reshape")[0]
        y = self.rms(x4, weight, f"{name}/SimplifiedLayerNormalization")
        return self.w.node("Reshape", [y, self.w.const(np.array([0, 0, heads * d], np.int64))],
                           f"{name}/Reshape_back")[0]

    # -------------------------------------------------------------------------------- layers
    def attention(self, i: int, plan: LayerPlan, x: str, seqlens: str) -> str:
        src, w = self.source, self.w
        base = f"/model/layers.{i}/attn"
        prefix = f"model.layers.{i}.self_attn"
        q_w, q_b = src.projection(i, "q")
        k_w, k_b = src.projection(i, "k")
        v_w, v_b = src.projection(i, "v")
        qkv_w = self.packed(f"{prefix}.qkv_proj.weight", [q_w, k_w, v_w])
        biases = [b for b in (q_b, k_b, v_b) if b is not None]
        qkv_b = None
        if biases:
            import torch

            parts = [b if b is not None else torch.zeros(m.shape[0], dtype=m.dtype) for b, m in
                     ((q_b, q_w), (k_b, k_w), (v_b, v_w))]
            qkv_b = self.weight(f"{prefix}.qkv_proj.bias", torch.cat(parts))
        qkv = self.linear(x, qkv_w, qkv_b, f"{base}/qkv_proj")
        d, hq, hkv = plan.head_dim, plan.heads, plan.kv_heads
        group = hq // hkv
        q_heads = [(h // group, "rot") for h in range(hq)]
        k_heads = [(h, "rot") for h in range(hkv)]
        cos_sin: list[str] = []
        if plan.rotary == "fused":
            cos_sin = list(self.fused_cache(plan.rope, plan.rotary_pairs))
        if self.layout.qk_norm:
            q, k, v = w.node("Split", [qkv, w.const(np.array([hq * d, hkv * d, hkv * d], np.int64))],
                             f"{base}/qkv_proj/Split", outputs=3, axis=-1)
            qn, kn = src.qk_norm(i)
            q = self.qk_norm(q, hq, d, self.weight(f"{prefix}.q_norm.weight", qn, offset=self.layout.norm_offset),
                             f"{base}/q_norm")
            k = self.qk_norm(k, hkv, d, self.weight(f"{prefix}.k_norm.weight", kn, offset=self.layout.norm_offset),
                             f"{base}/k_norm")
            if plan.rotary == "explicit":
                q = self.explicit_rotary(q, plan, q_heads, "q")
                k = self.explicit_rotary(k, plan, k_heads, "k")
            qkv_inputs = [q, k, v]
        else:
            if plan.rotary == "explicit":
                qkv = self.explicit_rotary(qkv, plan, q_heads + k_heads + [(h, "pass") for h in range(hkv)], "qkv")
            qkv_inputs = [qkv, "", ""]
        attrs = dict(num_heads=hq, kv_num_heads=hkv, scale=plan.scale, do_rotary=int(plan.rotary == "fused"),
                     rotary_interleaved=0, local_window_size=-1 if plan.window is None else plan.window)
        if self.layout.attn_logit_softcapping:
            attrs["softcap"] = float(self.layout.attn_logit_softcapping)
        attn = w.node("GroupQueryAttention",
                      qkv_inputs + [f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens,
                                    "total_sequence_length"] + cos_sin,
                      f"{base}/GroupQueryAttention", outputs=[f"{base}/GroupQueryAttention/output_0",
                                                               f"present.{i}.key", f"present.{i}.value"],
                      domain=MS_DOMAIN, **attrs)[0]
        o_w, o_b = src.projection(i, "o")
        return self.linear(attn, self.weight(f"{prefix}.o_proj.weight", o_w, transpose=True),
                           None if o_b is None else self.weight(f"{prefix}.o_proj.bias", o_b), f"{base}/o_proj")

    def mlp(self, i: int, plan: LayerPlan, x: str) -> str:
        src, w = self.source, self.w
        base, prefix = f"/model/layers.{i}/mlp", f"model.layers.{i}.mlp"
        g_w, g_b = src.projection(i, "gate")
        u_w, u_b = src.projection(i, "up")
        gu_b = None
        if g_b is not None or u_b is not None:
            import torch

            gu_b = self.weight(f"{prefix}.gate_up_proj.bias", torch.cat([
                g_b if g_b is not None else torch.zeros(g_w.shape[0], dtype=g_w.dtype),
                u_b if u_b is not None else torch.zeros(u_w.shape[0], dtype=u_w.dtype)]))
        gu = self.linear(x, self.packed(f"{prefix}.gate_up_proj.weight", [g_w, u_w]), gu_b, f"{base}/gate_up_proj")
        width = plan.intermediate
        gate, up = w.node("Split", [gu, w.const(np.array([width, width], np.int64))], f"{base}/gate_up_proj/Split",
                          outputs=2, axis=-1)
        if self.layout.activation == "silu":
            act = w.node("QuickGelu", [gate], f"{base}/act_fn/QuickGelu", domain=MS_DOMAIN, alpha=1.0)[0]
        else:
            act = w.node("FastGelu", [gate], f"{base}/act_fn/FastGelu", domain=MS_DOMAIN)[0]
        hidden = w.node("Mul", [act, up], f"{base}/Mul")[0]
        d_w, d_b = src.projection(i, "down")
        return self.linear(hidden, self.weight(f"{prefix}.down_proj.weight", d_w, transpose=True),
                           None if d_b is None else self.weight(f"{prefix}.down_proj.bias", d_b), f"{base}/down_proj")

    def emit(self, plans: list[LayerPlan]) -> None:
        w, src, layout = self.w, self.source, self.layout
        hidden = self.config.hidden_size
        kv_dims = ["batch_size", None, "max_length", None]
        w.input("input_ids", ONNX_INT64, ["batch_size", "sequence_length"])
        w.input("position_ids", ONNX_INT64, ["batch_size", "sequence_length"])
        w.input("total_sequence_length", ONNX_INT32, [])
        w.input("logits_index", ONNX_INT64, ["batch_size", "num_logits"])
        for plan in plans:
            for kind in ("key", "value"):
                w.input(f"past_key_values.{plan.index}.{kind}", self.elem,
                        [kv_dims[0], plan.kv_heads, kv_dims[2], plan.head_dim])
        w.output("logits", self.elem, ["batch_size", "num_logits", self.config.vocab_size])
        for plan in plans:
            for kind in ("key", "value"):
                w.output(f"present.{plan.index}.{kind}", self.elem,
                         [kv_dims[0], plan.kv_heads, kv_dims[2], plan.head_dim])

        # seqlens_k = max position of each row (its last real token), on the device
        if self.build.opset >= 18:  # axes became an input in opset 18
            top = w.node("ReduceMax", ["position_ids", w.const(np.array([1], np.int64))], "/model/seqlens/ReduceMax",
                         keepdims=0)[0]
        else:
            top = w.node("ReduceMax", ["position_ids"], "/model/seqlens/ReduceMax", axes=[1], keepdims=0)[0]
        seqlens = w.node("Cast", [top], "/model/seqlens/Cast", to=ONNX_INT32)[0]

        embedding = self.weight("model.embed_tokens.weight", src.embedding())
        h = w.node("Gather", [embedding, "input_ids"], "/model/embed_tokens/Gather", axis=0)[0]
        if layout.embedding_scale:
            scale = w.const(np.array(layout.embedding_scale, dtype=self.np_dtype), "/model/embed_tokens/scale")
            h = w.node("Mul", [h, scale], "/model/embed_tokens/Mul")[0]
        residual, pending = h, None
        offset = layout.norm_offset
        for plan in progress(plans):
            i = plan.index
            norm_in = self.weight(f"model.layers.{i}.input_layernorm.weight", src.norm(i, "input"), offset=offset)
            if pending is None:
                x = self.rms(residual, norm_in, f"/model/layers.{i}/input_layernorm/SimplifiedLayerNormalization")
            else:
                x, residual = self.skip_rms(residual, pending, norm_in,
                                            f"/model/layers.{i}/input_layernorm/SkipLayerNorm")
            attn = self.attention(i, plan, x, seqlens)
            post = self.weight(f"model.layers.{i}.post_attention_layernorm.weight", src.norm(i, "post_attention"),
                               offset=offset)
            if layout.sandwich_norms:
                attn = self.rms(attn, post, f"/model/layers.{i}/post_attention_layernorm/SimplifiedLayerNormalization")
                pre_ff = self.weight(f"model.layers.{i}.pre_feedforward_layernorm.weight",
                                     src.norm(i, "pre_feedforward"), offset=offset)
                x, residual = self.skip_rms(residual, attn, pre_ff,
                                            f"/model/layers.{i}/pre_feedforward_layernorm/SkipLayerNorm")
            else:
                x, residual = self.skip_rms(residual, attn, post,
                                            f"/model/layers.{i}/post_attention_layernorm/SkipLayerNorm")
            pending = self.mlp(i, plan, x)
            if layout.sandwich_norms:
                post_ff = self.weight(f"model.layers.{i}.post_feedforward_layernorm.weight",
                                      src.norm(i, "post_feedforward"), offset=offset)
                pending = self.rms(pending, post_ff,
                                   f"/model/layers.{i}/post_feedforward_layernorm/SimplifiedLayerNormalization")
        final = self.weight("model.norm.weight", src.final_norm(), offset=offset)
        if pending is None:
            out = self.rms(residual, final, "/model/norm/SimplifiedLayerNormalization")
        else:
            out, _ = self.skip_rms(residual, pending, final, "/model/norm/SkipLayerNorm", keep_sum=False)

        flat = w.node("Reshape", [out, w.const(np.array([-1, hidden], np.int64))], "/lm_head/Reshape")[0]
        picked = w.node("Gather", [flat, "logits_index"], "/lm_head/Gather", axis=0)[0]
        head = src.lm_head()
        logits_name = "logits" if not layout.final_logit_softcapping else "/lm_head/logits"
        if head is None:  # tied: the embedding matrix, read transposed by the kernel (no second copy)
            w.node("FusedMatMul", [picked, embedding], "/lm_head/FusedMatMul", outputs=[logits_name],
                   domain=MS_DOMAIN, transB=1)
        else:
            w.node("MatMul", [picked, self.weight("lm_head.weight", head, transpose=True)], "/lm_head/MatMul",
                   outputs=[logits_name])
        if layout.final_logit_softcapping:
            cap = w.const(np.array(layout.final_logit_softcapping, dtype=self.np_dtype), "/lm_head/softcap")
            t = w.node("Tanh", [w.node("Div", [logits_name, cap], "/lm_head/softcap/Div")[0]], "/lm_head/softcap/Tanh")
            w.node("Mul", [t[0], cap], "/lm_head/softcap/Mul", outputs=["logits"])


def progress(items):
    from optimum_subnet.core.progress import progress_bar

    with progress_bar(total=len(items), desc="Building ONNX layers", unit="layer") as bar:
        for item in items:
            yield item
            bar.update(1)


def check_family(config):
    """The adapter of ``config``'s family, refusing one the direct builder does not write (one line)."""
    from optimum_subnet.families import get_adapter_for_subnet

    adapter = get_adapter_for_subnet(config)
    if not getattr(adapter, "direct_onnx", False):
        raise UnsupportedModelError(f"the direct ONNX builder does not support the {config.model_type!r} family "
                                    f"yet; export it with builder=\"torch\"")
    return adapter


def check_buildable(config) -> None:
    """Raise the one-line reason why the direct builder cannot write ``config`` (family, activation, rotary
    scaling, head sizes); return quietly when it can. Reads no weights."""
    adapter = check_family(config)
    adapter.graph_layout(config)
    adapter.rope_tables(config, 2)
    plan_layers(config, adapter)


def build_decoder(source, config, folder: str | Path, build: BuildConfig | None = None, *,
                  file_name: str = "model.onnx") -> dict[str, Any]:
    """Write the decoder graph of ``config`` (weights from ``source``: a PyTorch model or a
    :class:`~optimum_subnet.onnx.builder.weights.WeightSource`) into ``folder``; returns a summary."""
    from optimum_subnet.onnx.builder.weights import ModelWeights

    build = build or BuildConfig()
    adapter = check_family(config)
    if not isinstance(source, ModelWeights) and hasattr(source, "config") and hasattr(source, "forward"):
        source = ModelWeights(source, adapter)
    plans = plan_layers(config, adapter, build.force_explicit_rotary)
    positions = int(build.max_positions or config.max_position_embeddings)
    itemsize = 2 if build.dtype == "fp16" else 4
    estimate = _param_count(config, plans) * itemsize
    external = build.external_data if build.external_data is not None else estimate > EXTERNAL_DATA_BYTES
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = GraphWriter(folder, file_name, external=external)
    start = time.perf_counter()
    try:
        builder = _Builder(config, adapter, source, writer, build, positions)
        builder.emit(plans)
        writer.metadata[GRAPH_KEY] = f"{GRAPH_KIND}/{GRAPH_VERSION}"
        writer.metadata[LAYERS_KEY] = json.dumps([p.summary() for p in plans])
        writer.metadata["optimum_subnet.max_positions"] = str(positions)
        writer.save(build.opset)
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    counts = {kind: sum(p.rotary == kind for p in plans) for kind in ("fused", "explicit", "none")}
    weight_bytes = sum(writer.initializer_bytes[n] for n in builder.weight_names)
    summary = {"builder": "direct", "seconds": seconds, "nodes": len(writer.nodes), "layers": len(plans),
               "rotary": counts, "weight_bytes": weight_bytes,
               "other_initializer_bytes": sum(writer.initializer_bytes.values()) - weight_bytes,
               "external_data": external, "max_positions": positions, "dtype": build.dtype,
               "op_counts": _op_counts(writer.nodes)}
    logger.info("Built the ONNX decoder directly: %d layers, %d nodes (%d in-kernel rotary, %d explicit), "
                "%.2f GB of weights in %.1f s", len(plans), len(writer.nodes), counts["fused"], counts["explicit"],
                weight_bytes / 1e9, seconds)
    return summary


def _op_counts(nodes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _param_count(config, plans: list[LayerPlan]) -> int:
    hidden = config.hidden_size
    count = 2 * config.vocab_size * hidden
    for p in plans:
        count += 2 * hidden * (p.heads + p.kv_heads) * p.head_dim + 3 * hidden * p.intermediate
    return count


def read_graph_info(path: str | Path) -> dict[str, Any] | None:
    """The builder's metadata of an ONNX file (``None``: not a directly built decoder graph); reads no weights."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if not meta.get(GRAPH_KEY, "").startswith(GRAPH_KIND):
        return None
    return {"version": meta[GRAPH_KEY].split("/")[-1], "layers": json.loads(meta.get(LAYERS_KEY, "[]")),
            "max_positions": int(meta.get("optimum_subnet.max_positions", 0)) or None}
