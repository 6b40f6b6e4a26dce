"""Primal-Attention (Chen et al., NeurIPS 2023): low-rank attention through asymmetric kernel SVD,
as a pass on a dense model or a subnet (diagnosis, calibration fit, optional fine-tune, saving).

Importing this package registers the ``primal_llama`` / ``primal_subnet_llama`` model types with
transformers' Auto classes, so saved models load with ``AutoModelForCausalLM``.
"""

from optimum_subnet.primal import registration as _registration  # noqa: F401  registers the model types
from optimum_subnet.primal.config import DiagnoseConfig, FineTuneConfig, PrimalConfig, PrimalDataConfig
from optimum_subnet.primal.modeling_primal import PrimalAttention, PrimalStateLayer

__all__ = ["DiagnoseConfig", "FineTuneConfig", "PrimalAttention", "PrimalConfig", "PrimalDataConfig",
           "PrimalOptimizer", "PrimalStateLayer"]


def __getattr__(name):  # the pass pulls in data and evaluation code: load it on first use
    if name == "PrimalOptimizer":
        from optimum_subnet.primal.pipeline import PrimalOptimizer

        return PrimalOptimizer
    raise AttributeError(name)
