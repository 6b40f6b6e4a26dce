"""The parameter budget and the width grid: one implementation for the search and every baseline.

Budget: a run keeps ``target_ratio`` of the dense model's parameters, counted over *all* parameters
(``ratio_of="all"``, as the paper counts: embeddings and LM head included) or over the decoder blocks
only (``ratio_of="blocks"``: for models whose embeddings are most of the parameters, e.g. Gemma3-270M's
262K-token vocabulary is 63% of it, an all-parameter target below that share is impossible). Either
way it becomes a number of parameters (:attr:`Budget.target_params`, all of them counted) and a
tolerance around it; every report gives both ratios.

Width grid: widths are multiples of hardware-friendly steps (head size in channels, MLP width),
never coarser than 1/4 of a head (four head sizes) or 1/16 of an MLP so that small models keep a usable grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.spec import ModelShape

RATIO_OF = ("all", "blocks")


@dataclass(frozen=True)
class Budget:
    shape: ModelShape
    target_ratio: float
    ratio_of: str = "all"

    def __post_init__(self):
        if not 0 < self.target_ratio <= 1:
            raise SubnetError(f"target ratio must be in (0, 1], got {self.target_ratio}")
        if self.ratio_of not in RATIO_OF:
            raise SubnetError(f"the ratio counts 'all' parameters or the decoder 'blocks', got {self.ratio_of!r}")
        if self.block_target_ratio <= 0:
            raise SubnetError(
                f"target ratio {self.target_ratio} is unreachable: embeddings alone are "
                f"{self.shape.embedding_params() / self.shape.dense_params():.3f} of the model"
                + ("" if self.ratio_of == "blocks" else "; state the ratio over the decoder blocks instead"))

    @property
    def counted_params(self) -> int:
        """Parameters the ratio is a fraction of."""
        return self.shape.dense_params() if self.ratio_of == "all" else self.shape.dense_block_params()

    @property
    def target_params(self) -> float:
        """All parameters (embeddings included) a subnet on target keeps."""
        if self.ratio_of == "all":
            return self.target_ratio * self.shape.dense_params()
        return self.shape.embedding_params() + self.target_ratio * self.shape.dense_block_params()

    @property
    def target_block_params(self) -> float:
        return self.target_params - self.shape.embedding_params()

    @property
    def block_target_ratio(self) -> float:
        return self.target_block_params / self.shape.dense_block_params()

    def ratio(self, params: float) -> float:
        """``params`` (all parameters) as the fraction this budget counts."""
        if self.ratio_of == "all":
            return params / self.shape.dense_params()
        return (params - self.shape.embedding_params()) / self.shape.dense_block_params()

    def slack(self, tolerance: float) -> float:
        """A tolerance on the ratio, in parameters."""
        return tolerance * self.counted_params


@dataclass(frozen=True)
class WidthGrid:
    """Allowed widths: attention in *units* per KV head (RoPE pairs: 2 channels, or single channels for
    models without rotary), MLP in channels."""

    shape: ModelShape
    head_dim_multiple: int = 8
    mlp_multiple: int = 64

    @property
    def channels_per_unit(self) -> int:
        return 2 if self.shape.rope else 1

    @property
    def attention_universe(self) -> int:
        return self.shape.head_dim // self.channels_per_unit

    @property
    def head_dim_step(self) -> int:
        """Head-size step in channels, never coarser than 1/4 of a head (SmolLM2's 64-channel heads can keep
        16, 32, 48 or 64 channels: multiples of 16, what ONNX Runtime's in-kernel rotary needs)."""
        return max(self.channels_per_unit, min(self.head_dim_multiple, self.shape.head_dim // 4))

    @property
    def attention_step(self) -> int:
        """Head-size step in units."""
        return max(1, self.head_dim_step // self.channels_per_unit)

    @property
    def mlp_step(self) -> int:
        """MLP-width step, never coarser than 1/16 of the MLP."""
        return max(1, min(self.mlp_multiple, self.shape.intermediate_size // 16))

    def attention_widths(self, ratio_range: Sequence[float]) -> list[int]:
        return allowed_widths(self.attention_universe, ratio_range, self.attention_step)

    def mlp_widths(self, ratio_range: Sequence[float]) -> list[int]:
        return allowed_widths(self.shape.intermediate_size, ratio_range, self.mlp_step)

    def snap_attention(self, units: float) -> int:
        return snap(units, self.attention_step, self.attention_universe)

    def snap_mlp(self, width: float) -> int:
        return snap(width, self.mlp_step, self.shape.intermediate_size)


def allowed_widths(universe: int, ratio_range: Sequence[float], multiple: int) -> list[int]:
    """Multiples of ``multiple`` (and the full width) whose fraction of ``universe`` lies in the range."""
    lo_ratio, hi_ratio = ratio_range
    if not 0 < lo_ratio <= hi_ratio <= 1:
        raise SubnetError(f"ratio range must satisfy 0 < min <= max <= 1, got {list(ratio_range)}")
    lo = max(1, math.ceil(lo_ratio * universe - 1e-9))
    hi = max(lo, math.floor(hi_ratio * universe + 1e-9))
    widths = [w for w in range(multiple, universe + 1, multiple) if lo <= w <= hi]
    if hi == universe and universe not in widths:
        widths.append(universe)
    if not widths:  # the multiple is coarser than the range: fall back to the nearest multiple above
        widths = [min(universe, math.ceil(lo / multiple) * multiple)]
    return sorted(set(widths))


def snap(value: float, step: int, universe: int) -> int:
    """Nearest multiple of ``step`` (or the full universe), never below one step."""
    options = list(range(step, universe + 1, step))
    if universe not in options:
        options.append(universe)
    return min(options, key=lambda w: (abs(w - value), w))


def nearest(widths: Sequence[int], value: float) -> int:
    return min(widths, key=lambda w: (abs(w - value), w))
