"""Heterogeneous decoder layers for any supported family: one generic per-layer-width construction.

Self-contained (imports only torch and transformers) because it is copied beside saved weights
(with the family's thin ``modeling_subnet_<family>.py``) so that ``trust_remote_code=True`` loads a
subnet without optimum-subnet installed.

How a subnet layer is built (:func:`build_subnet_layer`): the family's *own* decoder layer class is
instantiated with a shallow copy of the config carrying that layer's head counts, head size and MLP
width (so projections, q/k norms, sandwich norms and fused projections come out at the right sizes
with the family's own modules and parameter names); then its attention module is wrapped in
:class:`SubnetAttention`, which adopts the family module's children and adds what a pruned layer
needs:

* rotary embedding with the cos/sin of the *original* channels each KV head kept (channels are kept
  in RoPE pairs, so a kept channel rotates at its original frequency; partial-rotary families pass the
  non-rotated channels through);
* the dense model's softmax scale (a subnet keeps the dense temperature, Shen et al. 2024, Sec. 3.1);
* optional output biases on o_proj / down_proj (bias compensation of baselines such as FLAP).

The family's decoder layer forward (norm placement, residuals) and model forward (masks per layer
type, rotary tables, logit softcapping) run unchanged. Attention goes through transformers'
attention interface (eager / sdpa / any registered function), so tools hooking that interface (AtMan)
work on subnets as on dense models.

Per-layer entries (``config.subnet_layers[i]``): ``source_layer``, ``num_attention_heads``,
``num_key_value_heads``, ``head_dim``, ``rope_channels`` (per KV head, the original channels it keeps;
``None``: all), ``intermediate_size``, ``attention_out_bias``, ``mlp_out_bias``, and optionally
``softmax_scale`` (the dense model's; default: the family's formula at the original head size).
"""

import copy
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def layer_config(config, index: int):
    """A shallow copy of ``config`` with layer ``index``'s widths, for the family's own constructors."""
    entry = config.subnet_layers[index]
    layer = copy.copy(config)
    layer.__dict__["subnet_layers"] = None  # the copy describes one layer; never serialized
    layer.num_attention_heads = entry["num_attention_heads"]
    layer.num_key_value_heads = entry["num_key_value_heads"]
    layer.head_dim = entry["head_dim"]
    layer.intermediate_size = entry["intermediate_size"]
    return layer


def original_head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rotary_dim(config) -> int:
    """Channels of a head that rotate (partial rotary: the first ``partial_rotary_factor`` of them)."""
    return int(original_head_dim(config) * getattr(config, "partial_rotary_factor", 1.0))


