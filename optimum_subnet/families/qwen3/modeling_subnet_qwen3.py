"""Qwen3 causal LM whose decoder layers have their own widths (a physically smaller subnet).

Copied beside saved weights (with ``subnet_modeling.py`` and the configuration files) so that
``trust_remote_code=True`` loads a subnet without optimum-subnet installed. Everything but the
family's classes is the generic per-layer construction in ``subnet_modeling``.
"""

from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3DecoderLayer,
    Qwen3ForCausalLM,
    Qwen3Model,
    Qwen3PreTrainedModel,
    eager_attention_forward,
)

from ..subnet_modeling import SubnetAttention, init_subnet_causal_lm, init_subnet_model, original_head_dim
from .configuration_subnet_qwen3 import SubnetQwen3Config


def dense_softmax_scale(config) -> float:
    """The dense model's softmax scale (1/sqrt(original head size))."""
    return original_head_dim(config) ** -0.5


class SubnetQwen3PreTrainedModel(Qwen3PreTrainedModel):
    config_class = SubnetQwen3Config
    config: SubnetQwen3Config
    _no_split_modules = ["Qwen3DecoderLayer"]
    _can_record_outputs = {"hidden_states": Qwen3DecoderLayer, "attentions": SubnetAttention}


class SubnetQwen3Model(SubnetQwen3PreTrainedModel, Qwen3Model):
    def __init__(self, config: SubnetQwen3Config):
        init_subnet_model(self, Qwen3Model, config, Qwen3DecoderLayer, eager_attention_forward, dense_softmax_scale)


class SubnetQwen3ForCausalLM(SubnetQwen3PreTrainedModel, Qwen3ForCausalLM):
    def __init__(self, config: SubnetQwen3Config):
        init_subnet_causal_lm(self, SubnetQwen3PreTrainedModel, SubnetQwen3Model, config)


__all__ = ["SubnetQwen3ForCausalLM", "SubnetQwen3Model", "SubnetQwen3PreTrainedModel"]
