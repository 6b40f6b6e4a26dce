"""Primal-Attention on a GPU (issue 16): memory and latency of one replaced layer against SDPA attention,
of a whole random-weight model decoding at long context, and (``--package``) of the shipped code, in one run.

    python3 benchmarks/primal_gpu.py --package --out "$OUT"    # one H100 / H200 (results: benchmarks/results/primal_gpu_h100.md)
    python3 benchmarks/primal_gpu.py --device cpu --tiny --package --out /tmp/x   # CPU smoke test
    # why the unconverted model (K=0) decodes 2.7x slower than converted ones on CUDA: one profiled decode
    # step per K, and K=0 measured again after the others (an order effect)
    python3 benchmarks/primal_gpu.py --package --package-profile --package-counts 0 2 0 --seq-lens 1024 \
        --primal-counts 0 --model-context 2048 --package-contexts 2048 --out "$OUT"

Parts 1 and 2 are plain PyTorch (no transformers, no optimum-subnet import), so they run with whatever
torch the GPU machine has; part 3 (``--package``) imports transformers and ``optimum_subnet`` (the
project on ``PYTHONPATH`` and its pure-Python wheels) and, if that fails, records the error and keeps
parts 1 and 2. The layers of parts 1-2 are the same computations as the package's (``tests/unit/
test_primal_gpu_benchmark.py`` checks :class:`PrimalLayer` against ``PrimalAttention`` and the cached
decode of :class:`SdpaAttention` against its full causal forward):

* **SDPA attention**: q/k/v/o projections, RoPE, ``F.scaled_dot_product_attention`` (causal prefill;
  decode over a preallocated KV cache, GQA through ``enable_gqa``), the layer a primal layer replaces;
* **Primal layer**: q/k projections, running sums (``cumsum`` in prefill, one addition per decoded
  token), cosine feature maps, projection scores ``e = W_e^T phi_q``, ``r = W_r^T phi_k`` of rank ``s``,
  output projection: float32 state and scores, as ``modeling_primal``.

Part 1, one layer, for each sequence length N: prefill of N tokens (time, peak memory above the
input), and per-token decode with a context of N tokens (time per token over ``--decode-steps``
steps; the KV cache the layer holds against the primal state). Part 2, a LLaMA-3.2-1B-shaped decoder
with random weights decoding at ``--model-context`` tokens (batch ``--model-batch``) with the last
K layers primal, K in ``--primal-counts``: time per token, KV-cache bytes, peak memory. Part 3, the
shipped code: a SmolLM2-135M-shaped LLaMA (random weights) whose last K layers (``--package-counts``)
the package converts, prefilling N tokens (``--package-contexts``) and decoding greedily through
transformers' cache (KV layers and ``PrimalStateLayer``): prefill time, time per token, KV-cache and
state bytes, peak memory; plus the incremental step against the full forward on the device. Eager PyTorch,
no CUDA graphs, one CUDA stream; timings are CUDA-event medians. The short table is printed last;
everything is written to ``OUT/primal_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# --------------------------------------------------------------------------------------- layers
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_tables(positions: torch.Tensor, head_dim: int, base: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float()[:, None] * inv[None]
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]


class SdpaAttention(nn.Module):
    """The softmax attention a primal layer replaces (LLaMA layout, no biases)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, rope_base: float = 500000.0):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.rope_base = heads, kv_heads, head_dim, rope_base
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

    def _qkv(self, x: torch.Tensor, start: int):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope_tables(torch.arange(start, start + n, device=x.device), self.head_dim, self.rope_base, x.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def prefill(self, x: torch.Tensor):
        """Causal attention over ``x``; returns the output and the keys / values (the cache)."""
        q, k, v = self._qkv(x, 0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.heads != self.kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)), (k, v)

    def decode(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], length: int) -> torch.Tensor:
        """One token at position ``length``: written into the preallocated cache, attends to ``length + 1``."""
        keys, values = cache
        q, k, v = self._qkv(x, length)
        keys[:, :, length:length + 1] = k
        values[:, :, length:length + 1] = v
        out = F.scaled_dot_product_attention(q, keys[:, :, :length + 1], values[:, :, :length + 1],
                                             enable_gqa=self.heads != self.kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(x.shape[0], 1, -1))


