"""Models larger than the accelerator: weights stay in CPU memory (or memory-mapped from safetensors on
disk) and each decoder block moves to the accelerator only while it runs.

:class:`BlockStreamer` moves a block's tensors to the compute device and back. While block ``i``
computes, block ``i + 1`` is already being copied on a side CUDA stream by a worker thread (from
pinned memory when the weights live in RAM, straight from the page cache when they are memory-mapped),
so the transfer hides behind the compute; at most two blocks are on the device at any time (the one
computing and the one arriving), which bounds device memory by about two blocks plus activations.

The same code runs on the CPU with a no-op transfer (the "device" tensor is the home tensor itself),
so every pass is tested on the CPU; ``copy=True`` makes the CPU transfer a real copy, which lets the
tests see which blocks are resident.

Three users:

* the block-by-block calibration driver (:class:`~optimum_subnet.calibration.driver.BlockwiseRunner`:
  importance, reformation) iterates blocks with :meth:`BlockStreamer.stream`;
* full forward passes (perplexity, AtMan) run under :func:`streamed_forward`, which attaches an
  accelerate ``ModelHook`` to every decoder layer (load on entry, prefetch the next, release on exit)
  and keeps the embeddings, final norm and LM head on the device for the duration;
* the search's fitness streams the dense blocks once for a whole group of candidates
  (:class:`~optimum_subnet.pipeline.fitness.StreamedFitness`).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class _Block:
    """One block's tensors on their way to (or on) the device."""

    index: int
    params: list[nn.Parameter]
    homes: list[torch.Tensor]
    buffers: list[tuple[nn.Module, str, torch.Tensor]]
    nbytes: int
    future: Future | None = None
    device_tensors: list[torch.Tensor] = field(default_factory=list)
    device_buffers: list[torch.Tensor] = field(default_factory=list)
    event: object = None
    acquired: bool = False
    writeback: set = field(default_factory=set)  # ids of parameters copied home on release


def block_tensors(modules: Sequence[nn.Module]) -> tuple[list[nn.Parameter], list[tuple[nn.Module, str, torch.Tensor]]]:
    """Unique parameters of ``modules`` (a parameter shared by two of them counts once) and their buffers."""
    params, seen = [], set()
    buffers = []
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        for owner in module.modules():
            for name, buf in owner._buffers.items():
                if buf is not None and (id(owner), name) not in seen:
                    seen.add((id(owner), name))
                    buffers.append((owner, name, buf))
    return params, buffers


