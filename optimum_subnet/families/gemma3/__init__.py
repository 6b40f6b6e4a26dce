from optimum_subnet.families.gemma3.configuration_subnet_gemma3 import SubnetGemma3TextConfig
from optimum_subnet.families.gemma3.modeling_subnet_gemma3 import SubnetGemma3TextForCausalLM, SubnetGemma3TextModel

__all__ = ["SubnetGemma3TextConfig", "SubnetGemma3TextForCausalLM", "SubnetGemma3TextModel"]