class PrimalLayer(nn.Module):
    """Primal-Attention's causal form, as ``optimum_subnet.primal.modeling_primal.PrimalAttention``."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, rank: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.rank = heads, kv_heads, head_dim, rank
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.w_e = nn.Parameter(torch.randn(heads, head_dim, rank) / math.sqrt(head_dim))
        self.w_r = nn.Parameter(torch.randn(heads, head_dim, rank) / math.sqrt(head_dim))
        self.out_proj = nn.Linear(2 * rank * heads, hidden, bias=True)

    def _features(self, q_sums: torch.Tensor, k_sums: torch.Tensor, dtype) -> torch.Tensor:
        phi_q = q_sums / q_sums.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        phi_k = k_sums / k_sums.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        phi_k = phi_k.repeat_interleave(self.heads // self.kv_heads, dim=1)
        e = torch.einsum("bhnd,hds->bhns", phi_q, self.w_e.float())
        r = torch.einsum("bhnd,hds->bhns", phi_k, self.w_r.float())
        b, _, n, _ = e.shape
        return torch.cat([e, r], dim=-1).transpose(1, 2).reshape(b, n, 2 * self.rank * self.heads).to(dtype)

    def _qk(self, x: torch.Tensor):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2).float()
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2).float()
        return q, k

    def prefill(self, x: torch.Tensor):
        """Output over ``x`` and the state after it (the running sums, float32)."""
        q, k = self._qk(x)
        q_sums, k_sums = q.cumsum(2), k.cumsum(2)
        return self.out_proj(self._features(q_sums, k_sums, x.dtype)), (q_sums[:, :, -1], k_sums[:, :, -1])

    def decode(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], length: int = 0) -> torch.Tensor:
        """One token: the sums grow in place (a fixed-size state whatever the context)."""
        q, k = self._qk(x)
        state[0].add_(q[:, :, 0])
        state[1].add_(k[:, :, 0])
        return self.out_proj(self._features(state[0][:, :, None], state[1][:, :, None], x.dtype))


class RMSNorm(nn.Module):
    def __init__(self, hidden: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(hidden)), eps

    def forward(self, x):
        y = x.float()
        return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class Block(nn.Module):
    def __init__(self, attention: nn.Module, hidden: int, intermediate: int):
        super().__init__()
        self.attention, self.norm1, self.norm2 = attention, RMSNorm(hidden), RMSNorm(hidden)
        self.gate = nn.Linear(hidden, intermediate, bias=False)
        self.up = nn.Linear(hidden, intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)

    def decode(self, h, cache, length):
        h = h + self.attention.decode(self.norm1(h), cache, length)
        x = self.norm2(h)
        return h + self.down(F.silu(self.gate(x)) * self.up(x))


class Decoder(nn.Module):
    """A LLaMA-shaped decoder whose last ``primal`` layers are primal layers (decode only)."""

    def __init__(self, a, primal: int):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.hidden)
        blocks = []
        for index in range(a.layers):
            if index >= a.layers - primal:
                attention = PrimalLayer(a.hidden, a.heads, a.kv_heads, a.head_dim, a.rank)
            else:
                attention = SdpaAttention(a.hidden, a.heads, a.kv_heads, a.head_dim)
            blocks.append(Block(attention, a.hidden, a.intermediate))
        self.blocks = nn.ModuleList(blocks)
        self.norm, self.head = RMSNorm(a.hidden), nn.Linear(a.hidden, a.vocab, bias=False)

    def decode(self, ids, caches, length):
        h = self.embed(ids)
        for block, cache in zip(self.blocks, caches):
            h = block.decode(h, cache, length)
        return self.head(self.norm(h))


# ---------------------------------------------------------------------------------- measurement
class Timer:
    """Median milliseconds of a callable (CUDA events on a GPU, perf_counter on a CPU)."""

    def __init__(self, device: torch.device, warmup: int, reps: int):
        self.device, self.warmup, self.reps = device, warmup, reps

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.reps):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                times.append(1000 * (time.perf_counter() - t))
        return statistics.median(times)


    def once(self, fn) -> float:
        """Milliseconds of one call (no warm-up: a long prefill is warm after the first of its shape)."""
        return self.once_with_result(fn)[0]

    def once_with_result(self, fn):
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end), result
        t = time.perf_counter()
        result = fn()
        return 1000 * (time.perf_counter() - t), result


def peak_bytes(device: torch.device, fn) -> int | None:
    """Peak allocated bytes above what was allocated before ``fn`` (None on a CPU)."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def guarded(fn):
    """``fn()``, or ``{"oom": True}`` when the GPU runs out of memory (the run goes on)."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"oom": True}


@torch.no_grad()
def layer_rows(a, device, dtype, timer) -> list[dict]:
    torch.manual_seed(0)
    sdpa = SdpaAttention(a.hidden, a.heads, a.kv_heads, a.head_dim).to(device, dtype).eval()
    primal = PrimalLayer(a.hidden, a.heads, a.kv_heads, a.head_dim, a.rank).to(device, dtype).eval()
    rows = []
    for n in a.seq_lens:
        x = torch.randn(a.batch, n, a.hidden, device=device, dtype=dtype)
        token = torch.randn(a.batch, 1, a.hidden, device=device, dtype=dtype)
        row = {"seq_len": n, "batch": a.batch}

        def prefill(name, layer):
            return {f"{name}_prefill_ms": timer(lambda: layer.prefill(x)),
                    f"{name}_prefill_peak_bytes": peak_bytes(device, lambda: layer.prefill(x))}

        def sdpa_decode():
            cache = tuple(torch.randn(a.batch, a.kv_heads, n + a.decode_steps, a.head_dim, device=device, dtype=dtype)
                          for _ in range(2))

            def steps():
                for i in range(a.decode_steps):
                    sdpa.decode(token, cache, n + i)

            ms = timer(steps) / a.decode_steps
            held = nbytes(*(c[:, :, :n] for c in cache))  # the cache of an n-token context
            return {"sdpa_decode_ms_per_token": ms, "sdpa_kv_cache_bytes": held,
                    "sdpa_decode_peak_bytes": peak_bytes(device, lambda: sdpa.decode(token, cache, n))}

        def primal_decode():
            state = (torch.randn(a.batch, a.heads, a.head_dim, device=device),
                     torch.randn(a.batch, a.kv_heads, a.head_dim, device=device))

            def steps():
                for _ in range(a.decode_steps):
                    primal.decode(token, state)

            ms = timer(steps) / a.decode_steps
            return {"primal_decode_ms_per_token": ms, "primal_state_bytes": nbytes(*state),
                    "primal_decode_peak_bytes": peak_bytes(device, lambda: primal.decode(token, state))}

        for part in (lambda: prefill("sdpa", sdpa), lambda: prefill("primal", primal), sdpa_decode, primal_decode):
            result = guarded(part)
            row.update(result if "oom" not in result else {"oom": True})
        rows.append(row)
        print(f"layer N={n}: {json.dumps({k: v for k, v in row.items() if k.endswith('_ms') or 'per_token' in k})}",
              file=sys.stderr, flush=True)
        del x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


@torch.no_grad()
def model_rows(a, device, dtype, timer) -> list[dict]:
    rows = []
    n = a.model_context
    for count in a.primal_counts:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        with torch.device(device):  # initialized on the device: seconds, not minutes, for 1B parameters
            model = Decoder(a, count).to(dtype).eval()
        row = {"primal_layers": count, "layers": a.layers, "context": n, "batch": a.model_batch,
               "weights_bytes": nbytes(*model.parameters())}

        def run():
            caches = []
            for block in model.blocks:
                if isinstance(block.attention, PrimalLayer):
                    caches.append((torch.randn(a.model_batch, a.heads, a.head_dim, device=device),
                                   torch.randn(a.model_batch, a.kv_heads, a.head_dim, device=device)))
                else:  # the context's keys and values (random: the time and memory do not depend on them)
                    caches.append(tuple(torch.randn(a.model_batch, a.kv_heads, n + a.decode_steps, a.head_dim,
                                                    device=device, dtype=dtype) for _ in range(2)))
            kv = sum(nbytes(*(t[:, :, :n] for t in c)) for c in caches if c[0].dim() == 4)
            ids = torch.randint(0, a.vocab, (a.model_batch, 1), device=device)

            def steps():
                for i in range(a.decode_steps):
                    model.decode(ids, caches, n + i)

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ms = timer(steps) / a.decode_steps
            total = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
            return {"decode_ms_per_token": ms, "kv_cache_bytes": kv,
                    "state_bytes": sum(nbytes(*c) for c in caches if c[0].dim() == 3),
                    "peak_allocated_bytes": total}

        row.update(guarded(run))
        rows.append(row)
        print(f"model K={count}: {json.dumps(row)}", file=sys.stderr, flush=True)
        del model
    return rows


def package_rows(a, device, dtype, timer) -> dict:
    """Part 3: the shipped code (transformers + ``optimum_subnet``) on this device. A SmolLM2-135M-shaped
    LLaMA with random weights, its last K layers converted by the package (``convert_model``, fitted on
    random calibration tokens: the weights do not change the time or memory), decoding greedily after a
    prompt of N tokens with the transformers cache (KV layers + ``PrimalStateLayer``). Also the check that
    the incremental step equals the full forward on this device (float32, a short sequence)."""
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    import optimum_subnet  # noqa: F401 - registers the primal model types
    from optimum_subnet.primal.convert import convert_model

    p = a.package
    config = LlamaConfig(hidden_size=p["hidden"], intermediate_size=p["intermediate"], num_hidden_layers=p["layers"],
                         num_attention_heads=p["heads"], num_key_value_heads=p["kv_heads"], vocab_size=p["vocab"],
                         max_position_embeddings=max(p["contexts"]) + a.decode_steps + 8, rope_theta=100000.0,
                         tie_word_embeddings=True, attn_implementation="sdpa")
    head_dim = p["hidden"] // p["heads"]

    def build(count: int):
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
        if count:
            windows = torch.randint(3, p["vocab"], (8, 64), generator=torch.Generator().manual_seed(1))
            convert_model(model, {i: min(a.rank, head_dim) for i in range(p["layers"] - count, p["layers"])}, windows)
        return model

    def cache_bytes(cache) -> tuple[int, int]:
        kv = state = 0
        for layer in cache.layers:
            tensors = [t for t in vars(layer).values() if isinstance(t, torch.Tensor)]
            if hasattr(layer, "query_sum"):
                state += nbytes(*tensors)
            else:
                kv += nbytes(*tensors)
        return kv, state

    result = {"versions": {"transformers": transformers.__version__, "optimum_subnet": optimum_subnet.__version__},
              "shape": {**{k: v for k, v in p.items() if k != "contexts"}, "head_dim": head_dim, "rank": a.rank},
              "rows": [], "incremental_check": []}
    with torch.no_grad():
        for count in dict.fromkeys(p["counts"]):  # the incremental step against the full forward, float32
            model = build(count)
            ids = torch.randint(3, p["vocab"], (2, 40), device=device)
            full = model(ids).logits[:, 32:]
            out = model(ids[:, :32], use_cache=True)
            cache, steps = out.past_key_values, []
            for t in range(32, 40):
                out = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                steps.append(out.logits[:, -1])
            diff = (torch.stack(steps, 1) - full).abs().max().item() / full.abs().max().item()
            result["incremental_check"].append({"primal_layers": count, "max_diff_relative_to_max_logit": diff})
            del model
        for count in p["counts"]:
            model = build(count).to(dtype)
            weights = nbytes(*model.parameters())
            for n in p["contexts"]:
                row = {"primal_layers": count, "context": n, "batch": p["batch"], "weights_bytes": weights}

                def run():
                    ids = torch.randint(3, p["vocab"], (p["batch"], n), device=device)
                    peak = torch.cuda.max_memory_allocated if device.type == "cuda" else (lambda: None)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    # warm-up: the same decode steps once untimed. cuDNN's attention builds a plan per new shape
                    # (each step's KV length), which cost the first model measured in a process 2x its decode
                    # time (benchmarks/results/primal_profile_h200.md): the timed steps must find the plans built.
                    warm = model(ids, use_cache=True, logits_to_keep=1)
                    warm_cache, warm_token = warm.past_key_values, warm.logits[:, -1:].argmax(-1)
                    for _ in range(a.decode_steps):
                        warm_token = model(warm_token, past_key_values=warm_cache,
                                           use_cache=True).logits[:, -1:].argmax(-1)
                    del warm, warm_cache
                    out = model(ids, use_cache=True, logits_to_keep=1)  # the prompt's cache
                    prefill_peak = peak()
                    prefill_ms = timer.once(lambda: model(ids, use_cache=True, logits_to_keep=1))
                    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
                    kv, state = cache_bytes(cache)
                    del out
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    times = []
                    for _ in range(a.decode_steps):
                        ms, step = timer.once_with_result(lambda: model(token, past_key_values=cache, use_cache=True))
                        times.append(ms)
                        token = step.logits[:, -1:].argmax(-1)
                    entry = {"prefill_ms": prefill_ms, "prefill_peak_allocated_bytes": prefill_peak,
                             "decode_ms_per_token": statistics.median(times), "kv_cache_bytes": kv,
                             "state_bytes": state, "decode_peak_allocated_bytes": peak()}
                    if a.package_profile and n == p["contexts"][0]:
                        entry["decode_profile"] = profile_step(
                            device, lambda: model(token, past_key_values=cache, use_cache=True))
                    return entry

                row.update(guarded(run))
                result["rows"].append(row)
                print(f"package K={count} N={n}: {json.dumps(row)}", file=sys.stderr, flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return result


SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync",
               "aten::_local_scalar_dense")


def profile_step(device: torch.device, step, top: int = 15) -> dict:
    """One call of ``step`` under torch.profiler (after one unprofiled call): host wall time, host-side
    operator count, GPU kernels launched and their total time, host synchronizations, and the
    operators with the most host time. For a step whose time is not explained by its kernels (issue
    16: the unconverted model decoding 2.7x slower than converted ones on CUDA, which this profile traced to
    cuDNN building attention plans for the first model measured in the process)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step()
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.events()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]

    def device_us(e) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) or 0.0)

    averages = prof.key_averages()
    return {
        "wall_ms": wall * 1e3,
        "host_ops": sum(1 for e in events if e.device_type == DeviceType.CPU and e.name.startswith("aten::")),
        "kernels": len(kernels),
        "kernel_ms": sum(e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
                         for e in kernels) / 1e3 if kernels else 0.0,
        "syncs": {k.key: k.count for k in averages if k.key in SYNC_EVENTS},
        "top_host": [{"name": k.key, "count": k.count, "self_host_ms": k.self_cpu_time_total / 1e3,
                      "self_device_ms": device_us(k) / 1e3}
                     for k in sorted(averages, key=lambda k: -k.self_cpu_time_total)[:top]],
    }


