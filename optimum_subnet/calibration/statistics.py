"""Activation statistics and the hooks that collect them (registered and removed in one place)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from optimum_subnet.core.errors import NonFiniteError


class GramAccumulator:
    """Running ``X X^T / n`` (and optionally ``X Y^T / n`` against a second input) over tokens.

    Accumulates in float64 (each batch's product in float32 on the activations' device), so the
    sum over ~10^5 tokens stays accurate. Raises :class:`NonFiniteError` on NaN/inf activations.
    """

    def __init__(self, name: str = "activations"):
        self.name = name
        self.sum: torch.Tensor | None = None
        self.tokens = 0

    def add(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        y = x if y is None else y.reshape(-1, y.shape[-1]).float()
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            raise NonFiniteError(f"non-finite values in {self.name}; the model or data produce NaN/inf")
        product = x.T @ y
        if self.sum is None:
            self.sum = product.to(torch.float64)
        else:  # in place, each float32 entry widened as it is added: no float64 copy of the product, no new sum
            self.sum.add_(product)  # (at LLaMA-7B's MLP width each of those is 0.9 GiB)
        self.tokens += x.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.summed() / self.tokens

    def summed(self) -> torch.Tensor:
        """The running sum itself (no copy): ``mean`` is this over ``tokens``."""
        if self.sum is None:
            raise RuntimeError(f"no activations recorded for {self.name}")
        return self.sum


class MomentAccumulator:
    """Per-channel first and second moments of activations over tokens: mean, variance, mean square.

    What the structured baselines need (FLAP's fluctuation and baseline bias, Wanda-sp's input norm)
    without any (in x in) matrix. Sums in float64; raises :class:`NonFiniteError` on NaN/inf.
    """

    def __init__(self, name: str = "activations"):
        self.name = name
        self.sum: torch.Tensor | None = None
        self.sum_squares: torch.Tensor | None = None
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"non-finite values in {self.name}; the model or data produce NaN/inf")
        x = x.to(torch.float64)
        total, squares = x.sum(0), x.pow(2).sum(0)
        self.sum = total if self.sum is None else self.sum + total
        self.sum_squares = squares if self.sum_squares is None else self.sum_squares + squares
        self.tokens += x.shape[0]

    def _check(self) -> None:
        if self.sum is None:
            raise RuntimeError(f"no activations recorded for {self.name}")

    @property
    def mean(self) -> torch.Tensor:
        self._check()
        return self.sum / self.tokens

    @property
    def mean_square(self) -> torch.Tensor:
        self._check()
        return self.sum_squares / self.tokens

    @property
    def variance(self) -> torch.Tensor:
        """Unbiased sample variance per channel (zero with a single token)."""
        self._check()
        if self.tokens < 2:
            return torch.zeros_like(self.sum)
        centered = self.sum_squares - self.sum.pow(2) / self.tokens
        return (centered / (self.tokens - 1)).clamp_min(0)


@contextmanager
def record_inputs(modules: dict[str, nn.Module], callback: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Call ``callback(name, input)`` with the first positional input of each module on every forward."""
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(lambda _m, args, _n=name: callback(_n, args[0])))
        yield
    finally:
        for handle in handles:
            handle.remove()
