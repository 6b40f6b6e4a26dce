"""A SentencePiece BPE tokenizer rebuilt from a GGUF's own vocabulary (the built-in Gemma3-270M).

transformers 4.57 converts a Gemma GGUF's vocabulary into a *Unigram* model (``GGUFGemmaConverter``),
although Gemma's SentencePiece model is BPE: the GGUF scores are BPE merge ranks (minus the piece's
rank), not log-probabilities, so a Unigram segmentation splits words apart ("The capital of France is"
-> ``The, ▁c, ap, it, al, ▁of, ▁Fr, an, ce, ▁is``). Here the GGUF's ``tokenizer.ggml.tokens`` /
``scores`` / ``token_type`` become a SentencePiece ``ModelProto`` again (BPE, byte fallback, identity
normalizer, no dummy prefix), which transformers' own slow->fast ``GemmaConverter`` turns into a
``GemmaTokenizerFast`` (``The, ▁capital, ▁of, ▁France, ▁is``). The proto needs only ``protobuf``
(a dependency of ``onnx``), not ``sentencepiece``; it is saved as ``tokenizer.model`` beside
``tokenizer.json``.

Two things llama.cpp's converter changed when it wrote the GGUF are undone (``convert_hf_to_gguf.py``,
``_create_vocab_sentencepiece``: every token listed in the HF ``added_tokens_decoder`` gets score -1000,
type CONTROL if marked special, and, if user-defined, its ``▁`` replaced by spaces):

* user-defined pieces get their ``▁`` back (``"  "`` -> ``"▁▁"``, ids 138-167): SentencePiece matches
  user-defined pieces in the normalized text, where every space is ``▁``;
* meta pieces (control, user-defined) get SentencePiece's score 0 instead of -1000, and ``<unk>`` type
  UNKNOWN instead of CONTROL (SentencePiece needs exactly one UNKNOWN piece). In the BPE conversion
  the score of a user-defined piece is its merge priority: at 0 a run of spaces merges before the
  letters next to it, as SentencePiece's longest match of user-defined pieces does.

Checked against ``sentencepiece`` 0.2.1 encoding the same proto (``tests/integration/test_gemma3.py``
holds ids it produced).
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# llama.cpp / SentencePiece piece types (the same numbers in both).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2  # TrainerSpec.model_type


def read_gguf_vocabulary(gguf_path: str | Path) -> dict:
    """The tokenizer fields of a GGUF: tokens, scores, token types, special ids and flags."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields

    def array(name: str) -> list:
        field = fields[name]
        return [field.parts[i] for i in field.data]

    def scalar(name: str, default=None):
        field = fields.get(name)
        return default if field is None else field.parts[field.data[0]][0].item()

    model = bytes(fields["tokenizer.ggml.model"].parts[fields["tokenizer.ggml.model"].data[0]]).decode()
    return {
        "model": model,
        "tokens": [bytes(part).decode("utf-8") for part in array("tokenizer.ggml.tokens")],
        "scores": [float(part[0]) for part in array("tokenizer.ggml.scores")],
        "token_type": [int(part[0]) for part in array("tokenizer.ggml.token_type")],
        "bos_token_id": scalar("tokenizer.ggml.bos_token_id"),
        "eos_token_id": scalar("tokenizer.ggml.eos_token_id"),
        "unknown_token_id": scalar("tokenizer.ggml.unknown_token_id"),
        "padding_token_id": scalar("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(scalar("tokenizer.ggml.add_bos_token", True)),
        "add_eos_token": bool(scalar("tokenizer.ggml.add_eos_token", False)),
        "add_space_prefix": bool(scalar("tokenizer.ggml.add_space_prefix", True)),
    }


def sentencepiece_proto(vocabulary: dict):
    """A SentencePiece BPE ``ModelProto`` from :func:`read_gguf_vocabulary`'s output."""
    from transformers.convert_slow_tokenizer import import_protobuf

    model_pb2 = import_protobuf()
    proto = model_pb2.ModelProto()
    unk = vocabulary["unknown_token_id"]
    for index, (token, score, kind) in enumerate(zip(vocabulary["tokens"], vocabulary["scores"],
                                                     vocabulary["token_type"])):
        piece = proto.pieces.add()
        if kind == USER_DEFINED:
            token = token.replace(" ", "\u2581")  # llama.cpp's "pre-normalized" spaces, back to ▁
        if index == unk:
            kind = UNKNOWN
        piece.piece = token
        piece.type = kind
        piece.score = score if kind in (NORMAL, BYTE) else 0.0
    trainer = proto.trainer_spec
    trainer.model_type = _BPE
    trainer.vocab_size = len(vocabulary["tokens"])
    trainer.byte_fallback = True
    for name in ("unk", "bos", "eos", "pad"):
        token_id = vocabulary[{"unk": "unknown_token_id", "pad": "padding_token_id"}.get(name, f"{name}_token_id")]
        setattr(trainer, f"{name}_id", -1 if token_id is None else token_id)
        if token_id is not None:
            setattr(trainer, f"{name}_piece", vocabulary["tokens"][token_id])
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = vocabulary["add_space_prefix"]  # False for Gemma3: no dummy prefix
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto


class _ProtoExtractor:
    """Vocabulary and merges straight from the proto (transformers' extractor needs ``sentencepiece``)."""

    def __init__(self, vocab_file: str):
        from transformers.convert_slow_tokenizer import import_protobuf

        self.proto = import_protobuf().ModelProto()
        self.proto.ParseFromString(Path(vocab_file).read_bytes())

    def extract(self, vocab_scores=None):
        from transformers.convert_slow_tokenizer import generate_merges

        vocab = {piece.piece: index for index, piece in enumerate(self.proto.pieces)}
        return vocab, generate_merges(vocab, vocab_scores)


def gemma_tokenizer_from_gguf(gguf_path: str | Path, folder: str | Path):
    """A ``GemmaTokenizerFast`` built from the GGUF's vocabulary; writes ``tokenizer.model`` into
    ``folder`` (``save_pretrained(folder)`` then adds ``tokenizer.json`` and the configs)."""
    return gemma_tokenizer(read_gguf_vocabulary(gguf_path), folder)


def gemma_tokenizer(vocabulary: dict, folder: str | Path):
    """:func:`gemma_tokenizer_from_gguf` from an already read vocabulary."""
    from types import SimpleNamespace

    from transformers import GemmaTokenizerFast
    from transformers.convert_slow_tokenizer import GemmaConverter

    if vocabulary["model"] != "llama":  # llama.cpp's name for a SentencePiece vocabulary
        raise ValueError(f"GGUF vocabulary of type {vocabulary['model']!r}, expected a SentencePiece one ('llama')")
    ids = tuple(vocabulary[key] for key in ("padding_token_id", "eos_token_id", "bos_token_id"))
    if ids != (0, 1, 2):  # GemmaConverter names pieces 0, 1, 2 after the pad, eos and bos tokens
        raise ValueError(f"GGUF vocabulary with pad/eos/bos ids {ids}, expected Gemma's (0, 1, 2)")
    vocab_file = Path(folder) / "tokenizer.model"
    vocab_file.parent.mkdir(parents=True, exist_ok=True)
    vocab_file.write_bytes(sentencepiece_proto(vocabulary).SerializeToString())
    tokens = vocabulary["tokens"]
    special = {name: tokens[vocabulary[key]] for name, key in
               (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
                ("pad_token", "padding_token_id")) if vocabulary[key] is not None}

    class Converter(GemmaConverter):
        SpmExtractor = _ProtoExtractor

    logger.info("Building the BPE tokenizer from the GGUF vocabulary (%d pieces)", len(tokens))
    backend = Converter(SimpleNamespace(vocab_file=str(vocab_file), **special)).converted()
    return GemmaTokenizerFast(tokenizer_object=backend, vocab_file=str(vocab_file),
                              add_bos_token=vocabulary["add_bos_token"], add_eos_token=vocabulary["add_eos_token"],
                              **special)
