"""Where calibration and evaluation text comes from.

A *source* is one of:

* ``enwiki-extract`` (built in, alias ``wikipedia``): see :mod:`.wikipedia`;
* ``lambada`` (built in, evaluation only): LAMBADA passages, see :mod:`.lambada`;
* a local ``.txt`` file (its whole text), ``.jsonl`` / ``.json`` file (a ``text`` column), or a
  folder of such files;
* a Hugging Face dataset name, optionally ``name:config`` (needs the hub or a local datasets cache).

Every source is returned as a list of strings; :mod:`.windows` turns them into token windows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from optimum_subnet.core.errors import DataError
from optimum_subnet.data import lambada, wikipedia

logger = logging.getLogger(__name__)

BUILTIN_ALIASES = {"enwiki-extract": wikipedia.NAME, "wikipedia": wikipedia.NAME, "lambada": lambada.NAME}


def describe(source: str) -> str:
    if source == lambada.NAME:
        return lambada.DESCRIPTION
    if source in BUILTIN_ALIASES:
        return wikipedia.DESCRIPTION
    return source


def load_texts(source: str, split: str, text_column: str = "text") -> list[str]:
    """Texts of ``source`` for ``split`` ('calibration' or 'evaluation'; HF datasets map them to
    their train / validation-or-test splits)."""
    if source == lambada.NAME:
        texts = lambada.load_split(split)
    elif source in BUILTIN_ALIASES:
        texts = [article["text"] for article in wikipedia.load_split(split)]
    else:
        path = Path(source).expanduser()
        if path.exists():
            texts = _load_local(path, text_column)
        elif source.startswith((".", "/", "~")) or source.endswith((".txt", ".json", ".jsonl")):
            raise DataError(f"data file or folder {source} does not exist")
        else:
            texts = _load_hub(source, split, text_column)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DataError(f"{split} data from {source!r} is empty")
    return texts


def _load_local(path: Path, text_column: str) -> list[str]:
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".json", ".jsonl")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"folder {path} holds no .txt, .json or .jsonl file")
    texts: list[str] = []
    for file in files:
        if file.suffix == ".txt":
            texts.append(_read_utf8(file))
            continue
        if file.suffix not in (".json", ".jsonl"):
            raise DataError(f"{file}: unsupported data file type (use .txt, .json or .jsonl)")
        if file.suffix == ".jsonl":
            _check_json_lines(file, text_column)
        else:
            _read_utf8(file)
        import datasets

        try:
            ds = datasets.load_dataset("json", data_files=str(file), split="train")
        except Exception as e:  # datasets raises many types for malformed JSON
            raise DataError(f"{file} is not valid JSON Lines: {type(e).__name__}") from None
        if text_column not in ds.column_names:
            raise DataError(f"{file} has no {text_column!r} column (columns: {', '.join(ds.column_names)})")
        texts.extend(str(t) for t in ds[text_column])
    return texts


def _read_utf8(file: Path) -> str:
    """The file's text; refused (not silently mangled) when it is not UTF-8, e.g. binary or Latin-1."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{file} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "convert it to UTF-8") from None


def _check_json_lines(file: Path, text_column: str) -> None:
    """Refuse a .jsonl file with a line that is not a JSON object (e.g. cut short) or whose text is not
    a string, naming the line: datasets' own error names neither, and it turns numbers and nulls into
    text ("5", "None")."""
    lines = _read_utf8(file).splitlines()
    missing = None
    found = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            last = all(not rest.strip() for rest in lines[number:])
            raise DataError(f"{file} line {number} is not valid JSON ({e.msg}: column {e.colno})"
                            + ("; the file looks cut short" if last else "")) from None
        if not isinstance(row, dict):
            raise DataError(f"{file} line {number} is not a JSON object (got a JSON {type(row).__name__})")
        if text_column not in row:
            missing = missing or number
            continue
        found = True
        if not isinstance(row[text_column], str):
            raise DataError(f"{file} line {number}: {text_column!r} is {json.dumps(row[text_column])[:40]}, not a "
                            "string")
    if found and missing is not None:  # no line with the column at all: datasets' column message names the columns
        raise DataError(f"{file} line {missing} has no {text_column!r} field")


def _load_hub(name: str, split: str, text_column: str) -> list[str]:
    import datasets

    dataset_name, _, config = name.partition(":")
    candidates = ["train"] if split == "calibration" else ["validation", "test"]
    last_error: Exception | None = None
    for hf_split in candidates:
        try:
            ds = datasets.load_dataset(dataset_name, config or None, split=hf_split)
        except ValueError as e:  # unknown split
            last_error = e
            continue
        except Exception as e:
            raise DataError(
                f"cannot load dataset {name!r} ({type(e).__name__}); the hub may be unreachable: "
                "use a local .txt/.jsonl file or the built-in 'enwiki-extract'"
            ) from None
        if text_column not in ds.column_names:
            raise DataError(f"dataset {name!r} has no {text_column!r} column (columns: {', '.join(ds.column_names)})")
        return [str(t) for t in ds[text_column]]
    raise DataError(f"dataset {name!r} has no {' or '.join(candidates)} split ({last_error})")
