"""Shared fixtures: tiny random LLaMA models (unit tests) and a character-level tokenizer."""

from __future__ import annotations

import os
import string

import pytest
import torch

os.environ.setdefault("OPTIMUM_SUBNET_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


THREADS_ENV_VAR = "OPTIMUM_SUBNET_TEST_THREADS"


def pytest_addoption(parser):
    parser.addoption("--torch-threads", type=int, default=None, metavar="N",
                     help=f"run the tests with torch.set_num_threads(N) (or set ${THREADS_ENV_VAR}=N); processes "
                          "the tests start get OMP_NUM_THREADS=N and MKL_NUM_THREADS=N. Float reductions depend on "
                          "the thread count: the suite must pass with 1 thread and with the default")


def pytest_configure(config):
    threads = config.getoption("--torch-threads")
    if threads is None and os.environ.get(THREADS_ENV_VAR):
        try:
            threads = int(os.environ[THREADS_ENV_VAR])
        except ValueError:
            raise pytest.UsageError(f"${THREADS_ENV_VAR} must be an integer, got {os.environ[THREADS_ENV_VAR]!r}")
    if threads is None:
        return
    if threads < 1:
        raise pytest.UsageError(f"--torch-threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    # CLI tests run the package in subprocesses: give them the same thread count
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def pytest_report_header(config):
    return f"torch threads: {torch.get_num_threads()} (--torch-threads N or ${THREADS_ENV_VAR}=N to change)"


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def char_tokenizer():
    """A real fast tokenizer (one token per character) built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = string.printable
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    values = dict(vocab_size=len(char_tokenizer()), hidden_size=48, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=6, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                  max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**overrides)).eval()
    # Larger-than-default weights so that pruning visibly changes outputs.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    return model


@pytest.fixture
def tokenizer():
    return char_tokenizer()


@pytest.fixture
def model():
    return tiny_llama()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A tiny LLaMA saved as a local folder with a tokenizer (what a user's own model looks like)."""
    path = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(path, safe_serialization=True)
    char_tokenizer().save_pretrained(path)
    return path


SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow. "
) * 40


@pytest.fixture
def text_files(tmp_path):
    cal = tmp_path / "calibration.txt"
    cal.write_text(SAMPLE_TEXT)
    ev = tmp_path / "evaluation.jsonl"
    import json

    ev.write_text("\n".join(json.dumps({"text": SAMPLE_TEXT[i : i + 800]}) for i in range(0, 4000, 800)) + "\n")
    return cal, ev
