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
        texts = list(wikipedia.load_split(split)["text"])
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
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            continue
        if file.suffix not in (".json", ".jsonl"):
            raise DataError(f"{file}: unsupported data file type (use .txt, .json or .jsonl)")
        import datasets

        try:
            ds = datasets.load_dataset("json", data_files=str(file), split="train")
        except Exception as e:  # datasets raises many types for malformed JSON
            raise DataError(f"{file} is not valid JSON Lines: {type(e).__name__}") from None
        if text_column not in ds.column_names:
            raise DataError(f"{file} has no {text_column!r} column (columns: {', '.join(ds.column_names)})")
        texts.extend(str(t) for t in ds[text_column])
    return texts


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
