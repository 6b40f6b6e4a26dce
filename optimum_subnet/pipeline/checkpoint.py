"""The work folder of a run: what a killed search leaves behind to be resumed.

``optimize(config, "out")`` keeps its intermediate state in the sibling folder ``out.partial/``
(never inside ``out``, which appears only once complete):

* ``fingerprint.json``: what the run depends on (configuration, model weights digest, data digest,
  versions). A resume with anything different is refused, naming what differs.
* ``pre_search.json`` + ``importance.safetensors``: the report entries and importance scores computed
  before the search (dense / initial perplexity), so a resume skips straight to the search.
* ``search_state.json``: the search engine's state after its last completed generation
  (:meth:`EvolutionarySearch.state_dict`), rewritten atomically after every generation.
* ``.out.tmp-*``: the output folder being written; renamed to ``out`` when complete.
* ``lock``: held (``flock``) while a process works on the run, so two runs cannot share the folder.

Everything is JSON or safetensors (never pickle). The folder is deleted once ``out`` is in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from contextlib import suppress
from pathlib import Path
from typing import Any

from optimum_subnet.core.errors import CheckpointError, SubnetError
from optimum_subnet.core.files import read_json, write_json, write_safetensors, writing

logger = logging.getLogger(__name__)

WORK_SUFFIX = ".partial"
FINGERPRINT = "fingerprint.json"
PRE_SEARCH = "pre_search.json"
IMPORTANCE = "importance.safetensors"
SEARCH_STATE = "search_state.json"
FORMAT_VERSION = 1


def work_dir_for(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + WORK_SUFFIX)


def weights_digest(model) -> str:
    """BLAKE2 digest of every tensor of the state dict (names, shapes, dtypes and bytes)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def tensors_digest(*tensors) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).numpy().tobytes())
    return digest.hexdigest()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def has_progress(output: str | os.PathLike) -> bool:
    """Whether ``<output>.partial`` holds checkpoints that ``--resume`` would continue from."""
    folder = work_dir_for(output)
    return (folder / FINGERPRINT).is_file() and ((folder / PRE_SEARCH).is_file() or (folder / SEARCH_STATE).is_file())


