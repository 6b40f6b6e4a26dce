"""Phi-3 (``phi3``): fused ``qkv_proj`` (rows [q; k; v]) and ``gate_up_proj`` (rows [gate; up], split by
``chunk(2)``): pruned consistently as row slices of the fused weight and re-fused in the subnet;
partial rotary (``partial_rotary_factor``: the first ``r`` channels of a head rotate, in pairs
``(c, c + r/2)``; the rest pass through and are pruned in pairs too); no biases.
"""

from __future__ import annotations

from optimum_subnet.families.base import DecoderFamily, FamilyTraits


class Phi3Adapter(DecoderFamily):
    model_types = ('phi3',)
    subnet_model_type = "subnet_phi3"
    traits = FamilyTraits(fused_qkv=True, fused_gate_up=True)
    onnx_config = "Phi3OnnxConfig"

    def subnet_classes(self):
        from optimum_subnet.families.phi3 import SubnetPhi3Config, SubnetPhi3ForCausalLM, SubnetPhi3Model

        return SubnetPhi3Config, SubnetPhi3Model, SubnetPhi3ForCausalLM

    def remote_code(self):
        return ("phi3/configuration_subnet_phi3.py", "phi3/modeling_subnet_phi3.py")
