"""Qwen2 / Qwen2.5 (``qwen2``): LLaMA's layout, but q/k/v projections carry biases (hard-coded, no config
flag) and o_proj does not: the biases are sliced with their rows (in RoPE pairs). Sliding-window
attention per layer (``use_sliding_window``, ``max_window_layers`` -> ``layer_types``), which a subnet
keeps per kept layer.
"""

from __future__ import annotations

from optimum_subnet.families.base import DecoderFamily, FamilyTraits


class Qwen2Adapter(DecoderFamily):
    model_types = ('qwen2',)
    subnet_model_type = "subnet_qwen2"
    traits = FamilyTraits(qkv_bias=True)
    onnx_config = "Qwen2OnnxConfig"

    def subnet_classes(self):
        from optimum_subnet.families.qwen2 import SubnetQwen2Config, SubnetQwen2ForCausalLM, SubnetQwen2Model

        return SubnetQwen2Config, SubnetQwen2Model, SubnetQwen2ForCausalLM

    def remote_code(self):
        return ("qwen2/configuration_subnet_qwen2.py", "qwen2/modeling_subnet_qwen2.py")
