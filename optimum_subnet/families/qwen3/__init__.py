from optimum_subnet.families.qwen3.configuration_subnet_qwen3 import SubnetQwen3Config
from optimum_subnet.families.qwen3.modeling_subnet_qwen3 import SubnetQwen3ForCausalLM, SubnetQwen3Model

__all__ = ["SubnetQwen3Config", "SubnetQwen3ForCausalLM", "SubnetQwen3Model"]