class BlockStreamer:
    """Moves blocks (tuples of modules) to ``device`` one at a time, prefetching the next.

    ``pin``: copy the home tensors of :meth:`pin` -ed modules into page-locked memory (CUDA only), so
    that host-to-device copies run asynchronously at full bandwidth. Memory-mapped weights are left
    where they are (pinning would read them all into RAM). ``copy``: on the CPU, make the transfer a
    real copy (tests); on CUDA it always is one.

    Counters: ``resident`` (blocks on the device now), ``peak_resident``, ``loads``, ``bytes_moved``.
    """

    def __init__(self, device: str | torch.device, copy: bool | None = None, prefetch: bool = True):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.copy = True if self.cuda else bool(copy)
        self.prefetch = prefetch
        self._side = torch.cuda.Stream(self.device) if self.cuda else None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="block-prefetch") if self.cuda else None
        self._acquired: dict[int, int] = {}  # id(param) -> block index currently holding it
        self.resident = 0
        self.peak_resident = 0
        self.loads = 0
        self.bytes_moved = 0

    # ------------------------------------------------------------------------------ home memory
    def pin(self, modules: Sequence[nn.Module]) -> int:
        """Page-lock the home copies of ``modules``' weights (CUDA only; memory-mapped tensors are
        skipped). Returns the bytes pinned."""
        if not self.cuda:
            return 0
        from optimum_subnet.pipeline.memory import is_memory_mapped, mapped_safetensors_ranges

        pinned = 0
        params, _ = block_tensors(modules)
        ranges = mapped_safetensors_ranges() or []
        for p in params:
            if p.device.type == "cpu" and not p.is_pinned() and not is_memory_mapped(p, ranges):
                p.data = p.data.pin_memory()
                pinned += p.numel() * p.element_size()
        return pinned

    # ------------------------------------------------------------------------------- transfers
    def load(self, modules: Sequence[nn.Module], index: int = 0, writeback: Sequence[nn.Module] = ()) -> _Block:
        """Start moving ``modules``' tensors to the device (asynchronous on CUDA). The weights of the
        ``writeback`` modules change on the device (reformation) and are copied home on release."""
        params, buffers = block_tensors(modules)
        for p in params:
            if id(p) in self._acquired:
                raise RuntimeError(f"a parameter of block {index} is still on the device with block "
                                   f"{self._acquired[id(p)]}: blocks streamed together must not share weights")
        homes = [p.data for p in params]
        nbytes = sum(h.numel() * h.element_size() for h in homes)
        block = _Block(index=index, params=params, homes=homes, buffers=buffers, nbytes=nbytes,
                       writeback={id(p) for m in writeback for p in m.parameters()})
        self.resident += 1
        self.peak_resident = max(self.peak_resident, self.resident)
        self.loads += 1
        if self.copy:
            self.bytes_moved += nbytes
        if self.cuda:
            block.future = self._worker.submit(self._upload, block)
        else:
            block.device_tensors = [h.clone() if self.copy else h for h in homes]
            block.device_buffers = [b.clone() if self.copy else b for _, _, b in buffers]
        return block

    def _upload(self, block: _Block) -> None:
        """Worker thread: copy on the side stream, record an event the compute stream waits for."""
        with torch.cuda.device(self.device), torch.cuda.stream(self._side):
            block.device_tensors = [h.to(self.device, non_blocking=True) for h in block.homes]
            block.device_buffers = [b.to(self.device, non_blocking=True) for _, _, b in block.buffers]
            event = torch.cuda.Event()
            event.record(self._side)
        block.event = event

    def acquire(self, block: _Block) -> None:
        """Wait for ``block``'s transfer and point its modules at the device copies."""
        if block.future is not None:
            block.future.result()
            block.future = None
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(block.event)
            for t in block.device_tensors + block.device_buffers:
                t.record_stream(stream)  # the allocator must not reuse them before the compute is done
        for p, t in zip(block.params, block.device_tensors):
            p.data = t
            self._acquired[id(p)] = block.index
        for (owner, name, _), t in zip(block.buffers, block.device_buffers):
            owner._buffers[name] = t
        block.acquired = True

    def release(self, block: _Block) -> None:
        """Point the modules back at their home tensors (the block's ``writeback`` weights copied home first)."""
        if block.future is not None:  # prefetched, never used
            block.future.result()
            block.future = None
        if block.acquired:
            for p, home in zip(block.params, block.homes):
                if id(p) in block.writeback and p.data is not home:
                    home.copy_(p.data)
                p.data = home
                self._acquired.pop(id(p), None)
            for owner, name, buf in block.buffers:
                owner._buffers[name] = buf
            block.acquired = False
        block.device_tensors, block.device_buffers = [], []
        self.resident -= 1

    def stream(self, blocks: Sequence[Sequence[nn.Module]], writeback: Sequence[int] = ()) -> Iterator[int]:
        """Yield the index of each block once its tensors are on the device; the next block's transfer
        runs meanwhile. ``writeback``: positions, within each block, of the modules whose weights change
        on the device (reformation's subnet layer) and are copied home when the block leaves."""
        pending: dict[int, _Block] = {}

        def load(i: int) -> _Block:
            return self.load(blocks[i], i, writeback=[blocks[i][k] for k in writeback])

        try:
            for i in range(len(blocks)):
                if i not in pending:
                    pending[i] = load(i)
                if self.prefetch and i + 1 < len(blocks):
                    pending[i + 1] = load(i + 1)
                block = pending.pop(i)
                self.acquire(block)
                try:
                    yield i
                finally:
                    self.release(block)
        finally:
            for block in pending.values():
                self.release(block)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def describe(self) -> dict:
        return {"device": str(self.device), "loads": self.loads, "peak_resident_blocks": self.peak_resident,
                "bytes_moved": self.bytes_moved, "prefetch": self.prefetch}


