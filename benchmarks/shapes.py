"""The model shapes the benchmarks build with random weights, declared once.

Time and memory depend on a model's shapes, not on its weight values, so the speed and memory
benchmarks build LLaMA-architecture models of these shapes (``LlamaConfig(**shape)``) instead of
downloading weights. Scripts name them in their own ``--shape`` choices and may override fields that
do not change the cost they measure (e.g. ``max_position_embeddings`` for long contexts).
"""

from __future__ import annotations

#: LLaMA-7B (Touvron et al., 2023): multi-head attention, 32 x 128-channel heads.
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, head_dim=128, vocab_size=32000, max_position_embeddings=4096)
#: LLaMA-30B (the "33B" checkpoint): 52 heads of 128 channels, 60 layers.
LLAMA_30B = dict(hidden_size=6656, intermediate_size=17920, num_hidden_layers=60, num_attention_heads=52,
                 num_key_value_heads=52, head_dim=128, vocab_size=32000, max_position_embeddings=4096)
#: TinyLlama-1.1B: LLaMA-2 architecture with grouped-query attention (4 KV heads).
TINYLLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                    num_key_value_heads=4, head_dim=64, vocab_size=32000, max_position_embeddings=4096)
#: SmolLM2-135M (the built-in default model), with its RoPE base and tied embeddings.
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
                    rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
#: A few-kilobyte model: checks that a script runs on the CPU, measures nothing.
TINY = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=1000, max_position_embeddings=2048)


def model_shape_fields(shape: dict, tie_word_embeddings: bool = False) -> dict:
    """``shape`` as :class:`optimum_subnet.core.spec.ModelShape` fields (LLaMA family)."""
    return dict(model_type="llama", hidden_size=shape["hidden_size"], num_layers=shape["num_hidden_layers"],
                num_attention_heads=shape["num_attention_heads"], num_key_value_heads=shape["num_key_value_heads"],
                head_dim=shape["head_dim"], intermediate_size=shape["intermediate_size"],
                vocab_size=shape["vocab_size"], tie_word_embeddings=shape.get("tie_word_embeddings", tie_word_embeddings))
