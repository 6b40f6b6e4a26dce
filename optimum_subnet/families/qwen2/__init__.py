from optimum_subnet.families.qwen2.configuration_subnet_qwen2 import SubnetQwen2Config
from optimum_subnet.families.qwen2.modeling_subnet_qwen2 import SubnetQwen2ForCausalLM, SubnetQwen2Model

__all__ = ["SubnetQwen2Config", "SubnetQwen2ForCausalLM", "SubnetQwen2Model"]