# ------------------------------------------------------------------------------ whole-model passes
def non_block_modules(model, adapter) -> list[nn.Module]:
    """The modules outside the decoder blocks (embeddings, final norm, LM head, rotary tables)."""
    layers = adapter.decoder_layers(model)
    inside = {id(m) for layer in layers for m in layer.modules()}
    outside = []
    for module in model.modules():
        if id(module) in inside or module is layers:
            continue
        if any(True for _ in module.parameters(recurse=False)) or any(
                b is not None for b in module._buffers.values()):
            outside.append(module)
    return outside


@contextmanager
def head_on_device(model, adapter, device) -> Iterator[None]:
    """Keep everything but the decoder blocks on ``device`` (and move it back afterwards)."""
    device = torch.device(device)
    moved = []
    for module in non_block_modules(model, adapter):
        for p in module.parameters(recurse=False):
            if p.device != device:
                moved.append((p, p.data))
                p.data = p.data.to(device)
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.device != device:
                moved.append((module, name, buf))
                module._buffers[name] = buf.to(device)
    try:
        yield
    finally:
        for entry in moved:
            if len(entry) == 2:
                entry[0].data = entry[1]
            else:
                entry[0]._buffers[entry[1]] = entry[2]


class _Schedule:
    """Block order of one model for the forward hooks: entering block ``i`` prefetches ``i + 1``."""

    def __init__(self, streamer: BlockStreamer, layers: Sequence[nn.Module]):
        self.streamer = streamer
        self.layers = list(layers)
        self.pending: dict[int, _Block] = {}
        self.active: dict[int, _Block] = {}

    def enter(self, i: int) -> None:
        block = self.pending.pop(i, None)
        for stale in list(self.pending):  # prefetched for a call that did not come (an exception upstream)
            self.streamer.release(self.pending.pop(stale))
        if block is None:
            block = self.streamer.load([self.layers[i]], i)
        # the block after the last is the first one of the next forward pass (batches come in a loop)
        nxt = (i + 1) % len(self.layers)
        if self.streamer.prefetch and nxt != i and nxt not in self.active:
            self.pending[nxt] = self.streamer.load([self.layers[nxt]], nxt)
        self.streamer.acquire(block)
        self.active[i] = block

    def leave(self, i: int) -> None:
        self.streamer.release(self.active.pop(i))

    def close(self) -> None:
        for block in list(self.pending.values()) + list(self.active.values()):
            self.streamer.release(block)
        self.pending.clear()
        self.active.clear()


@contextmanager
def streamed_forward(model, adapter, streamer: BlockStreamer) -> Iterator[None]:
    """Run ordinary forward passes of ``model`` (perplexity, AtMan) with its blocks streamed.

    accelerate's hooks (``add_hook_to_module``) wrap each decoder layer's forward: on entry the block
    is loaded (usually already prefetched) and the next one starts moving; on exit it goes home. The
    non-block modules stay on the device meanwhile (:func:`head_on_device`).
    """
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    class StreamHook(ModelHook):
        def __init__(self, schedule: _Schedule, index: int):
            self.schedule, self.index = schedule, index

        def pre_forward(self, module, *args, **kwargs):
            self.schedule.enter(self.index)
            return args, kwargs

        def post_forward(self, module, output):
            self.schedule.leave(self.index)
            return output

    layers = adapter.decoder_layers(model)
    schedule = _Schedule(streamer, layers)
    with head_on_device(model, adapter, streamer.device):
        for i, layer in enumerate(layers):
            add_hook_to_module(layer, StreamHook(schedule, i))
        try:
            yield
        finally:
            schedule.close()
            for layer in layers:
                remove_hook_from_module(layer)