def environment(device: torch.device, dtype: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device), "dtype": dtype,
            "cuda": torch.version.cuda}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    else:
        info["cpu_threads"] = torch.get_num_threads()
    return info


def table(data: dict) -> str:
    gib = 2 ** 30

    def ms(v):
        return "oom" if v is None else f"{v:.3f}"

    def size(v):
        if v is None:
            return "-"
        return f"{v / 2 ** 10:.1f} KiB" if v < 2 ** 20 else f"{v / 2 ** 20:.1f} MiB" if v < gib else f"{v / gib:.2f} GiB"

    s = data["settings"]
    lines = [f"One layer (hidden {s['hidden']}, {s['heads']} heads / {s['kv_heads']} KV, head {s['head_dim']}, "
             f"rank {s['rank']}, batch {s['batch']}, {data['environment']['dtype']}, "
             f"{data['environment'].get('gpu', data['environment']['device'])}): SDPA vs primal",
             "| N | prefill ms sdpa / primal | prefill peak sdpa / primal | decode ms/token sdpa / primal "
             "| KV cache / primal state |", "|---:|---:|---:|---:|---:|"]
    for r in data["layer"]:
        if r.get("oom"):
            lines.append(f"| {r['seq_len']} | oom | | | |")
            continue
        lines.append(f"| {r['seq_len']} | {ms(r['sdpa_prefill_ms'])} / {ms(r['primal_prefill_ms'])} | "
                     f"{size(r['sdpa_prefill_peak_bytes'])} / {size(r['primal_prefill_peak_bytes'])} | "
                     f"{ms(r['sdpa_decode_ms_per_token'])} / {ms(r['primal_decode_ms_per_token'])} | "
                     f"{size(r['sdpa_kv_cache_bytes'])} / {size(r['primal_state_bytes'])} |")
    if data["model"]:
        m = data["model"][0]
        lines += ["", f"Whole model ({m['layers']} layers, random weights {size(m['weights_bytes'])} at K=0), decoding at "
                      f"{m['context']} tokens of context, batch {m['batch']}; last K layers primal",
                  "| K | ms / token | KV cache | peak allocated |", "|---:|---:|---:|---:|"]
        for r in data["model"]:
            if r.get("oom"):
                lines.append(f"| {r['primal_layers']} | oom | | |")
                continue
            lines.append(f"| {r['primal_layers']} | {ms(r['decode_ms_per_token'])} | {size(r['kv_cache_bytes'])} | "
                         f"{size(r['peak_allocated_bytes'])} |")
    package = data.get("package")
    if package and "error" in package:
        lines += ["", f"Shipped code (part 3): failed: {package['error']}"]
    elif package:
        sh = package["shape"]
        lines += ["", f"Shipped code (transformers {package['versions']['transformers']} + optimum_subnet): "
                      f"SmolLM2-135M-shaped LLaMA ({sh['layers']} layers, random weights), last K layers primal "
                      f"(rank {sh['rank']}), greedy decode after N tokens, batch {package['rows'][0]['batch']}"
                  if package["rows"] else "",
                  "| K | N | prefill ms | decode ms / token | KV cache | primal state | decode peak |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in package["rows"]:
            if r.get("oom"):
                lines.append(f"| {r['primal_layers']} | {r['context']} | oom | | | | |")
                continue
            lines.append(f"| {r['primal_layers']} | {r['context']} | {ms(r['prefill_ms'])} | "
                         f"{ms(r['decode_ms_per_token'])} | {size(r['kv_cache_bytes'])} | {size(r['state_bytes'])} | "
                         f"{size(r['decode_peak_allocated_bytes'])} |")
        for r in package["rows"]:
            prof = r.get("decode_profile")
            if prof:
                top = ", ".join(f"{t['name']} x{t['count']} {t['self_host_ms']:.2f} ms" for t in prof["top_host"][:5])
                lines.append(f"Profiled decode step, K={r['primal_layers']} N={r['context']}: wall {prof['wall_ms']:.2f} ms, "
                             f"{prof['kernels']} kernels ({prof['kernel_ms']:.2f} ms on the GPU), {prof['host_ops']} host "
                             f"operators, synchronizations {prof['syncs'] or 'none'}; most host time: {top}")
        checks = ", ".join(f"K={c['primal_layers']}: {c['max_diff_relative_to_max_logit']:.1e}"
                           for c in package["incremental_check"])
        lines.append(f"Incremental step vs full forward (fp32, max |diff| / max |logit|): {checks}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for primal_gpu.json (default: $OUT)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: bf16 on a GPU, fp32 on a CPU")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU smoke test of the script)")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    p.add_argument("--batch", type=int, default=1)
    # one layer and the model: LLaMA-3.2-1B's shape
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--intermediate", type=int, default=8192)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--model-context", type=int, default=32768)
    p.add_argument("--model-batch", type=int, default=8)
    p.add_argument("--primal-counts", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    p.add_argument("--package", action="store_true",
                   help="part 3: the shipped code (needs transformers and optimum_subnet importable)")
    p.add_argument("--package-contexts", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument("--package-batch", type=int, default=4)
    p.add_argument("--package-counts", type=int, nargs="+", default=[0, 2, 4, 8, 30],
                   help="K values in the order measured; a repeated K (e.g. 0 2 0) checks for an order effect")
    p.add_argument("--package-profile", action="store_true",
                   help="also profile one decode step per K at the first context (torch.profiler: kernels, "
                        "host operators, synchronizations)")
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    if a.tiny:
        a.seq_lens, a.hidden, a.heads, a.kv_heads, a.head_dim, a.rank = [64, 128], 64, 4, 2, 16, 4
        a.layers, a.intermediate, a.vocab, a.model_context, a.model_batch = 4, 128, 256, 128, 2
        a.primal_counts, a.decode_steps, a.warmup, a.reps = [0, 2, 4], 4, 1, 2
    # part 3's model: SmolLM2-135M's shape
    a.package = None if not a.package else {
        "hidden": 576, "intermediate": 1536, "layers": 30, "heads": 9, "kv_heads": 3, "vocab": 49152,
        "contexts": a.package_contexts, "batch": a.package_batch, "counts": a.package_counts}
    if a.tiny and a.package:
        a.package.update(hidden=64, intermediate=128, layers=4, heads=4, kv_heads=2, vocab=256, contexts=[48],
                         batch=2, counts=[0, 2])
    if a.package and (max(a.package["counts"]) > a.package["layers"] or min(a.package["counts"]) < 0):
        p.error(f"--package-counts must be in 0..{a.package['layers']}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device: pass --device cpu (with --tiny for a smoke test)")
    if max(a.primal_counts) > a.layers or min(a.primal_counts) < 0:
        p.error(f"--primal-counts must be in 0..{a.layers}")
    if not 1 <= a.rank <= a.head_dim or a.heads % a.kv_heads:
        p.error("--rank must be in 1..--head-dim and --heads a multiple of --kv-heads")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    device = torch.device(a.device)
    dtype_name = a.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    timer = Timer(device, a.warmup, a.reps)
    start = time.perf_counter()
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "device", "dtype")}
    data = {"settings": settings, "environment": environment(device, dtype_name)}
    data["layer"] = layer_rows(a, device, dtype, timer)
    data["model"] = model_rows(a, device, dtype, timer)
    if a.package:
        try:
            data["package"] = package_rows(a, device, dtype, timer)
        except Exception as e:  # noqa: BLE001 - parts 1 and 2 are kept; the failure is the result
            data["package"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"package part failed: {data['package']['error']}", file=sys.stderr, flush=True)
    data["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "primal_gpu.json").write_text(json.dumps(data, indent=2) + "\n")
    print(table(data))
    print(f"\n{data['seconds']} s; JSON: {out / 'primal_gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
