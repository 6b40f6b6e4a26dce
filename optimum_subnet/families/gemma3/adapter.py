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

    #: multimodal Gemma3 checkpoints (``gemma3``): their text part is pruned (the vision tower is not kept)
    text_part_of = ("gemma3",)

    def load_text_part(self, folder, config, dtype):
        """``Gemma3ForCausalLM`` from a ``gemma3`` (image-text) checkpoint's language-model weights, which are
        named ``model.language_model.*`` (``language_model.model.*`` in older checkpoints) plus ``lm_head``."""
        from safetensors import safe_open
        from transformers import Gemma3ForCausalLM
        from transformers.modeling_utils import no_init_weights

        from optimum_subnet.core.errors import SubnetError

        text_config = config.get_text_config()
        text_config.tie_word_embeddings = getattr(config, "tie_word_embeddings", text_config.tie_word_embeddings)
        prefixes = (("model.language_model.", "model."), ("language_model.model.", "model."),
                    ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head."))
        state = {}
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    for old, new in prefixes:
                        if key.startswith(old):
                            state[new + key[len(old):]] = f.get_tensor(key).to(dtype)
                            break
        with no_init_weights():  # every weight is assigned below; buffers (rotary tables, scales) are built
            model = Gemma3ForCausalLM(text_config).to(dtype)
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not (k == "lm_head.weight" and text_config.tie_word_embeddings)]
        if missing or unexpected:
            raise SubnetError(f"the gemma3 checkpoint's language model does not match its text config "
                              f"(missing {missing[:1]}, unexpected {unexpected[:1]})")
        if text_config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        return model.eval()

    def subnet_classes(self):
        from optimum_subnet.families.gemma3 import SubnetGemma3TextConfig, SubnetGemma3TextForCausalLM, SubnetGemma3TextModel

        return SubnetGemma3TextConfig, SubnetGemma3TextModel, SubnetGemma3TextForCausalLM

    def remote_code(self):
        return ("gemma3/configuration_subnet_gemma3.py", "gemma3/modeling_subnet_gemma3.py")

    def graph_layout(self, config):
        from dataclasses import replace

        # RMSNorm as x * (1 + w); embeddings scaled by sqrt(hidden) (in the weights' dtype)
        return replace(super().graph_layout(config), norm_offset=1.0, embedding_scale=float(config.hidden_size) ** 0.5)

    def rope_kinds(self, config):
        """Sliding layers rotate with ``rope_local_base_freq`` (their own table), full ones with ``rope_theta``."""
        types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        return ["local" if kind == "sliding_attention" else "global" for kind in types]

    def rope_tables(self, config, positions):
        import copy

        from optimum_subnet.families.base import _rope_table

        local = copy.copy(config)
        local.rope_theta = config.rope_local_base_freq
        local.rope_scaling = {"rope_type": "default"}
        return {"global": _rope_table(config, positions, self.STATIC_ROPE_TYPES),
                "local": _rope_table(local, positions, self.STATIC_ROPE_TYPES)}

    def run_layer(self, layer, hidden_states, context):
        out = layer(hidden_states, position_embeddings_global=context.position_embeddings,
                    position_embeddings_local=context.position_embeddings_local,
                    attention_mask=self.layer_mask(layer, context), position_ids=context.position_ids,
                    cache_position=context.cache_position)
        return out[0] if isinstance(out, tuple) else out
