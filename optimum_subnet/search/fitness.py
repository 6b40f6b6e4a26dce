"""Fitness of a candidate: perplexity of its physically extracted subnet on calibration windows."""

from __future__ import annotations

import torch

from ..evaluation import perplexity
from ..surgery import extract_subnet


class PerplexityFitness:
    """``fitness(genome) -> perplexity`` (lower is better).

    Each call cuts the real subnet out of the dense model (kept rows/columns copied, embeddings and
    norms shared), so a candidate costs its own, smaller forward pass rather than the dense one.
    """

    def __init__(self, model, adapter, space, windows: torch.Tensor, batch_size: int):
        self.model = model
        self.adapter = adapter
        self.space = space
        self.windows = windows
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, genome) -> float:
        subnet = extract_subnet(self.model, self.space.to_spec(genome), self.adapter)
        return perplexity(subnet, self.windows, self.batch_size)
