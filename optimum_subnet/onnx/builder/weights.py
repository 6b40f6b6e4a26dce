"""Where the direct builder reads weights from: a loaded PyTorch model (through its family adapter) or
random values of the right shapes (benchmarks at shapes nobody wants to initialize in PyTorch).

A source hands out torch tensors in PyTorch's layout (``(out, in)`` projections); the builder packs,
transposes and converts them. Roles: ``q k v o gate up down`` (as :meth:`DecoderFamily.linears`).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

ROLES = ("q", "k", "v", "o", "gate", "up", "down")


class WeightSource(Protocol):
    """What the builder reads. ``layer`` counts the graph's decoder layers (a subnet's kept layers)."""

    def embedding(self) -> torch.Tensor: ...  # (vocab, hidden)

    def lm_head(self) -> torch.Tensor | None: ...  # (vocab, hidden); None: tied to the embedding

    def final_norm(self) -> torch.Tensor: ...

    def projection(self, layer: int, role: str) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def norm(self, layer: int, place: str) -> torch.Tensor: ...

    def qk_norm(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class ModelWeights:
    """The weights of a loaded dense model or subnet, read through its family adapter."""

    def __init__(self, model, adapter):
        self.model, self.adapter = model, adapter
        self.layers = adapter.decoder_layers(model)
        self._linears: dict[int, dict] = {}

    def embedding(self):
        return self.adapter.embedding_weight(self.model).detach()

    def lm_head(self):
        head = self.adapter.lm_head_weight(self.model)
        return None if head is None else head.detach()

    def final_norm(self):
        return self.adapter.final_norm_weight(self.model).detach()

    def projection(self, layer, role):
        if layer not in self._linears:
            self._linears = {layer: self.adapter.linears(self.layers[layer])}  # one layer at a time
        proj = self._linears[layer][role]
        bias = proj.bias
        return proj.weight.detach(), None if bias is None else bias.detach()

    def norm(self, layer, place):
        return self.adapter.norm_weights(self.layers[layer])[place].detach()

    def qk_norm(self, layer):
        q, k = self.adapter.qk_norm_weights(self.layers[layer])
        return q.detach(), k.detach()


class RandomWeights:
    """Random weights for a config's shapes (dense or subnet), generated per tensor on ``device``.

    Values are normal with std ``1/sqrt(fan_in)`` (activations stay O(1) through the layers; never
    zeros, which would time an unrealistic fast path); norms are ones. ``seed`` makes them
    reproducible. Generating on the GPU is fast; on a CPU a 7B shape takes minutes, so ``pool=True``
    draws one buffer of normal values once and hands out slices of it at shifting offsets (random,
    not independent: for timing the build itself).
    """

    def __init__(self, config, dtype: torch.dtype = torch.float16, device: str = "cpu", seed: int = 0,
                 tied: bool | None = None, qkv_bias: bool = False, pool: bool = False):
        self.config, self.dtype, self.device = config, dtype, torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.tied = bool(getattr(config, "tie_word_embeddings", False)) if tied is None else tied
        self.qkv_bias = qkv_bias
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        layers = getattr(config, "subnet_layers", None)
        if layers is None:
            layers = [{"num_attention_heads": config.num_attention_heads,
                       "num_key_value_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                       "head_dim": head_dim, "intermediate_size": config.intermediate_size}] * config.num_hidden_layers
        self.layer_sizes = layers
        self._pool = None
        self._offset = 0
        if pool:
            biggest = max(config.vocab_size * config.hidden_size,
                          max(config.hidden_size * (l["num_attention_heads"] + l["num_key_value_heads"]) * l["head_dim"]
                              for l in layers),
                          max(config.hidden_size * l["intermediate_size"] for l in layers))
            # scaled once (for a 4096-wide input): no per-tensor arithmetic, which is slow in fp16 on a CPU
            self._pool = torch.empty(biggest + 4099, dtype=torch.float32, device=self.device).normal_(
                0.0, 1.0 / 64, generator=self.generator).to(dtype)

    def _normal(self, rows: int, cols: int) -> torch.Tensor:
        if self._pool is not None:
            self._offset = (self._offset + 1031) % 4099
            return self._pool[self._offset: self._offset + rows * cols].view(rows, cols)
        out = torch.empty((rows, cols), dtype=torch.float32, device=self.device)
        out.normal_(0.0, 1.0 / math.sqrt(cols), generator=self.generator)
        return out.to(self.dtype)

    def embedding(self):
        return self._normal(self.config.vocab_size, self.config.hidden_size)

    def lm_head(self):
        return None if self.tied else self._normal(self.config.vocab_size, self.config.hidden_size)

    def final_norm(self):
        return torch.ones(self.config.hidden_size, dtype=self.dtype, device=self.device)

    def projection(self, layer, role):
        size = self.layer_sizes[layer]
        hidden = self.config.hidden_size
        q = size["num_attention_heads"] * size["head_dim"]
        kv = size["num_key_value_heads"] * size["head_dim"]
        mlp = size["intermediate_size"]
        rows, cols = {"q": (q, hidden), "k": (kv, hidden), "v": (kv, hidden), "o": (hidden, q),
                      "gate": (mlp, hidden), "up": (mlp, hidden), "down": (hidden, mlp)}[role]
        bias = None
        if role in ("q", "k", "v") and self.qkv_bias:
            bias = torch.zeros(rows, dtype=self.dtype, device=self.device).normal_(0, 0.02, generator=self.generator)
        return self._normal(rows, cols), bias

    def norm(self, layer, place):
        return torch.ones(self.config.hidden_size, dtype=self.dtype, device=self.device)

    def qk_norm(self, layer):
        d = self.layer_sizes[layer]["head_dim"]
        ones = torch.ones(d, dtype=self.dtype, device=self.device)
        return ones, ones.clone()
