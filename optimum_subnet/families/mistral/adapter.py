"""Mistral (``mistral``): LLaMA's layout with an explicit ``head_dim`` and one sliding window for every
layer (``config.sliding_window``; the model builds one sliding-window mask that every layer uses).
"""

from __future__ import annotations

from optimum_subnet.families.base import DecoderFamily, FamilyTraits


class MistralAdapter(DecoderFamily):
    model_types = ('mistral',)
    subnet_model_type = "subnet_mistral"
    traits = FamilyTraits()
    onnx_config = "MistralOnnxConfig"

    def subnet_classes(self):
        from optimum_subnet.families.mistral import SubnetMistralConfig, SubnetMistralForCausalLM, SubnetMistralModel

        return SubnetMistralConfig, SubnetMistralModel, SubnetMistralForCausalLM

    def remote_code(self):
        return ("mistral/configuration_subnet_mistral.py", "mistral/modeling_subnet_mistral.py")
