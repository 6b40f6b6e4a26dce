"""Mistral causal LM whose decoder layers have their own widths (a physically smaller subnet).

Copied beside saved weights (with ``subnet_modeling.py`` and the configuration files) so that
``trust_remote_code=True`` loads a subnet without optimum-subnet installed. Everything but the
family's classes is the generic per-layer construction in ``subnet_modeling``.
"""

from transformers.models.mistral.modeling_mistral import (
    MistralDecoderLayer,
    MistralForCausalLM,
    MistralModel,
    MistralPreTrainedModel,
    eager_attention_forward,
)

from ..subnet_modeling import SubnetAttention, init_subnet_causal_lm, init_subnet_model, original_head_dim
from .configuration_subnet_mistral import SubnetMistralConfig


def dense_softmax_scale(config) -> float:
    """The dense model's softmax scale (1/sqrt(original head size))."""
    return original_head_dim(config) ** -0.5


class SubnetMistralPreTrainedModel(MistralPreTrainedModel):
    config_class = SubnetMistralConfig
    config: SubnetMistralConfig
    _no_split_modules = ["MistralDecoderLayer"]
    _can_record_outputs = {"hidden_states": MistralDecoderLayer, "attentions": SubnetAttention}


class SubnetMistralModel(SubnetMistralPreTrainedModel, MistralModel):
    def __init__(self, config: SubnetMistralConfig):
        init_subnet_model(self, MistralModel, config, MistralDecoderLayer, eager_attention_forward, dense_softmax_scale)


class SubnetMistralForCausalLM(SubnetMistralPreTrainedModel, MistralForCausalLM):
    def __init__(self, config: SubnetMistralConfig):
        init_subnet_causal_lm(self, SubnetMistralPreTrainedModel, SubnetMistralModel, config)


__all__ = ["SubnetMistralForCausalLM", "SubnetMistralModel", "SubnetMistralPreTrainedModel"]
