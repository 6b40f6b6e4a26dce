"""LLaMA-family causal LM whose decoder layers have their own widths (a physically smaller subnet).

Copied beside saved weights (with ``subnet_modeling.py`` and the configuration files) so that
``trust_remote_code=True`` loads a subnet without optimum-subnet installed. Everything but the
family's classes is the generic per-layer construction in ``subnet_modeling``.
"""

from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    eager_attention_forward,
)

from ..subnet_modeling import SubnetAttention, init_subnet_causal_lm, init_subnet_model, original_head_dim
from .configuration_subnet_llama import SubnetLlamaConfig


def dense_softmax_scale(config) -> float:
    return original_head_dim(config) ** -0.5


class SubnetLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = SubnetLlamaConfig
    config: SubnetLlamaConfig
    _no_split_modules = ["LlamaDecoderLayer"]
    _can_record_outputs = {"hidden_states": LlamaDecoderLayer, "attentions": SubnetAttention}


class SubnetLlamaModel(SubnetLlamaPreTrainedModel, LlamaModel):
    def __init__(self, config: SubnetLlamaConfig):
        init_subnet_model(self, LlamaModel, config, LlamaDecoderLayer, eager_attention_forward, dense_softmax_scale)


class SubnetLlamaForCausalLM(SubnetLlamaPreTrainedModel, LlamaForCausalLM):
    def __init__(self, config: SubnetLlamaConfig):
        init_subnet_causal_lm(self, SubnetLlamaPreTrainedModel, SubnetLlamaModel, config)


__all__ = ["SubnetLlamaForCausalLM", "SubnetLlamaModel", "SubnetLlamaPreTrainedModel"]
