"""Phi3 causal LM whose decoder layers have their own widths (a physically smaller subnet).

Copied beside saved weights (with ``subnet_modeling.py`` and the configuration files) so that
``trust_remote_code=True`` loads a subnet without optimum-subnet installed. Everything but the
family's classes is the generic per-layer construction in ``subnet_modeling``.
"""

from transformers.models.phi3.modeling_phi3 import (
    Phi3DecoderLayer,
    Phi3ForCausalLM,
    Phi3Model,
    Phi3PreTrainedModel,
    eager_attention_forward,
)

from ..subnet_modeling import SubnetAttention, init_subnet_causal_lm, init_subnet_model, original_head_dim
from .configuration_subnet_phi3 import SubnetPhi3Config


def dense_softmax_scale(config) -> float:
    """The dense model's softmax scale (1/sqrt(original head size))."""
    return original_head_dim(config) ** -0.5


class SubnetPhi3PreTrainedModel(Phi3PreTrainedModel):
    config_class = SubnetPhi3Config
    config: SubnetPhi3Config
    _no_split_modules = ["Phi3DecoderLayer"]
    _can_record_outputs = {"hidden_states": Phi3DecoderLayer, "attentions": SubnetAttention}


class SubnetPhi3Model(SubnetPhi3PreTrainedModel, Phi3Model):
    def __init__(self, config: SubnetPhi3Config):
        init_subnet_model(self, Phi3Model, config, Phi3DecoderLayer, eager_attention_forward, dense_softmax_scale)


class SubnetPhi3ForCausalLM(SubnetPhi3PreTrainedModel, Phi3ForCausalLM):
    def __init__(self, config: SubnetPhi3Config):
        init_subnet_causal_lm(self, SubnetPhi3PreTrainedModel, SubnetPhi3Model, config)


__all__ = ["SubnetPhi3ForCausalLM", "SubnetPhi3Model", "SubnetPhi3PreTrainedModel"]
