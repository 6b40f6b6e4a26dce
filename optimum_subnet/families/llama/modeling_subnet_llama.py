"""LLaMA-family causal LM whose decoder layers have their own widths (a physically smaller subnet).

Self-contained (imports only transformers and torch) because it is copied beside saved weights so
that ``trust_remote_code=True`` loads a subnet without optimum-subnet installed.

Differences from :mod:`transformers.models.llama.modeling_llama`, all per layer:

* attention projections sized ``num_heads * head_dim`` of the layer (channels pruned inside heads);
* rotary embedding applied with the cos/sin of the *original* channels the layer kept (channels are
  kept in RoPE pairs, so ``rotate_half`` pairs the same channels as in the dense model);
* softmax scale of the original head size (the subnet keeps the dense model's temperature);
* MLP sized ``intermediate_size`` of the layer; optional output biases (for bias compensation).

Attention goes through transformers' attention interface (eager / sdpa / any registered function),
so tools that hook that interface work on subnets as on dense models.
"""

from typing import Callable, Optional

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    eager_attention_forward,
    rotate_half,
)

from .configuration_subnet_llama import SubnetLlamaConfig


class SubnetLlamaMLP(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        spec = config.subnet_layers[layer_idx]
        self.hidden_size = config.hidden_size
        self.intermediate_size = spec["intermediate_size"]
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        out_bias = bool(config.mlp_bias or spec.get("mlp_out_bias", False))
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=out_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class SubnetLlamaAttention(nn.Module):
    """Multi-head attention with this layer's own head count and head size."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        spec = config.subnet_layers[layer_idx]
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = spec["num_attention_heads"]
        self.num_key_value_heads = spec["num_key_value_heads"]
        self.head_dim = spec["head_dim"]
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        # The softmax temperature of the dense model: 1/sqrt(original head size).
        self.scaling = config.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True

        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(hidden, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(hidden, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        out_bias = bool(config.attention_bias or spec.get("attention_out_bias", False))
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=out_bias)

        # Which original rotary channels each KV head kept. None: all of them (dense layer).
        rope = spec.get("rope_channels")
        full = list(range(config.head_dim))
        self.rope_mode = "full"
        if rope is not None and not all(list(c) == full for c in rope):
            if all(list(c) == list(rope[0]) for c in rope):
                self.rope_mode = "shared"
                index = torch.tensor(rope[0], dtype=torch.long)
            else:
                self.rope_mode = "per_head"
                index = torch.tensor(rope, dtype=torch.long).reshape(-1)
            self.register_buffer("rope_index", index, persistent=False)

    def _layer_rotary(self, cos: torch.Tensor, sin: torch.Tensor):
        """cos/sin of shape (batch, seq, original head_dim) -> per-head tables for q and k."""
        if self.rope_mode == "full":
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            return (cos, sin), (cos, sin)
        index = self.rope_index.to(cos.device)
        if self.rope_mode == "shared":
            cos, sin = cos.index_select(-1, index).unsqueeze(1), sin.index_select(-1, index).unsqueeze(1)
            return (cos, sin), (cos, sin)
        b, s, _ = cos.shape
        cos_k = cos.index_select(-1, index).view(b, s, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        sin_k = sin.index_select(-1, index).view(b, s, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        cos_q = cos_k.repeat_interleave(self.num_key_value_groups, dim=1)
        sin_q = sin_k.repeat_interleave(self.num_key_value_groups, dim=1)
        return (cos_q, sin_q), (cos_k, sin_k)

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

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        (cos_q, sin_q), (cos_k, sin_k) = self._layer_rotary(cos, sin)
        query_states = (query_states * cos_q) + (rotate_half(query_states) * sin_q)
        key_states = (key_states * cos_k) + (rotate_half(key_states) * sin_k)

        if past_key_values is not None:
            cache_kwargs = {"sin": sin, "cos": cos, "cache_position": cache_position}
            key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx, cache_kwargs)

        attention_interface: Callable = eager_attention_forward
        if self.config._attn_implementation != "eager":
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]

        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights


class SubnetLlamaDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = SubnetLlamaAttention(config=config, layer_idx=layer_idx)
        self.mlp = SubnetLlamaMLP(config, layer_idx)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values=None,
        use_cache: Optional[bool] = False,
        cache_position: Optional[torch.LongTensor] = None,
        position_embeddings: Optional[tuple] = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            cache_position=cache_position,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states


class SubnetLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = SubnetLlamaConfig
    config: SubnetLlamaConfig
    _no_split_modules = ["SubnetLlamaDecoderLayer"]
    _can_record_outputs = {
        "hidden_states": SubnetLlamaDecoderLayer,
        "attentions": SubnetLlamaAttention,
    }


class SubnetLlamaModel(SubnetLlamaPreTrainedModel, LlamaModel):
    def __init__(self, config: SubnetLlamaConfig):
        SubnetLlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [SubnetLlamaDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class SubnetLlamaForCausalLM(SubnetLlamaPreTrainedModel, LlamaForCausalLM):
    def __init__(self, config: SubnetLlamaConfig):
        SubnetLlamaPreTrainedModel.__init__(self, config)
        self.model = SubnetLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


__all__ = [
    "SubnetLlamaForCausalLM",
    "SubnetLlamaModel",
    "SubnetLlamaPreTrainedModel",
]
