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

import os

import torch

from optimum_subnet.core.errors import CheckpointError
from optimum_subnet.core.files import write_safetensors, writing
from optimum_subnet.pipeline.checkpoint import FINGERPRINT, RunDirectory, work_dir_for


FIT, FINETUNE = "fit.safetensors", "finetune.safetensors"
_CHECKPOINTS = {FINGERPRINT, FIT, FINETUNE}


def has_progress(output: str | os.PathLike) -> bool:
    folder = work_dir_for(output)
    return (folder / FINGERPRINT).is_file() and (folder / FIT).is_file()


class PrimalRunDirectory(RunDirectory):
    """``<output>.partial`` of a Primal-Attention run (opening, locking, fingerprint and clean-up as the
    search's)."""

    WHAT = "Primal-Attention run"
    CHECKPOINTS = frozenset(_CHECKPOINTS)

    def has_progress(self) -> bool:
        return has_progress(self.output)

    # ---------------------------------------------------------------------------------- stages
    def _save(self, name: str, tensors: dict[str, torch.Tensor], data: dict) -> None:
        import json

        target = self.path / name
        with writing(target, "the previous checkpoint is intact: resume once there is space"):
            write_safetensors(target, tensors, metadata={"data": json.dumps(data)})

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