class RunDirectory:
    """``<output>.partial``: the checkpoints of one run (see the module docstring)."""

    #: what the folder holds, in messages ("an interrupted search")
    WHAT = "search"
    #: the files a resumed run keeps (everything else in the folder is an earlier process's leftovers)
    CHECKPOINTS = frozenset({FINGERPRINT, PRE_SEARCH, IMPORTANCE, SEARCH_STATE})

    def __init__(self, output: str | os.PathLike):
        self.output = Path(output)
        self.path = work_dir_for(output)
        self._lock_file = None
        self._created: list[Path] = []
        self.resumed = False

    # ------------------------------------------------------------------------------ lifetime
    def open(self, resume: bool = False, overwrite: bool = False) -> "RunDirectory":
        """Create (or, with ``resume``, reopen) the folder and lock it. Refuses, before any work, to
        silently discard an interrupted run: that needs ``resume`` (continue) or ``overwrite``."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise SubnetError(f"{self.path} exists and is not a folder; remove it or choose another output folder")
        has_run = (self.path / FINGERPRINT).is_file()
        if has_run and not resume and not overwrite:
            raise SubnetError(f"{self.path} holds an interrupted {self.WHAT}; pass resume=True to continue it "
                              "or overwrite=True to start over")
        self._created = [p for p in [self.path, *self.path.parents] if not p.exists()]  # removed again on failure
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.resumed = resume and has_run
        if has_run and not resume:
            logger.info("Discarding the interrupted %s in %s (overwrite)", self.WHAT, self.path)
        elif resume and not has_run:
            logger.warning("Nothing to resume in %s; starting a new %s", self.path, self.WHAT)
        elif self.resumed:
            logger.info("Resuming the interrupted %s in %s", self.WHAT, self.path)
        self._clear(keep_checkpoints=self.resumed)
        return self

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; runs sharing a folder are the user's business
            return
        with writing(self.path):
            handle = open(self.path / "lock", "w")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise SubnetError(f"another process is working on {self.output} ({self.path} is locked)") from None
        self._lock_file = handle

    def _clear(self, keep_checkpoints: bool) -> None:
        """Remove what an earlier process left (a half-staged output folder, temporary files), and
        its checkpoints unless they are being resumed."""
        keep = {"lock"} | (self.CHECKPOINTS if keep_checkpoints else set())
        for child in self.path.iterdir():
            if child.name in keep:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def has_progress(self) -> bool:
        """Whether the folder holds work worth resuming (stages completed before the search, or
        search generations)."""
        return has_progress(self.output)

    def close(self, remove: bool) -> None:
        """Release the lock; ``remove`` deletes the folder (after the output is in place)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)
            if not self.output.exists():  # a failed run also takes back the parent folders it created
                for folder in self._created[1:]:
                    with suppress(OSError):
                        folder.rmdir()  # only if empty

    # --------------------------------------------------------------------------- fingerprint
    def check_fingerprint(self, fingerprint: dict[str, Any]) -> None:
        """Record what this run depends on; on resume, refuse if anything differs from before."""
        path = self.path / FINGERPRINT
        if not self.resumed:
            with writing(path):
                write_json(path, {"format_version": FORMAT_VERSION, **fingerprint})
            return
        saved = self._read(path)
        saved.pop("format_version", None)
        old, new = _flatten(saved), _flatten(fingerprint)
        differs = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
        if differs:
            raise CheckpointError(
                f"cannot resume: the interrupted {self.WHAT} in {self.path} used other inputs "
                f"(differs in: {', '.join(differs)}); rerun with the same arguments, or pass overwrite=True to start over"
            )

    def _read(self, path: Path) -> Any:
        try:
            return read_json(path)
        except SubnetError as e:
            raise CheckpointError(f"cannot resume: {e}; pass overwrite=True to start over") from None

    # ----------------------------------------------------------------------- pre-search stage
    def save_pre_search(self, report: dict[str, Any], timings: dict[str, float], scores=None) -> None:
        """Report entries and importance scores computed before the search (weights first, so the
        JSON, written last, marks the stage as complete)."""
        if scores is not None:
            with writing(self.path / IMPORTANCE, "rerun with resume=True once there is space"):
                write_safetensors(self.path / IMPORTANCE, scores.to_tensors())
        with writing(self.path / PRE_SEARCH, "rerun with resume=True once there is space"):
            write_json(self.path / PRE_SEARCH, {"report": report, "timings": timings, "importance": scores is not None})

    def load_pre_search(self):
        """``(report, timings, scores or None)`` saved by :meth:`save_pre_search`, or None."""
        path = self.path / PRE_SEARCH
        if not self.resumed or not path.is_file():
            return None
        saved = self._read(path)
        scores = None
        if saved.get("importance"):
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            from optimum_subnet.stages.importance import ImportanceScores

            try:
                tensors = load_file(str(self.path / IMPORTANCE))
            except (OSError, SafetensorError) as e:
                raise CheckpointError(f"cannot resume: {self.path / IMPORTANCE} is unreadable ({e}); "
                                      "pass overwrite=True to start over") from None
            scores = ImportanceScores.from_tensors(tensors)
        return saved["report"], saved["timings"], scores

    # ---------------------------------------------------------------------------- search stage
    def save_search_state(self, state: dict[str, Any]) -> None:
        path = self.path / SEARCH_STATE
        with writing(path, "the previous checkpoint is intact: rerun with resume=True once there is space"):
            write_json(path, state)

    def load_search_state(self) -> dict[str, Any] | None:
        path = self.path / SEARCH_STATE
        if not self.resumed or not path.is_file():
            return None
        state = self._read(path)
        if not isinstance(state, dict):
            raise CheckpointError(f"cannot resume: {path} is not a search state; pass overwrite=True to start over")
        return state
