"""Qwen2 causal LM whose decoder layers have their own widths (a physically smaller subnet).

Copied beside saved weights (with ``subnet_modeling.py`` and the configuration files) so that
``trust_remote_code=True`` loads a subnet without optimum-subnet installed. Everything but the
family's classes is the generic per-layer construction in ``subnet_modeling``.
"""

from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2ForCausalLM,
    Qwen2Model,
    Qwen2PreTrainedModel,
    eager_attention_forward,
)

from ..subnet_modeling import SubnetAttention, init_subnet_causal_lm, init_subnet_model, original_head_dim
from .configuration_subnet_qwen2 import SubnetQwen2Config


def dense_softmax_scale(config) -> float:
    """The dense model's softmax scale (1/sqrt(original head size))."""
    return original_head_dim(config) ** -0.5


class SubnetQwen2PreTrainedModel(Qwen2PreTrainedModel):
    config_class = SubnetQwen2Config
    config: SubnetQwen2Config
    _no_split_modules = ["Qwen2DecoderLayer"]
    _can_record_outputs = {"hidden_states": Qwen2DecoderLayer, "attentions": SubnetAttention}


class SubnetQwen2Model(SubnetQwen2PreTrainedModel, Qwen2Model):
    def __init__(self, config: SubnetQwen2Config):
        init_subnet_model(self, Qwen2Model, config, Qwen2DecoderLayer, eager_attention_forward, dense_softmax_scale)


class SubnetQwen2ForCausalLM(SubnetQwen2PreTrainedModel, Qwen2ForCausalLM):
    def __init__(self, config: SubnetQwen2Config):
        init_subnet_causal_lm(self, SubnetQwen2PreTrainedModel, SubnetQwen2Model, config)


__all__ = ["SubnetQwen2ForCausalLM", "SubnetQwen2Model", "SubnetQwen2PreTrainedModel"]
