"""Small helpers shared across the package (no heavy imports at module level)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import SubnetError

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "OPTIMUM_SUBNET_CACHE"


def cache_dir() -> Path:
    """The project cache (converted models, prepared datasets).

    ``$OPTIMUM_SUBNET_CACHE`` overrides the default ``~/.cache/optimum_subnet``.
    """
    root = os.environ.get(CACHE_ENV_VAR)
    path = Path(root) if root else Path.home() / ".cache" / "optimum_subnet"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temporary file + rename) so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SubnetError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise SubnetError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing non-empty output folder unless ``overwrite`` is set (before any work starts)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SubnetError(f"output path {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise SubnetError(f"output folder {path} exists and is not empty; pass --overwrite to replace it")
    return path


@contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder that is renamed to ``path`` only if the block succeeds.

    A crash, an exception or Ctrl-C inside the block removes the temporary folder, so ``path``
    never holds a half-written result.
    """
    final = check_output_dir(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        backup = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, backup)
        os.replace(tmp, final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, final)


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
