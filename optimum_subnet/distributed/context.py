"""The processes of a run launched by ``torchrun`` or ``accelerate launch`` (torch.distributed).

The launcher starts one process per GPU and tells each its place through the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``); :meth:`DistributedContext.from_environment`
reads it and joins the process group (NCCL on GPUs, gloo on CPUs). A process started without a
launcher gets the single-process context, in which every method is a no-op, so the pass has one code
path. Rank 0 is the *main* process: it alone reads and writes checkpoints, evaluates, reforms and
saves; the others help with the search (:mod:`.fitness`).
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from optimum_subnet.core.errors import SubnetError

logger = logging.getLogger(__name__)

#: Minutes a process waits at a collective for the others (the main process may evaluate alone for a
#: while); the launcher stops every process as soon as one fails, so a long wait costs nothing.
TIMEOUT_ENV_VAR = "OPTIMUM_SUBNET_DIST_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 120


def environment_world_size() -> int:
    """``WORLD_SIZE`` set by the launcher (1 without one); refuses a value that is not a positive integer."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise SubnetError(f"WORLD_SIZE must be a positive number of processes, got {value!r}; "
                          "start several processes with torchrun or accelerate launch")
    return size


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def label(self) -> str:
        return f"rank {self.rank}/{self.world_size}"

    # ------------------------------------------------------------------------------- lifetime
    @classmethod
    def from_environment(cls, device: str = "auto") -> "DistributedContext":
        """Join the process group the launcher set up (NCCL for CUDA devices, gloo otherwise)."""
        import torch
        import torch.distributed as dist

        world = environment_world_size()
        if world == 1:
            return cls()
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing and not dist.is_initialized():
            names = " and ".join(missing) + (" are" if len(missing) > 1 else " is")
            raise SubnetError(f"WORLD_SIZE is {world} but {names} not set: start the processes with torchrun or "
                              "accelerate launch (or unset WORLD_SIZE for one process)")
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            if local_rank >= torch.cuda.device_count():
                raise SubnetError(f"process {rank} of {world} has LOCAL_RANK {local_rank} but only "
                                  f"{torch.cuda.device_count()} GPU(s) are visible; start at most one process per GPU")
            torch.cuda.set_device(local_rank)
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            # once per process: a process group cannot be set up again after being destroyed (the launcher's
            # rendezvous store keeps the old one's addresses), so a second run in the same process reuses it
            minutes = float(os.environ.get(TIMEOUT_ENV_VAR, DEFAULT_TIMEOUT_MINUTES))
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=minutes))
            atexit.register(_destroy_group)
        else:
            backend = dist.get_backend()
        context = cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                      backend=backend)
        logger.info("%s joined the process group (%s, local rank %d)", context.label, backend, local_rank)
        return context


    def device(self, device: str) -> str:
        """The compute device of this process: ``cuda:LOCAL_RANK`` for a CUDA run with several processes."""
        if self.enabled and device.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return device

    def log(self, message: str, *args) -> None:
        """An INFO line that names this process (what each rank did, in a distributed run's log)."""
        logger.info(f"{self.label}: {message}", *args)

    # ------------------------------------------------------------------------------ collectives
    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def on_main(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` on rank 0 only and hand its result to every rank; if it raises, every rank raises
        (the main process with its own error, the others with a line naming it), so no rank is left
        waiting at a later collective."""
        if not self.enabled:
            return work()
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the others know
                error = e
        outcome = self.broadcast(("error", f"{type(error).__name__}: {error}") if error is not None else ("ok", result))
        if error is not None:
            raise error
        if outcome[0] == "error":
            raise SubnetError(f"{self.label}: stopped because rank 0 failed ({outcome[1]})")
        return outcome[1]

    def agree(self, error: BaseException | None) -> None:
        """Every rank says whether its step succeeded; if any failed, all raise (the failing rank its own
        error), so none waits at the next collective."""
        if not self.enabled:
            if error is not None:
                raise error
            return
        reports = self.gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        failed = [(rank, message) for rank, message in enumerate(reports) if message is not None]
        if failed:
            rank, message = failed[0]
            raise SubnetError(f"{self.label}: stopped because rank {rank} failed ({message})")


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
