import bz2
import json

import pytest
import torch

from optimum_subnet import data
from optimum_subnet.data import wikipedia
from optimum_subnet.core.errors import DataError

pytestmark = pytest.mark.unit


def test_calibration_windows_are_seeded_and_in_range():
    stream = torch.arange(1000)
    a = data.calibration_windows(stream, 5, 64, seed=1)
    b = data.calibration_windows(stream, 5, 64, seed=1)
    c = data.calibration_windows(stream, 5, 64, seed=2)
    assert a.shape == (5, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert all(torch.equal(w, torch.arange(int(w[0]), int(w[0]) + 64)) for w in a)  # contiguous slices


def test_evaluation_windows_cover_without_overlap():
    stream = torch.arange(1000)
    w = data.evaluation_windows(stream, 100)
    assert w.shape == (10, 100) and torch.equal(w.reshape(-1), stream)
    some = data.evaluation_windows(stream, 100, max_windows=3)
    assert some.shape == (3, 100) and some[0, 0] == 0 and some[-1, 0] == 900


def test_too_short_and_too_long():
    with pytest.raises(DataError, match="calibration data too short"):
        data.calibration_windows(torch.arange(10), 2, 64, 0)
    with pytest.raises(DataError, match="evaluation data too short"):
        data.evaluation_windows(torch.arange(10), 64)
    with pytest.raises(DataError, match="exceeds the model's limit"):
        data.check_sequence_length(4096, 2048)


def test_local_text_and_jsonl_sources(text_files, tmp_path):
    cal, ev = text_files
    assert data.load_texts(str(cal), "calibration")[0].startswith("The quick")
    assert len(data.load_texts(str(ev), "evaluation")) == 5
    assert len(data.load_texts(str(tmp_path), "calibration")) == 6  # folder: the .txt and the 5 json lines


def test_bad_sources(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    with pytest.raises(DataError, match="empty"):
        data.load_texts(str(empty), "calibration")
    with pytest.raises(DataError, match="does not exist"):
        data.load_texts(str(tmp_path / "missing.txt"), "calibration")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "x"}\n')
    with pytest.raises(DataError, match="no 'text' column"):
        data.load_texts(str(bad), "calibration")


def test_files_that_are_not_utf8_text_or_valid_json_lines(tmp_path):
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" * 10)
    with pytest.raises(DataError, match=r"image.txt is not UTF-8 text \(byte 0x89 at offset 0\)"):
        data.load_texts(str(binary), "calibration")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xe9 at offset 3\)"):
        data.load_texts(str(latin1), "calibration")
    lines = tmp_path / "cut.jsonl"
    lines.write_text('{"text": "a b c"}\n{"text": "d e')
    with pytest.raises(DataError, match="line 2 is not valid JSON .*; the file looks cut short"):
        data.load_texts(str(lines), "calibration")
    lines.write_text('{"text": "a"}\n[1, 2]\n{"text": "b"}\n')
    with pytest.raises(DataError, match="line 2 is not a JSON object"):
        data.load_texts(str(lines), "calibration")
    for value in ("5", "null", '["x"]'):
        lines.write_text('{"text": "a"}\n{"text": ' + value + "}\n")
        with pytest.raises(DataError, match="line 2: 'text' is .*, not a string"):
            data.load_texts(str(lines), "calibration")
    lines.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(DataError, match="line 2 has no 'text' field"):
        data.load_texts(str(lines), "calibration")
    lines.write_text('{"text": "a"}\n\n{"text": "b"}\n')  # blank lines are fine
    assert data.load_texts(str(lines), "calibration") == ["a", "b"]


def test_tokenize_stream_has_no_special_tokens(tokenizer):
    ids = data.tokenize_stream(["ab", "c"], tokenizer)
    assert tokenizer.decode(ids) == "ab\n\nc"


def _dump(pages):
    ns = "http://www.mediawiki.org/xml/export-0.10/"
    redirect = '<redirect title="x"/>'
    body = "".join(
        f"<page><title>{t}</title><ns>{n}</ns>{redirect if r else ''}<revision><text>{x}</text></revision></page>"
        for t, n, r, x in pages
    )
    return bz2.compress(f'<mediawiki xmlns="{ns}">{body}</mediawiki>'.encode())


def test_wikipedia_parsing_strips_markup_and_skips_redirects(tmp_path):
    raw = _dump([
        ("Alpha", 0, False, "'''Alpha''' is a [[letter|Greek letter]].&lt;ref&gt;A source&lt;/ref&gt; "
                            "{{Infobox|x=1}}\n[[Category:Letters]]\n== History ==\nOld."),
        ("Redirect", 0, True, "#REDIRECT [[Alpha]]"),
        ("Talk:Alpha", 1, False, "talk page"),
    ])
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(raw)
    articles = wikipedia.parse_dump(path)
    assert [a["title"] for a in articles] == ["Alpha"]
    text = articles[0]["text"]
    assert "Alpha is a Greek letter." in text and "History" in text and "Old." in text
    for junk in ("[[", "{{", "Category", "A source", "'''"):
        assert junk not in text


def test_wikipedia_split_is_deterministic_and_article_level():
    titles = [f"Article {i}" for i in range(500)]
    sides = [wikipedia.split_of(t) for t in titles]
    assert sides == [wikipedia.split_of(t) for t in titles]
    share = sides.count("evaluation") / len(sides)
    assert 0.12 < share < 0.28


def test_missing_gensim_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIMUM_SUBNET_CACHE", str(tmp_path))
    monkeypatch.setattr(wikipedia.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps gensim==4.3.3"):
        wikipedia.locate_dump()


def test_wheel_fallback(monkeypatch, tmp_path):
    import zipfile

    monkeypatch.setenv("OPTIMUM_SUBNET_CACHE", str(tmp_path))
    monkeypatch.setattr(wikipedia.importlib.util, "find_spec", lambda name: None)
    (tmp_path / "wheels").mkdir()
    with zipfile.ZipFile(tmp_path / "wheels" / "gensim-4.3.3-cp311-none-any.whl", "w") as zf:
        zf.writestr(wikipedia.GENSIM_MEMBER, _dump([("Beta", 0, False, "Beta text.")]))
    raw = wikipedia.locate_dump()
    assert isinstance(raw, bytes)
    assert wikipedia.parse_dump(raw) == [{"title": "Beta", "text": "Beta text."}]


def test_jsonl_sidecar_is_read_through_datasets(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"line {i}"}) for i in range(3)))
    assert data.load_texts(str(path), "evaluation") == ["line 0", "line 1", "line 2"]


def test_windows_start_with_bos_for_tokenizers_that_add_one():
    from optimum_subnet.data import bos_of, calibration_windows, evaluation_windows

    stream = torch.arange(10, 110)
    assert evaluation_windows(stream, 10).shape == (10, 10)
    with_bos = evaluation_windows(stream, 10, bos=1)
    assert with_bos.shape == (11, 10) and bool((with_bos[:, 0] == 1).all())
    assert with_bos[0, 1:].tolist() == list(range(10, 19))  # 9 text tokens after the BOS, contiguous
    calibration = calibration_windows(stream, 4, 16, seed=0, bos=1)
    assert calibration.shape == (4, 16) and bool((calibration[:, 0] == 1).all())

    class Adds:
        add_bos_token, bos_token_id = True, 2

    class DoesNot:
        add_bos_token, bos_token_id = False, 2

    assert bos_of(Adds()) == 2 and bos_of(DoesNot()) is None and bos_of(object()) is None
