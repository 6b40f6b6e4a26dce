"""Make Optimum's stock ONNX Runtime tools accept subnet exports (``subnet_llama``, ``subnet_qwen2``, ...).

``optimum-cli onnxruntime optimize|quantize`` (and ``ORTOptimizer`` / ``ORTQuantizer``) look a
model type up in ``ORTConfigManager`` and ``NormalizedConfigManager`` and load ``config.json``
through ``AutoConfig``. We register the subnet type in all three:

* ORT model type ``gpt2`` (what Optimum uses for LLaMA), so O1/O2/O3 run the same graph-level
  fusions as for a dense LLaMA export (LayerNorm, SkipLayerNorm, and on GPU RotaryEmbedding);
* a normalized config reporting ``num_attention_heads = hidden_size = 0``: ORT then infers head counts node by
  node instead of stamping one global value on a model whose layers have their own (ORT's
  attention fusions never match LLaMA attention anyway: our GroupQueryAttention pass does that).

The CLI does this on load (``optimum/commands/register/register_subnet.py``, only when an
``onnxruntime`` command runs); ``import optimum_subnet`` does it for Python users.
"""

from __future__ import annotations

def register_with_optimum() -> None:
    from optimum.onnxruntime.utils import ORTConfigManager
    from optimum.utils.normalized_config import NormalizedConfigManager, NormalizedTextConfigWithGQA

    class NormalizedSubnetTextConfig(NormalizedTextConfigWithGQA):
        """Per-layer head counts: 0 tells ORT's optimizer to infer them from each node."""

        @property
        def num_attention_heads(self) -> int:
            return 0

        @property
        def hidden_size(self) -> int:  # ORT wants both or neither: 0/0 means "infer per node"
            return 0

    from optimum_subnet.families.registry import ADAPTERS

    for adapter in ADAPTERS:
        # the ORT optimizer's model type of the dense family (LLaMA-style families: gpt2's fusions)
        dense = next((ORTConfigManager._conf[t] for t in adapter.model_types if t in ORTConfigManager._conf), "gpt2")
        ORTConfigManager._conf.setdefault(adapter.subnet_model_type, dense)
        NormalizedConfigManager._conf.setdefault(adapter.subnet_model_type, NormalizedSubnetTextConfig)
