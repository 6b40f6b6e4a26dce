"""Greedy decoding with a static KV cache and, on CUDA, each decode step replayed from a CUDA graph.

Eager PyTorch decoding of a 7B-shaped model at batch 1 spends most of each step launching kernels
(hundreds per token), so a subnet's smaller weights barely show in its speed (see
``benchmarks/results/decode_diagnostic_llama7b.md``). Capturing one decode step in a CUDA graph removes
the launch overhead; what remains is closer to the weight-streaming cost that pruning reduces.

Works for dense models and heterogeneous subnets alike: transformers' ``StaticCache`` sizes each layer's
buffers from the first keys it receives, so every layer keeps its own KV head count and head size. The
attention mask is a fixed-size 4D boolean buffer (``batch x 1 x 1 x max_length``) updated in place, so
that nothing in the captured step depends on host-side values (a 2D mask would make transformers check
it on the host, which a capture forbids).
"""

from __future__ import annotations

import time

import torch

#: eager decode steps before the capture (real steps, not timed): lets cuBLAS and the allocator settle
DEFAULT_WARMUP_STEPS = 2


class GreedyStaticDecoder:
    """``GreedyStaticDecoder(model, max_length).generate(input_ids, new_tokens) -> (batch, new_tokens)``.

    ``use_graph``: capture the decode step in a CUDA graph (default: when the model is on CUDA).
    The prompt (prefill) runs eagerly. Prompts must be unpadded (all rows the same length).
    """

    def __init__(self, model, max_length: int, use_graph: bool | None = None,
                 warmup_steps: int = DEFAULT_WARMUP_STEPS):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.model = model.eval()
        self.max_length = int(max_length)
        self.device = next(model.parameters()).device
        self.use_graph = self.device.type == "cuda" if use_graph is None else bool(use_graph)
        if self.use_graph and self.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.warmup_steps = max(1, int(warmup_steps))
        self.graph: torch.cuda.CUDAGraph | None = None
        #: seconds of the last ``generate``: prefill, and the timed decode steps (graph replays, or eager
        #: steps without a graph; warm-up steps excluded), synchronized at both ends
        self.timing: dict[str, float] = {}

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _new_cache(self):
        from transformers import StaticCache

        return StaticCache(config=self.model.config, max_cache_len=self.max_length)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        batch, prompt = input_ids.shape
        if new_tokens < 1:
            raise ValueError(f"new_tokens must be at least 1, got {new_tokens}")
        if prompt + new_tokens > self.max_length:
            raise ValueError(f"prompt ({prompt}) + new tokens ({new_tokens}) exceed max_length {self.max_length}")
        device = self.device
        input_ids = input_ids.to(device)
        cache = self._new_cache()
        start = self._sync()
        positions = torch.arange(self.max_length, device=device)
        # prefill: causal over the prompt, nothing beyond it
        prefill_mask = (positions[None, :] <= positions[:prompt, None])[None, None].expand(batch, 1, -1, -1)
        out = self.model(input_ids=input_ids, attention_mask=prefill_mask, past_key_values=cache,
                         cache_position=positions[:prompt], position_ids=positions[:prompt].expand(batch, -1),
                         use_cache=True)
        # static state of the decode step, updated in place (inside the graph when there is one)
        token = out.logits[:, -1:].argmax(-1)  # (batch, 1)
        self.timing = {"prefill_s": self._sync() - start}
        position = torch.full((1,), prompt, dtype=torch.long, device=device)
        mask = (positions < prompt)[None, None, None].expand(batch, 1, 1, -1).contiguous()

        def step() -> None:
            mask.index_fill_(-1, position, True)
            logits = self.model(input_ids=token, attention_mask=mask, past_key_values=cache,
                                cache_position=position, position_ids=position.expand(batch, 1),
                                use_cache=True).logits
            token.copy_(logits[:, -1:].argmax(-1))
            position.add_(1)

        generated = [token.clone()]
        if not self.use_graph:
            start = self._sync()
            for _ in range(new_tokens - 1):
                step()
                generated.append(token.clone())
            self.timing.update(decode_s=self._sync() - start, decode_steps=new_tokens - 1)
            return torch.cat(generated, dim=1)

        # warm-up steps are real decode steps, run eagerly on a side stream (as torch.cuda.graphs asks)
        warmup = min(self.warmup_steps, new_tokens - 1)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step()
                generated.append(token.clone())
        torch.cuda.current_stream(device).wait_stream(side)
        remaining = new_tokens - 1 - warmup
        if remaining > 0:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # recorded, not run: the state does not move here
                step()
            self.graph = graph
            start = self._sync()
            for _ in range(remaining):
                graph.replay()
                generated.append(token.clone())
            self.timing.update(decode_s=self._sync() - start, decode_steps=remaining)
        return torch.cat(generated, dim=1)
