"""optimum-subnet: training-free subnet search and weight reformation for causal LMs.

Importing the package registers the heterogeneous subnet model types and the Primal-Attention model
types (``primal_<base>``) with transformers' ``AutoConfig`` / ``AutoModelForCausalLM``, so saved
subnets and primal models load with the usual Auto classes.
"""

from optimum_subnet.core.config import DataConfig, FaithfulnessConfig, ReformationConfig, SearchConfig, SubnetConfig
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.families import auto as _auto  # noqa: F401  registers the subnet model types
from optimum_subnet.families.llama import SubnetLlamaConfig, SubnetLlamaForCausalLM
from optimum_subnet.primal import registration as _primal_registration  # noqa: F401  registers primal_* types
from optimum_subnet.pipeline.optimizer import SubnetOptimizer
from optimum_subnet.core.spec import LayerSpec, ModelShape, SubnetSpec
from optimum_subnet.stages.surgery import extract_subnet
from optimum_subnet.onnx.export import OnnxExportConfig, export_onnx

try:  # the ONNX Runtime side needs onnxruntime or onnxruntime-gpu (extras)
    from optimum_subnet.runtime import ORTSubnetModelForCausalLM
except ImportError as _ort_error:  # pragma: no cover - exercised only without onnxruntime
    _ORT_IMPORT_ERROR = _ort_error

    def __getattr__(name):
        if name == "ORTSubnetModelForCausalLM":
            raise ImportError(f"ORTSubnetModelForCausalLM needs onnxruntime: pip install 'optimum-subnet[onnxruntime]' "
                              f"({_ORT_IMPORT_ERROR})")
        raise AttributeError(name)

__version__ = "0.1.0"

__all__ = [
    "DataConfig",
    "FaithfulnessConfig",
    "LayerSpec",
    "ORTSubnetModelForCausalLM",
    "OnnxExportConfig",
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
    "export_onnx",
    "extract_subnet",
]
