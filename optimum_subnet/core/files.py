"""Small helpers shared across the package (no heavy imports at module level).

Everything the package writes goes through the helpers here: JSON files are written to a temporary
name and renamed (``write_json``), folders are built in a temporary folder and renamed into place
(``atomic_output_dir``), and a full disk or a read-only folder becomes a one-line
:class:`~optimum_subnet.core.errors.SubnetError` (``writing``) instead of a traceback.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterable, Iterator

from optimum_subnet.core.errors import ResourceError, SubnetError

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


@contextmanager
def writing(target: str | os.PathLike, hint: str = "nothing was written") -> Iterator[None]:
    """Turn the OS errors a user can fix (disk full, quota, permissions) into one-line errors.

    ``hint`` says what state the write left behind, e.g. that the previous checkpoint is intact.
    """
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceError(f"no space left on the device while writing {target}; free some space ({hint})") from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise SubnetError(f"cannot write {target}: {e.strerror.lower()} ({hint})") from None
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temporary file + fsync + rename): a crash leaves the old file or the new
    one, never half a file, and no temporary file is left behind by a failed write."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically (temporary file + rename), as :func:`write_json`."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SubnetError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise SubnetError(f"{path} is a folder, not a JSON file") from None
    except UnicodeDecodeError:
        raise SubnetError(f"{path} is not a text (JSON) file") from None
    except json.JSONDecodeError as e:
        raise SubnetError(f"{path} is not valid JSON ({e.msg}: line {e.lineno} column {e.colno})") from None


def _contains(folder: Path, other: Path) -> bool:
    """``other`` is ``folder`` or lies inside it (absolute, lexically normalized paths)."""
    return other == folder or folder in other.parents


def check_output_dir(path: str | os.PathLike, overwrite: bool, protected: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output path before any work starts, and return it.

    Refused: a symbolic link (writes would land elsewhere), an existing file, a non-empty folder
    without ``overwrite``, and (even with ``overwrite``) an existing folder that holds the current
    folder, the home folder or one of the ``protected`` inputs (model, data): replacing it would
    destroy them.
    """
    path = Path(path)
    if path.is_symlink():
        raise SubnetError(f"output path {path} is a symbolic link; pass the real folder instead")
    if path.exists() and not path.is_dir():
        raise SubnetError(f"output path {path} exists and is not a folder")
    if path.is_dir():
        absolute = Path(os.path.abspath(path))
        for name, inside in [("the current folder", Path.cwd()), ("your home folder", Path.home())] + [
            (f"the input {p}", Path(os.path.abspath(p))) for p in protected
        ]:
            if _contains(absolute, inside):
                raise SubnetError(f"output folder {path} holds {name}; choose a new folder for the output")
        if any(path.iterdir()) and not overwrite:
            raise SubnetError(f"output folder {path} exists and is not empty; pass overwrite=True to replace it")
    return path


@contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = False, staging: str | os.PathLike | None = None,
                      protected: Iterable[str | os.PathLike] = (), hint: str = "nothing was written") -> Iterator[Path]:
    """Yield a temporary folder that is renamed to ``path`` only if the block succeeds.

    The temporary folder is created in ``staging`` (a folder on the same file system, e.g. the run's
    work folder) or else as a hidden sibling of ``path``. A crash, an exception or Ctrl-C inside the
    block removes it, so ``path`` never holds a half-written result; with ``overwrite`` the previous
    folder stays in place until the new one is complete. A full disk raises a one-line error.
    """
    final = check_output_dir(path, overwrite, protected)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        parent = Path(staging) if staging is not None else final.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
    try:
        with writing(final, hint):
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


def human_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def parse_bytes(text: str) -> int:
    """``"16GiB"``, ``"512 MB"``, ``"1000000"`` -> bytes (binary and decimal units)."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
             "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
    value = text.strip().lower()
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = value[len(number):].strip()
    try:
        amount = float(number)
    except ValueError:
        raise SubnetError(f"cannot read {text!r} as an amount of memory (e.g. 16GiB, 512MB)") from None
    if unit not in units or amount < 0:
        raise SubnetError(f"cannot read {text!r} as an amount of memory (e.g. 16GiB, 512MB)")
    return int(amount * units[unit])
