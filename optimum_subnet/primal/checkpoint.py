"""The work folder of a Primal-Attention run, ``OUTPUT.partial/`` (as the search's, see
:mod:`optimum_subnet.pipeline.checkpoint`): what an interrupted run leaves to be resumed.

* ``fingerprint.json``: what the run depends on (configuration, weights digest, data digest,
  versions); a resume with anything different is refused, naming what differs.
* ``fit.safetensors``: the fitted primal layers, with the report entries computed so far as JSON in
  the file's metadata (one file, renamed into place: complete or absent).
* ``finetune.safetensors``: the fine-tune's last checkpoint (weights and AdamW state; step and loss
  log in the metadata), rewritten atomically every ``checkpoint_every`` steps.
* ``.OUTPUT.tmp-*``: the output folder being written; ``lock``: held while a process works on it.

Everything is JSON or safetensors (never pickle); the folder is deleted once OUTPUT is in place.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from optimum_subnet.core.errors import CheckpointError, SubnetError
from optimum_subnet.core.files import read_json, write_json, writing
from optimum_subnet.pipeline.checkpoint import FINGERPRINT, FORMAT_VERSION, RunDirectory, _flatten, work_dir_for

logger = logging.getLogger(__name__)

FIT, FINETUNE = "fit.safetensors", "finetune.safetensors"
_CHECKPOINTS = {FINGERPRINT, FIT, FINETUNE}


def has_progress(output: str | os.PathLike) -> bool:
    folder = work_dir_for(output)
    return (folder / FINGERPRINT).is_file() and (folder / FIT).is_file()


class PrimalRunDirectory(RunDirectory):
    """``<output>.partial`` of a Primal-Attention run (locking and clean-up as the search's)."""

    def open(self, resume: bool = False, overwrite: bool = False) -> "PrimalRunDirectory":
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise SubnetError(f"{self.path} exists and is not a folder; remove it or choose another output folder")
        has_run = (self.path / FINGERPRINT).is_file()
        if has_run and not resume and not overwrite:
            raise SubnetError(f"{self.path} holds an interrupted Primal-Attention run; continue it with "
                              "resume=True or start over with overwrite=True")
        self._created = [p for p in [self.path, *self.path.parents] if not p.exists()]
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.resumed = resume and has_run
        if resume and not has_run:
            logger.warning("Nothing to resume in %s; starting a new run", self.path)
        elif self.resumed:
            logger.info("Resuming the interrupted run in %s", self.path)
        keep = {"lock"} | (_CHECKPOINTS if self.resumed else set())
        for child in self.path.iterdir():
            if child.name in keep:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        return self

    def has_progress(self) -> bool:
        return has_progress(self.output)

    def check_fingerprint(self, fingerprint: dict[str, Any]) -> None:
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
            raise CheckpointError(f"cannot resume: the interrupted run in {self.path} used other inputs (differs "
                                  f"in: {', '.join(differs)}); rerun with the same inputs, or start over with "
                                  "overwrite=True")

    def _read(self, path: Path) -> Any:
        try:
            return read_json(path)
        except SubnetError as e:
            raise CheckpointError(f"cannot resume: {e}; start over with overwrite=True") from None

    # ---------------------------------------------------------------------------------- stages
    def _save(self, name: str, tensors: dict[str, torch.Tensor], data: dict) -> None:
        import json

        from safetensors.torch import save_file

        target = self.path / name
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with writing(target, "the previous checkpoint is intact: resume once there is space"):
            try:
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                          metadata={"data": json.dumps(data)})
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

    def _load(self, name: str):
        """``(tensors, data)`` of a checkpoint file, or None when there is none to resume."""
        import json

        path = self.path / name
        if not self.resumed or not path.is_file():
            return None
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                data = json.loads((f.metadata() or {})["data"])
            tensors = load_file(str(path))
        except (OSError, SafetensorError, KeyError, ValueError) as e:
            raise CheckpointError(f"cannot resume: {path} is unreadable ({e}); start over with "
                                  "overwrite=True") from None
        return tensors, data

    def save_fit(self, tensors: dict[str, torch.Tensor], data: dict) -> None:
        self._save(FIT, tensors, data)

    def load_fit(self):
        return self._load(FIT)

    def save_finetune(self, tensors: dict[str, torch.Tensor], data: dict) -> None:
        self._save(FINETUNE, tensors, data)

    def load_finetune(self):
        return self._load(FINETUNE)
