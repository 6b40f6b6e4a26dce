"""The search's fitness spread over the processes of a run (data parallel over candidates).

Every process runs the same search engine with the same seed, scores and fitness windows, so each
produces the same candidates in the same order. :class:`DistributedFitness` takes a generation's list
of candidates (``many``), lets each process evaluate its share (rank ``r`` takes candidates ``r``,
``r + W``, ``r + 2W``, ...: neighbours in a generation differ in size, so the shares cost about the
same) with its local fitness, and gathers the values (``all_gather``) so every process continues with
all of them: the engines stay identical, and the search ends with the spec a single process would find
with the same seed. A check that all processes hold the same candidates (a hash of their keys) runs
with every gather.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Callable, Sequence

from optimum_subnet.core.errors import SubnetError

logger = logging.getLogger(__name__)


def shard(count: int, rank: int, world_size: int) -> list[int]:
    """Indices of the ``count`` candidates that ``rank`` evaluates (strided)."""
    return list(range(rank, count, world_size))


class _Batched:
    """A scorer with a ``many`` method (what the search engine calls for a whole generation)."""

    def __init__(self, one: Callable, many: Callable):
        self._one, self.many = one, many

    def __call__(self, spec) -> float:
        return self._one(spec)


class DistributedFitness:
    """``many(specs)``: the values of ``local`` (a fitness: ``local(spec)`` or ``local.many(specs)``) for
    every spec, each computed by one process. Every process must call it with the same specs."""

    def __init__(self, local, context, name: str = "fitness"):
        self.local = local
        self.context = context
        self.name = name
        self.calls = 0
        #: candidates this process evaluated, and the seconds it spent on them
        self.evaluated = 0
        self.seconds = 0.0
        self.screen = None
        if getattr(local, "screening_windows", None) is not None:
            self.screen = _Batched(lambda spec: self.screen_many([spec])[0], self.screen_many)

    def __call__(self, spec) -> float:
        return self.many([spec])[0]

    def many(self, specs: Sequence) -> list[float]:
        return self._spread(list(specs), getattr(self.local, "many", None) or (lambda s: [self.local(x) for x in s]),
                            self.name)

    def screen_many(self, specs: Sequence) -> list[float]:
        local_many = getattr(self.local, "screen_many", None) or (lambda s: [self.local.screen(x) for x in s])
        return self._spread(list(specs), local_many, "screening")

    def _spread(self, specs: list, local_many: Callable, what: str) -> list[float]:
        ctx = self.context
        self.calls += 1
        mine = shard(len(specs), ctx.rank, ctx.world_size)
        start = time.perf_counter()
        values, error = [], None
        try:
            values = [float(v) for v in local_many([specs[i] for i in mine])] if mine else []
        except Exception as e:  # noqa: BLE001 - every rank learns of it below, then it is raised
            error = e
        seconds = time.perf_counter() - start
        self.evaluated += len(mine)
        self.seconds += seconds
        digest = hashlib.sha256("".join(spec.key() for spec in specs).encode()).hexdigest()[:16]
        message = None if error is None else f"{type(error).__name__}: {error}"
        gathered = ctx.gather((digest, values, message, seconds))
        if error is not None:
            raise error
        for rank, (_, _, failure, _) in enumerate(gathered):
            if failure is not None:
                raise SubnetError(f"{ctx.label}: stopped because rank {rank} failed ({failure})")
        if any(other != digest for other, *_ in gathered):
            raise SubnetError(f"{ctx.label}: the processes hold different {what} candidates (their searches "
                              "diverged); start every process with the same inputs")
        logger.info("%s: %s of %d candidates, %d evaluated here in %.1f s (slowest rank %.1f s)", ctx.label, what,
                    len(specs), len(mine), seconds, max(g[3] for g in gathered))
        out: list[float] = [0.0] * len(specs)
        for rank, (_, rank_values, _, _) in enumerate(gathered):
            for index, value in zip(shard(len(specs), rank, ctx.world_size), rank_values, strict=True):
                out[index] = value
        return out

    def totals(self) -> list[dict]:
        """Per rank: candidates evaluated and seconds spent (a collective: every rank calls it)."""
        return [{"rank": rank, "evaluated": evaluated, "seconds": seconds}
                for rank, (evaluated, seconds) in enumerate(self.context.gather((self.evaluated, self.seconds)))]
