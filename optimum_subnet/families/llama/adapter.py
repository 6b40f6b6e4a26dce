"""LLaMA (``llama``: LLaMA 1/2/3, SmolLM2, TinyLlama, ...): the reference layout.

``model.model.layers[i].self_attn.{q,k,v,o}_proj`` and ``.mlp.{gate,up,down}_proj``; query head ``h``
belongs to KV head ``h // (n_q / n_kv)``; rows of W_Q for head ``h`` are ``h * head_dim + c``; RoPE
rotates channel ``c`` with ``c + head_dim / 2`` (``rotate_half``). ``attention_bias`` puts a bias on
all four attention projections.
"""

from __future__ import annotations

from optimum_subnet.families.base import DecoderFamily, FamilyTraits


class LlamaAdapter(DecoderFamily):
    model_types = ("llama",)
    subnet_model_type = "subnet_llama"
    traits = FamilyTraits()
    onnx_config = "LlamaOnnxConfig"

    def subnet_classes(self):
        from optimum_subnet.families.llama import SubnetLlamaConfig, SubnetLlamaForCausalLM, SubnetLlamaModel

        return SubnetLlamaConfig, SubnetLlamaModel, SubnetLlamaForCausalLM

    def remote_code(self):
        return ("llama/configuration_subnet_llama.py", "llama/modeling_subnet_llama.py")
