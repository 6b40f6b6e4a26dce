"""A LLaMA-family subnet (``subnet_llama``, per-layer widths) with Primal-Attention layers
(``model_type = "primal_subnet_llama"``).

Copied beside saved weights with ``modeling_primal.py`` and the subnet's own modeling files; the
imports from the package are rewritten to the folder's (``from .modeling_subnet_llama``) on save.
Everything primal is in ``modeling_primal``; this file only declares the classes for this base.
"""

from ..families.llama.configuration_subnet_llama import SubnetLlamaConfig
from ..families.llama.modeling_subnet_llama import SubnetLlamaForCausalLM
from ..families.subnet_configuration import SubnetConfigMixin  # noqa: F401
from ..families.subnet_modeling import SubnetAttention  # noqa: F401
from .modeling_primal import PrimalConfigMixin, PrimalModelMixin

# The two unused imports above are for trust_remote_code: transformers copies only the *direct*
# relative imports of a local model's entry module into its module cache, and the subnet files
# import these two in turn.


class PrimalSubnetLlamaConfig(PrimalConfigMixin, SubnetLlamaConfig):
    model_type = "primal_subnet_llama"


class PrimalSubnetLlamaForCausalLM(PrimalModelMixin, SubnetLlamaForCausalLM):
    config_class = PrimalSubnetLlamaConfig


__all__ = ["PrimalSubnetLlamaConfig", "PrimalSubnetLlamaForCausalLM"]