class SubnetAttention(nn.Module):
    """Attention with this layer's own head count and head size, around the family's projections.

    ``family_attention`` is the family's attention module built at this layer's widths; its children
    (``q_proj`` ... or ``qkv_proj``, ``o_proj``, ``q_norm`` / ``k_norm``) are adopted under the same
    names, so the state dict reads like the family's.
    """

    def __init__(self, family_attention: nn.Module, config, layer_idx: int, eager_attention: Callable,
                 default_scale: float, qk_norm_after_transpose: bool = False):
        super().__init__()
        entry = config.subnet_layers[layer_idx]
        for name, child in family_attention.named_children():
            setattr(self, name, child)
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = entry["num_attention_heads"]
        self.num_key_value_heads = entry["num_key_value_heads"]
        self.head_dim = entry["head_dim"]
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = entry.get("softmax_scale") or default_scale
        self.attention_dropout = getattr(config, "attention_dropout", 0.0)
        self.is_causal = getattr(family_attention, "is_causal", True)
        self.is_sliding = getattr(family_attention, "is_sliding", False)
        # a layer's own window (Qwen2, Gemma3) or the model's (Mistral, Phi-3); LLaMA has none
        self.sliding_window = getattr(family_attention, "sliding_window", getattr(config, "sliding_window", None))
        self.softcap = getattr(family_attention, "attn_logit_softcapping", None)
        self._eager_attention = eager_attention
        self.fused_qkv = hasattr(self, "qkv_proj")
        # where the family applies its q/k norms (Qwen3: on (batch, seq, heads, dim), Gemma3: after the
        # transpose): the same place, so an all-kept layer runs the family's exact operations
        self.qk_norm_after_transpose = qk_norm_after_transpose
        self._rotary_dim = rotary_dim(config)
        self._setup_rotary(entry.get("rope_channels"), original_head_dim(config))

    # ------------------------------------------------------------------------------ rotary
    def _setup_rotary(self, rope, head_dim: int) -> None:
        """Per KV head, which original channel each kept channel is (for its cos/sin), and its RoPE
        partner inside the kept head (``rotate_half`` pairs ``i`` with ``i + d/2``). Vectorized: at 7B
        shape a layer keeps ~4K channels, and this runs for every search candidate built."""
        self.rope_mode = "full"
        if rope is None:
            return
        channels = np.asarray([np.asarray(c, dtype=np.int64) for c in rope])  # (kv heads, kept channels)
        if channels.shape[1] == head_dim and (channels == np.arange(head_dim)).all():
            return
        r = self._rotary_dim
        shared = bool((channels == channels[:1]).all())
        heads = channels[:1] if shared else channels
        rows, kept = heads.shape
        half = kept // 2
        position = np.full((rows, head_dim), -1, dtype=np.int64)
        np.put_along_axis(position, heads, np.arange(kept)[None, :].repeat(rows, 0), axis=1)
        rotated = heads < r
        low = heads < r // 2
        mate = np.where(low, heads + r // 2, heads - r // 2)
        mate_position = np.take_along_axis(position, np.where(rotated, mate, 0), axis=1)
        p = np.arange(kept)[None, :]
        index = np.where(rotated, heads, r)  # pass-through channel (partial rotary): cos 1, sin 0
        partner = np.where(rotated, mate_position, p)
        sign = np.where(rotated, np.where(low, -1.0, 1.0), 0.0)
        # the kept layout is rotate_half's: every channel paired with the one d'/2 away
        standard = bool(rotated.all() and (mate_position == np.where(p < half, p + half, p - half)).all())
        self.rope_mode = ("shared" if shared else "per_head") + ("" if standard else "_gather")
        self.register_buffer("rope_index", torch.from_numpy(index), persistent=False)
        if not standard:
            self.register_buffer("rope_partner", torch.from_numpy(partner), persistent=False)
            self.register_buffer("rope_sign", torch.from_numpy(sign).to(torch.get_default_dtype()), persistent=False)

    def _tables(self, cos: torch.Tensor, sin: torch.Tensor, heads: int):
        """cos/sin (batch, seq, rotary dim) -> this layer's tables for ``heads`` heads: (b, 1 or heads, s, d')."""
        index = self.rope_index.to(cos.device)
        if self.rope_mode.endswith("_gather"):  # pass-through channels read cos 1, sin 0
            cos = torch.cat([cos, cos.new_ones(cos.shape[:-1] + (1,))], dim=-1)
            sin = torch.cat([sin, sin.new_zeros(sin.shape[:-1] + (1,))], dim=-1)
        b, s, _ = cos.shape
        rows = index.shape[0]
        cos = cos.index_select(-1, index.reshape(-1)).view(b, s, rows, self.head_dim).transpose(1, 2)
        sin = sin.index_select(-1, index.reshape(-1)).view(b, s, rows, self.head_dim).transpose(1, 2)
        if rows > 1 and heads != rows:
            cos = cos.repeat_interleave(heads // rows, dim=1)
            sin = sin.repeat_interleave(heads // rows, dim=1)
        return cos, sin

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        heads = x.shape[1]
        cos_l, sin_l = self._tables(cos, sin, heads)
        if not self.rope_mode.endswith("_gather"):
            return (x * cos_l) + (rotate_half(x) * sin_l)
        partner = self.rope_partner.to(x.device)
        sign = self.rope_sign.to(x.device, x.dtype)
        rows = partner.shape[0]
        if rows > 1 and heads != rows:
            partner = partner.repeat_interleave(heads // rows, dim=0)
            sign = sign.repeat_interleave(heads // rows, dim=0)
        mate = torch.gather(x, -1, partner[None, :, None, :].expand_as(x)) if rows > 1 else x.index_select(-1, partner[0])
        return (x * cos_l) + (mate * sign[None, :, None, :]) * sin_l

    # ------------------------------------------------------------------------------ forward
    def _project(self, hidden_states: torch.Tensor):
        if self.fused_qkv:
            qkv = self.qkv_proj(hidden_states)
            q_size = self.num_heads * self.head_dim
            kv_size = self.num_key_value_heads * self.head_dim
            return qkv[..., :q_size], qkv[..., q_size:q_size + kv_size], qkv[..., q_size + kv_size:]
        return self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple,
        attention_mask: Optional[torch.Tensor],
        past_key_values=None,
        cache_position: Optional[torch.LongTensor] = None,
        **kwargs,
    ):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query, key, value = self._project(hidden_states)
        query, key, value = query.view(hidden_shape), key.view(hidden_shape), value.view(hidden_shape)
        norms = hasattr(self, "q_norm")  # per-head RMSNorm before RoPE (Qwen3, Gemma3)
        if norms and not self.qk_norm_after_transpose:
            query, key = self.q_norm(query), self.k_norm(key)
        query_states, key_states, value_states = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        if norms and self.qk_norm_after_transpose:
            query_states, key_states = self.q_norm(query_states), self.k_norm(key_states)

        cos, sin = position_embeddings
        if self.rope_mode == "full":
            rot = cos.shape[-1]
            c, s = cos.unsqueeze(1), sin.unsqueeze(1)
            if rot == self.head_dim:
                query_states = (query_states * c) + (rotate_half(query_states) * s)
                key_states = (key_states * c) + (rotate_half(key_states) * s)
            else:  # partial rotary: the first ``rot`` channels rotate, the rest pass through
                q_rot, q_pass = query_states[..., :rot], query_states[..., rot:]
                k_rot, k_pass = key_states[..., :rot], key_states[..., rot:]
                query_states = torch.cat([(q_rot * c) + (rotate_half(q_rot) * s), q_pass], dim=-1)
                key_states = torch.cat([(k_rot * c) + (rotate_half(k_rot) * s), k_pass], dim=-1)
        else:
            query_states = self._rotate(query_states, cos, sin)
            key_states = self._rotate(key_states, cos, sin)

        if past_key_values is not None:
            cache_kwargs = {"sin": sin, "cos": cos, "cache_position": cache_position}
            key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx, cache_kwargs)

        attention_interface: Callable = self._eager_attention
        if self.config._attn_implementation != "eager":
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        extra = {"sliding_window": self.sliding_window}
        if self.softcap is not None:
            extra["softcap"] = self.softcap
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **extra,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


def _with_bias(linear: nn.Linear) -> nn.Linear:
    """The same projection with a (zero) bias, for bias compensation / reformation intercepts."""
    if linear.bias is not None:
        return linear
    new = nn.Linear(linear.in_features, linear.out_features, bias=True, device=linear.weight.device,
                    dtype=linear.weight.dtype)
    new.weight = linear.weight
    with torch.no_grad():
        if new.bias.device.type != "meta":
            new.bias.zero_()
    return new


def build_subnet_layer(config, index: int, decoder_layer_cls, eager_attention: Callable,
                       default_scale: Callable, qk_norm_after_transpose: bool = False) -> nn.Module:
    """The family's decoder layer at layer ``index``'s widths, with :class:`SubnetAttention`."""
    entry = config.subnet_layers[index]
    layer = decoder_layer_cls(layer_config(config, index), index)
    layer.self_attn = SubnetAttention(layer.self_attn, config, index, eager_attention, default_scale(config),
                                      qk_norm_after_transpose)
    if entry.get("attention_out_bias"):
        layer.self_attn.o_proj = _with_bias(layer.self_attn.o_proj)
    if entry.get("mlp_out_bias"):
        layer.mlp.down_proj = _with_bias(layer.mlp.down_proj)
    return layer


def init_subnet_model(model: nn.Module, family_model_cls, config, decoder_layer_cls, eager_attention: Callable,
                      default_scale: Callable, qk_norm_after_transpose: bool = False) -> None:
    """``family_model_cls.__init__`` without its dense layers, then one subnet layer per entry.

    The family constructor runs on a copy of the config with no layers (embeddings, final norm and
    rotary tables are the family's own, built from the dense sizes); the layers are then built at
    their own widths, so no dense-sized layer is ever allocated.
    """
    empty = copy.copy(config)
    empty.num_hidden_layers = 0
    family_model_cls.__init__(model, empty)
    if getattr(config, "_attn_implementation_internal", None) is None:
        config._attn_implementation_internal = empty._attn_implementation_internal
    model.config = config
    model.layers = nn.ModuleList(
        [build_subnet_layer(config, i, decoder_layer_cls, eager_attention, default_scale, qk_norm_after_transpose)
         for i in range(config.num_hidden_layers)]
    )
    model.post_init()


def init_subnet_causal_lm(model: nn.Module, pretrained_cls, subnet_model_cls, config) -> None:
    """A family's ``...ForCausalLM.__init__`` with the subnet body."""
    pretrained_cls.__init__(model, config)
    model.model = subnet_model_cls(config)
    model.vocab_size = config.vocab_size
    model.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
    model.post_init()
