from .configuration_subnet_llama import SubnetLlamaConfig
from .modeling_subnet_llama import SubnetLlamaForCausalLM, SubnetLlamaModel

__all__ = ["SubnetLlamaConfig", "SubnetLlamaForCausalLM", "SubnetLlamaModel"]
