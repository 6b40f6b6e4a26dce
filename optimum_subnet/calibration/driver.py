"""Stream calibration windows through a model one decoder block at a time.

Only one block's weights need to be on the compute device and only one block's activation
statistics are alive at once, so the same code calibrates a model that does not fit in device
memory: with a :class:`~optimum_subnet.calibration.offload.BlockStreamer` the blocks stay in CPU
memory (or memory-mapped on disk) and :meth:`BlockwiseRunner.blocks` brings each one to the device
while the next one is already on its way. The hidden states of all samples between two blocks are
kept (N x seq x hidden; 2 GB for 128 x 2048 LLaMA-7B windows in fp16).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from optimum_subnet.core.errors import NonFiniteError

logger = logging.getLogger(__name__)


class BlockwiseRunner:
    def __init__(self, model, adapter, windows: torch.Tensor, batch_size: int, device: str | torch.device,
                 streamer=None):
        self.model = model
        self.adapter = adapter
        self.windows = windows
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device) if streamer is None else streamer.device
        self.streamer = streamer
        self._kwargs: dict | None = None

    @torch.no_grad()
    def initial_states(self) -> list[torch.Tensor]:
        """Hidden states entering the first block, one tensor per batch of windows."""
        embed = self.model.get_input_embeddings()
        original = embed.weight.device
        embed.to(self.device)
        try:
            states = [
                self.adapter.embed(self.model, batch.to(self.device))
                for batch in self.windows.split(self.batch_size)
            ]
        finally:
            embed.to(original)
        return states

    def context(self, hidden: torch.Tensor):
        """Masks and rotary tables for one batch shape (cached: every batch but the last has it)."""
        key = (tuple(hidden.shape[:2]), hidden.dtype, hidden.device)
        if self._kwargs is None or self._kwargs["key"] != key:
            self._kwargs = {"key": key, "value": self.adapter.layer_context(self.model, hidden)}
        return self._kwargs["value"]

    @contextmanager
    def on_device(self, *modules: nn.Module) -> Iterator[None]:
        """Move modules to the compute device for the duration of the block (and back)."""
        originals = [next(m.parameters()).device for m in modules]
        for m in modules:
            m.to(self.device)
        try:
            yield
        finally:
            for m, d in zip(modules, originals):
                m.to(d)

    def blocks(self, blocks: Sequence[Sequence[nn.Module]], writeback: Sequence[int] = ()) -> Iterator[int]:
        """Yield the index of each block (a tuple of modules) while it is on the compute device.

        With a streamer the next block's transfer overlaps this one's compute, and the modules at the
        ``writeback`` positions of each block (weights changed on the device) are copied home; without
        one, each block is moved for its turn (a no-op when the model already lives on the device).
        """
        if self.streamer is not None:
            yield from self.streamer.stream(blocks, writeback=writeback)
            return
        for i, block in enumerate(blocks):
            with self.on_device(*block):
                yield i

    @torch.no_grad()
    def run_layer(self, layer: nn.Module, states: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for hidden in states:
            outputs.append(self.adapter.run_layer(layer, hidden, self.context(hidden)))
        if not all(torch.isfinite(o).all() for o in outputs):
            raise NonFiniteError("non-finite hidden states during calibration; the model or data produce NaN/inf")
        return outputs
