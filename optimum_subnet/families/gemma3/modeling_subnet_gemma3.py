"""Gemma3Text causal LM whose decoder layers have their own widths (a physically smaller subnet).

Copied beside saved weights (with ``subnet_modeling.py`` and the configuration files) so that
``trust_remote_code=True`` loads a subnet without optimum-subnet installed. Everything but the
family's classes is the generic per-layer construction in ``subnet_modeling``.
"""

from transformers.models.gemma3.modeling_gemma3 import (
    Gemma3DecoderLayer,
    Gemma3ForCausalLM,
    Gemma3TextModel,
    Gemma3PreTrainedModel,
    eager_attention_forward,
)

from ..subnet_modeling import SubnetAttention, init_subnet_causal_lm, init_subnet_model
from .configuration_subnet_gemma3 import SubnetGemma3TextConfig


def dense_softmax_scale(config) -> float:
    """The dense model's softmax scale (Gemma's query_pre_attn_scalar)."""
    return config.query_pre_attn_scalar ** -0.5


class SubnetGemma3TextPreTrainedModel(Gemma3PreTrainedModel):
    config_class = SubnetGemma3TextConfig
    config: SubnetGemma3TextConfig
    _no_split_modules = ["Gemma3DecoderLayer"]
    _can_record_outputs = {"hidden_states": Gemma3DecoderLayer, "attentions": SubnetAttention}


class SubnetGemma3TextModel(SubnetGemma3TextPreTrainedModel, Gemma3TextModel):
    def __init__(self, config: SubnetGemma3TextConfig):
        init_subnet_model(self, Gemma3TextModel, config, Gemma3DecoderLayer, eager_attention_forward, dense_softmax_scale,
                          qk_norm_after_transpose=True)  # Gemma3 normalizes q/k after the transpose


class SubnetGemma3TextForCausalLM(SubnetGemma3TextPreTrainedModel, Gemma3ForCausalLM):
    def __init__(self, config: SubnetGemma3TextConfig):
        init_subnet_causal_lm(self, SubnetGemma3TextPreTrainedModel, SubnetGemma3TextModel, config)


__all__ = ["SubnetGemma3TextForCausalLM", "SubnetGemma3TextModel", "SubnetGemma3TextPreTrainedModel"]
