"""Primal-Attention (Chen et al., NeurIPS 2023): low-rank attention through asymmetric kernel SVD,
as a pass on a dense model or a subnet (diagnosis, calibration fit, optional fine-tune, saving).

Importing this package registers the ``primal_<base>`` model types of every supported family, dense
and subnet (``primal_llama``, ``primal_qwen3``, ``primal_subnet_gemma3``, ...), with transformers'
Auto classes, so saved models load with ``AutoModelForCausalLM``.

Integration points (for the ONNX export and other runtimes):

* Modeling: everything primal is in ``modeling_primal.py`` (self-contained). A model with primal
  layers is its base model plus ``config.primal_attention``; ``apply_primal_layers(model, config)``
  at the end of the base model's ``__init__`` installs them, and ``primal_classes`` derives the
  primal config / causal-LM pair from any family's classes (``registration`` holds them all).
* Decoding state: :class:`PrimalStateLayer` (running sums of queries and keys, float32, fixed size)
  sits in the transformers ``Cache`` at the primal layer's index; an ONNX graph carries the same two
  tensors per layer as past / present inputs and outputs (``optimum_subnet.onnx.primal``).
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
