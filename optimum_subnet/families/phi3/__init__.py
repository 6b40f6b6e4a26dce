from optimum_subnet.families.phi3.configuration_subnet_phi3 import SubnetPhi3Config
from optimum_subnet.families.phi3.modeling_subnet_phi3 import SubnetPhi3ForCausalLM, SubnetPhi3Model

__all__ = ["SubnetPhi3Config", "SubnetPhi3ForCausalLM", "SubnetPhi3Model"]
