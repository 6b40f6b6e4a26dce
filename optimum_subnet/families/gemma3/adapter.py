"""Gemma3 text (``gemma3_text``): sandwich norms (``post_attention_layernorm`` after attention,
``pre_feedforward_layernorm`` / ``post_feedforward_layernorm`` around the MLP), RMSNorm as ``x (1 + w)``,
embeddings scaled by sqrt(hidden) inside ``embed_tokens``, softmax scale ``query_pre_attn_scalar ** -0.5``
(independent of head_dim), q/k norms as Qwen3, local (sliding) and global layers (``layer_types``)
with their own rope bases (``rope_local_base_freq`` / ``rope_theta``, two rotary tables). The
reformation target of o_proj / down_proj is their own output, i.e. the value before the post-norm.
"""

from __future__ import annotations

from optimum_subnet.families.base import DecoderFamily, FamilyTraits


class Gemma3Adapter(DecoderFamily):
    model_types = ('gemma3_text',)
    subnet_model_type = "subnet_gemma3"
    traits = FamilyTraits(qk_norm=True, sandwich_norms=True)
    onnx_config = "Gemma3TextOnnxConfig"

    def subnet_classes(self):
        from optimum_subnet.families.gemma3 import SubnetGemma3TextConfig, SubnetGemma3TextForCausalLM, SubnetGemma3TextModel

        return SubnetGemma3TextConfig, SubnetGemma3TextModel, SubnetGemma3TextForCausalLM

    def remote_code(self):
        return ("gemma3/configuration_subnet_gemma3.py", "gemma3/modeling_subnet_gemma3.py")

    def run_layer(self, layer, hidden_states, context):
        out = layer(hidden_states, position_embeddings_global=context.position_embeddings,
                    position_embeddings_local=context.position_embeddings_local,
                    attention_mask=self.layer_mask(layer, context), position_ids=context.position_ids,
                    cache_position=context.cache_position)
        return out[0] if isinstance(out, tuple) else out
