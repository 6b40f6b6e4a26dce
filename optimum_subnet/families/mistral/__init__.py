from optimum_subnet.families.mistral.configuration_subnet_mistral import SubnetMistralConfig
from optimum_subnet.families.mistral.modeling_subnet_mistral import SubnetMistralForCausalLM, SubnetMistralModel

__all__ = ["SubnetMistralConfig", "SubnetMistralForCausalLM", "SubnetMistralModel"]
