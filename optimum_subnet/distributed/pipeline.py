"""Fitness of candidates for a model too big for one GPU: its blocks split by layers across the
processes, candidates pipelined through them (a pipeline over blocks).

Process ``r`` of ``W`` holds the contiguous blocks :func:`stage_bounds` gives it (rank 0 also the
embeddings, the last rank the final norm and LM head), resident on its own device. For each
candidate, rank 0 embeds the fitness windows and runs the candidate's layers cut from its blocks,
then sends the hidden states to rank 1 (``isend``: it goes on with the next candidate meanwhile), and
so on; the last rank computes the perplexity. While rank 1 works on candidate ``c``, rank 0 already
works on ``c + 1``: with a generation of ``N`` candidates the pipeline is busy on all ranks but for
``W - 1`` steps at its ends (GPipe's bubble, with candidates as the micro-batches). The values are
broadcast from the last rank, so every process continues the search with all of them, as with
:class:`~optimum_subnet.distributed.fitness.DistributedFitness`.

Each candidate's layers are cut from the resident dense blocks on the fly (the slicing of
:class:`~optimum_subnet.pipeline.streamed.StreamedFitness`), and the operations are those of a
single-process evaluation, so the values equal it. Hidden states travel between processes once per
candidate and stage boundary (``windows x seq x hidden`` each).
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import torch

from optimum_subnet.pipeline.streamed import StreamedFitness, fill_layer, subnet_skeleton

logger = logging.getLogger(__name__)

#: candidates a rank may run ahead of the next one (sends still in flight), which bounds the memory
#: their hidden states take while waiting
LOOKAHEAD = 2


def stage_bounds(num_layers: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of the blocks rank ``rank`` holds: contiguous, sizes differing by at most one."""
    base, extra = divmod(num_layers, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class PipelinedFitness(StreamedFitness):
    """``many(specs)``: perplexity of every spec on ``windows``, the dense blocks split across the ranks
    of ``context`` (see the module docstring). Every rank calls it with the same specs. The caller puts
    this rank's blocks (:func:`stage_bounds`) and the head modules it needs on ``device``."""

    def __init__(self, model, adapter, windows: torch.Tensor, batch_size: int, context, device,
                 screening_windows: torch.Tensor | None = None):
        super().__init__(model, adapter, windows, batch_size, streamer=None, screening_windows=screening_windows)
        self.context = context
        self.device = torch.device(device)
        self.start, self.stop = stage_bounds(len(adapter.decoder_layers(model)), context.rank, context.world_size)
        self.seconds = 0.0

    def _perplexities(self, specs: list, windows: torch.Tensor) -> list[float]:
        import torch.distributed as dist

        ctx = self.context
        first, last = ctx.rank == 0, ctx.rank == ctx.world_size - 1
        model, adapter = self.model, self.adapter
        shape = adapter.shape(model.config)
        dense_layers = adapter.decoder_layers(model)
        batches = [batch.to(self.device) for batch in windows.split(self.batch_size)]
        hidden_shapes = [(*batch.shape, shape.hidden_size) for batch in batches]
        dtype = next(dense_layers[self.start].parameters()).dtype if self.stop > self.start else model.dtype
        values: list[float] = []
        sends: list[tuple[list, list]] = []  # (works, tensors) per candidate, in order
        start_time = time.perf_counter()
        with torch.no_grad():
            for spec in specs:
                if first:
                    states = [adapter.embed(model, batch) for batch in batches]
                else:
                    states = [torch.empty(s, dtype=dtype, device=self.device) for s in hidden_shapes]
                    for tensor in states:
                        dist.recv(tensor, src=ctx.rank - 1)
                skeleton = subnet_skeleton(model, spec, adapter)
                contexts = [adapter.layer_context(skeleton, hidden) for hidden in states]
                layers = adapter.decoder_layers(skeleton)
                for i, layer_spec in enumerate(spec.layers):
                    if not self.start <= layer_spec.source_index < self.stop:
                        continue
                    fill_layer(layers[i], dense_layers[layer_spec.source_index], layer_spec, shape, adapter,
                               self.device)
                    states = [adapter.run_layer(layers[i], hidden, context) for hidden, context in zip(states, contexts)]
                    layers[i] = torch.nn.Identity()  # frees the sliced weights
                if last:
                    values.append(self._perplexity(states, batches))
                else:
                    states = [s.contiguous() for s in states]
                    sends.append(([dist.isend(s, dst=ctx.rank + 1) for s in states], states))
                    while len(sends) > LOOKAHEAD:  # bound the hidden states waiting to be received
                        for work in sends.pop(0)[0]:
                            work.wait()
            for works, _ in sends:
                for work in works:
                    work.wait()
        self.seconds += time.perf_counter() - start_time
        box = [values if last else None]
        dist.broadcast_object_list(box, src=ctx.world_size - 1)
        logger.info("%s: blocks %d-%d of %d candidates in %.1f s", ctx.label, self.start, self.stop - 1,
                    len(specs), time.perf_counter() - start_time)
        return [float(v) for v in box[0]]

    def many(self, specs: Sequence) -> list[float]:
        return self._perplexities(list(specs), self.windows)
