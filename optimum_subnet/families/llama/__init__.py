from optimum_subnet.families.llama.configuration_subnet_llama import SubnetLlamaConfig
from optimum_subnet.families.llama.modeling_subnet_llama import SubnetLlamaForCausalLM, SubnetLlamaModel

__all__ = ["SubnetLlamaConfig", "SubnetLlamaForCausalLM", "SubnetLlamaModel"]
