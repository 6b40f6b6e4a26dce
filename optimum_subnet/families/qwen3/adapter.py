"""Qwen3 (``qwen3``): LLaMA's layout plus ``q_norm`` / ``k_norm``, an RMSNorm over ``head_dim`` with one
weight shared by every head, applied before RoPE. Whole KV heads (with their query group) prune
exactly; pruning channels inside a head changes the norm's mean square (it is then taken over the
kept channels only), so it is an approximation whose cost is measured, and every head of a layer
must keep the same channels (one norm weight). ``head_dim`` is explicit (128, independent of
hidden / heads).
"""

from __future__ import annotations

from optimum_subnet.families.base import DecoderFamily, FamilyTraits


class Qwen3Adapter(DecoderFamily):
    model_types = ('qwen3',)
    subnet_model_type = "subnet_qwen3"
    traits = FamilyTraits(qk_norm=True)
    onnx_config = "Qwen3OnnxConfig"

    def subnet_classes(self):
        from optimum_subnet.families.qwen3 import SubnetQwen3Config, SubnetQwen3ForCausalLM, SubnetQwen3Model

        return SubnetQwen3Config, SubnetQwen3Model, SubnetQwen3ForCausalLM

    def remote_code(self):
        return ("qwen3/configuration_subnet_qwen3.py", "qwen3/modeling_subnet_qwen3.py")
