"""Adapter for LLaMA-architecture models (``model_type == "llama"``, e.g. SmolLM2, LLaMA 1/2/3).

Layout facts used here: ``model.model.layers[i].self_attn.{q,k,v,o}_proj`` and
``.mlp.{gate,up,down}_proj``; query head ``h`` belongs to KV head ``h // (n_q / n_kv)``; rows of
W_Q for head ``h`` are ``h * head_dim + c``; RoPE rotates channel ``c`` with ``c + head_dim / 2``
(``rotate_half``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from optimum_subnet.core.spec import LayerSpec, ModelShape, SubnetSpec
from optimum_subnet.families.base import ModelAdapter


class LlamaAdapter(ModelAdapter):
    model_types = ("llama",)
    subnet_model_type = "subnet_llama"

    def shape(self, config) -> ModelShape:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return ModelShape(
            model_type=config.model_type,
            hidden_size=config.hidden_size,
            num_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            attention_bias=bool(getattr(config, "attention_bias", False)),
            mlp_bias=bool(getattr(config, "mlp_bias", False)),
            rope=True,
        )

    # ------------------------------------------------------------------------------ modules
    def decoder_layers(self, model) -> nn.ModuleList:
        return model.model.layers

    def embed(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        return model.model.embed_tokens(input_ids)

    def layer_call_kwargs(self, model, hidden_states: torch.Tensor) -> dict[str, Any]:
        from transformers.masking_utils import create_causal_mask

        seq_len = hidden_states.shape[1]
        cache_position = torch.arange(seq_len, device=hidden_states.device)
        position_ids = cache_position.unsqueeze(0)
        mask = create_causal_mask(
            config=model.config,
            input_embeds=hidden_states,
            attention_mask=None,
            cache_position=cache_position,
            past_key_values=None,
            position_ids=position_ids,
        )
        return {
            "attention_mask": mask,
            "position_ids": position_ids,
            "cache_position": cache_position,
            "position_embeddings": model.model.rotary_emb(hidden_states, position_ids),
        }

    def site_modules(self, layer) -> dict[str, nn.Module]:
        return {
            "attn_in": layer.self_attn.q_proj,
            "attn_out": layer.self_attn.o_proj,
            "mlp_in": layer.mlp.gate_proj,
            "mlp_out": layer.mlp.down_proj,
        }

    def linears(self, layer) -> dict[str, nn.Linear]:
        attn, mlp = layer.self_attn, layer.mlp
        return {
            "q": attn.q_proj,
            "k": attn.k_proj,
            "v": attn.v_proj,
            "o": attn.o_proj,
            "gate": mlp.gate_proj,
            "up": mlp.up_proj,
            "down": mlp.down_proj,
        }

    def attention_sublayer(self, layer, hidden_states: torch.Tensor, kwargs: dict) -> torch.Tensor:
        attn_out, _ = layer.self_attn(
            hidden_states=layer.input_layernorm(hidden_states),
            attention_mask=kwargs["attention_mask"],
            position_embeddings=kwargs["position_embeddings"],
        )
        return hidden_states + attn_out

    def mlp_input(self, layer, hidden_states: torch.Tensor) -> torch.Tensor:
        return layer.post_attention_layernorm(hidden_states)

    # ------------------------------------------------------------------------------ surgery
    def subnet_model_class(self) -> type:
        from optimum_subnet.families.auto import SubnetLlamaForCausalLM

        return SubnetLlamaForCausalLM

    def subnet_config(self, config, spec: SubnetSpec):
        from optimum_subnet.families.auto import SubnetLlamaConfig

        shape = spec.shape
        data = config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path"):
            data.pop(key, None)
        data["head_dim"] = shape.head_dim
        data["num_hidden_layers"] = len(spec.layers)
        data["subnet_layers"] = [
            {
                "source_layer": layer.source_index,
                "num_attention_heads": layer.num_kv_heads * shape.group_size,
                "num_key_value_heads": layer.num_kv_heads,
                "head_dim": layer.head_dim,
                "rope_channels": [list(c) for c in layer.attention_channels],
                "intermediate_size": layer.intermediate_size,
                "attention_out_bias": layer.attention_out_bias,
                "mlp_out_bias": layer.mlp_out_bias,
            }
            for layer in spec.layers
        ]
        sub = SubnetLlamaConfig(**data)
        sub.architectures = ["SubnetLlamaForCausalLM"]
        sub._attn_implementation = getattr(config, "_attn_implementation", None) or "sdpa"
        return sub

    def kept_rows(self, layer_spec: LayerSpec, shape: ModelShape) -> dict[str, torch.Tensor]:
        hd, group = shape.head_dim, shape.group_size
        # numpy converts long Python int lists several times faster than torch.tensor (a per-candidate cost)
        heads = torch.from_numpy(np.array(layer_spec.kv_heads, dtype=np.int64))
        channels = torch.from_numpy(np.array(layer_spec.attention_channels, dtype=np.int64))  # (kv, width)
        kv = (heads[:, None] * hd + channels).reshape(-1)
        q_heads = heads[:, None] * group + torch.arange(group)  # each KV head's query heads, in order
        q = (q_heads[:, :, None] * hd + channels[:, None, :]).reshape(-1)
        mlp = torch.from_numpy(np.array(layer_spec.mlp_channels, dtype=np.int64))
        return {"q": q, "k": kv, "v": kv, "o": q, "gate": mlp, "up": mlp, "down": mlp}

    def slice_state_dict(self, model, spec: SubnetSpec) -> dict[str, torch.Tensor]:
        shape = spec.shape
        layers = self.decoder_layers(model)
        state: dict[str, torch.Tensor] = {
            "model.embed_tokens.weight": model.model.embed_tokens.weight,
            "model.norm.weight": model.model.norm.weight,
        }
        state["lm_head.weight"] = model.lm_head.weight
        for new_index, layer_spec in enumerate(spec.layers):
            layer = layers[layer_spec.source_index]
            rows = self.kept_rows(layer_spec, shape)
            prefix = f"model.layers.{new_index}."
            state[prefix + "input_layernorm.weight"] = layer.input_layernorm.weight
            state[prefix + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
            for role, linear in self.linears(layer).items():
                name = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                        "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
                        "down": "mlp.down_proj"}[role]
                index = rows[role].to(linear.weight.device)
                if role in ("o", "down"):
                    state[prefix + name + ".weight"] = linear.weight.index_select(1, index)
                    if linear.bias is not None:
                        state[prefix + name + ".bias"] = linear.bias
                    elif (role == "o" and layer_spec.attention_out_bias) or (
                        role == "down" and layer_spec.mlp_out_bias
                    ):
                        state[prefix + name + ".bias"] = linear.weight.new_zeros(linear.weight.shape[0])
                else:
                    state[prefix + name + ".weight"] = linear.weight.index_select(0, index)
                    if linear.bias is not None:
                        state[prefix + name + ".bias"] = linear.bias.index_select(0, index)
        return state
