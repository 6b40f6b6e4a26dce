"""optimum-subnet: training-free subnet search and weight reformation for causal LMs.

Importing the package registers the heterogeneous subnet model types with transformers'
``AutoConfig`` / ``AutoModelForCausalLM``, so saved subnets load with the usual Auto classes.
"""

from .configuration import DataConfig, FaithfulnessConfig, ReformationConfig, SearchConfig, SubnetConfig
from .errors import SubnetError
from .models import SubnetLlamaConfig, SubnetLlamaForCausalLM
from .optimizer import SubnetOptimizer
from .spec import LayerSpec, ModelShape, SubnetSpec
from .surgery import extract_subnet

__version__ = "0.1.0"

__all__ = [
    "DataConfig",
    "FaithfulnessConfig",
    "LayerSpec",
    "ModelShape",
    "ReformationConfig",
    "SearchConfig",
    "SubnetConfig",
    "SubnetError",
    "SubnetLlamaConfig",
    "SubnetLlamaForCausalLM",
    "SubnetOptimizer",
    "SubnetSpec",
    "__version__",
    "extract_subnet",
]
