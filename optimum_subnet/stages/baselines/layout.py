"""Prunable units, their parameter cost, and how many of them each layer keeps under the budget.

Shared by every baseline, so they all meet the same budget with the same parameter accounting as
the search (:class:`~optimum_subnet.core.spec.SubnetSpec`, all parameters counted, a tied LM head once).

Attention units (``attention_unit``):

* ``"head"``: whole KV heads with their query group (the papers prune heads; under GQA a KV head and
  the query heads that share it can only go together). Every layer keeps at least one.
* ``"pair"``: RoPE channel pairs ``(i, i + head_dim/2)`` inside the heads, the same number in every
  KV head of a layer (one head size per layer), i.e. the search space of our method.

Widths are snapped to the same hardware-friendly multiples the search uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optimum_subnet.algorithms.budget import Budget, WidthGrid, snap
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.spec import LayerSpec, ModelShape, SubnetSpec

ATTENTION_UNITS = ("head", "pair")


@dataclass
class Allocation:
    """Per dense layer: attention units kept (KV heads, or pairs per KV head) and MLP width."""

    attention: list[int]
    mlp: list[int]


class UnitLayout:
    def __init__(self, shape: ModelShape, attention_unit: str = "head", head_dim_multiple: int = 8,
                 mlp_multiple: int = 64, attention_out_bias: bool = False, mlp_out_bias: bool = False,
                 ratio_of: str = "all"):
        if attention_unit not in ATTENTION_UNITS:
            raise SubnetError(f"attention unit must be one of {', '.join(ATTENTION_UNITS)}, got {attention_unit!r}")
        self.shape = shape
        self.attention_unit = attention_unit
        self.ratio_of = ratio_of
        grid = WidthGrid(shape, head_dim_multiple, mlp_multiple)  # the same grid as the search space
        self.channels_per_pair = grid.channels_per_unit
        if attention_unit == "head":
            self.attention_universe, self.attention_step = shape.num_key_value_heads, 1
        else:
            self.attention_universe, self.attention_step = grid.attention_universe, grid.attention_step
        self.mlp_step = grid.mlp_step
        self.attention_out_bias = attention_out_bias
        self.mlp_out_bias = mlp_out_bias

    # ---------------------------------------------------------------------------- accounting
    def attention_params(self, units: int) -> int:
        if self.attention_unit == "head":
            return self.shape.attention_params(units, self.shape.head_dim, self.attention_out_bias)
        return self.shape.attention_params(self.shape.num_key_value_heads, units * self.channels_per_pair,
                                           self.attention_out_bias)

    def mlp_params(self, width: int) -> int:
        return self.shape.mlp_params(width, self.mlp_out_bias)

    def layer_params(self, attention_units: int, mlp_width: int) -> int:
        return self.shape.norm_params() + self.attention_params(attention_units) + self.mlp_params(mlp_width)

    def block_params(self, allocation: Allocation) -> int:
        return sum(self.layer_params(a, m) for a, m in zip(allocation.attention, allocation.mlp))

    def budget(self, target_ratio: float) -> Budget:
        return Budget(self.shape, target_ratio, self.ratio_of)

    def target_block_params(self, target_ratio: float) -> float:
        return self.budget(target_ratio).target_block_params

    def snap_attention(self, units: float) -> int:
        return snap(units, self.attention_step, self.attention_universe)

    def snap_mlp(self, width: float) -> int:
        return snap(width, self.mlp_step, self.shape.intermediate_size)

    def check_reachable(self, target_ratio: float) -> None:
        budget = self.budget(target_ratio)
        smallest = self.shape.embedding_params() + self.shape.num_layers * self.layer_params(
            self.attention_step, self.mlp_step)
        if smallest > budget.target_params:
            raise SubnetError(f"target ratio {target_ratio} is unreachable for this method (its smallest subnet "
                              f"keeps {budget.ratio(smallest):.3f})")

    # --------------------------------------------------------------------------- allocations
    def uniform(self, target_ratio: float) -> Allocation:
        """The same kept fraction of attention and MLP units in every layer (the papers' uniform
        structure); the MLP width absorbs what the coarse attention granularity cannot match."""
        self.check_reachable(target_ratio)
        target = self.target_block_params(target_ratio)
        ratio = target / self.shape.dense_block_params()  # the uniform fraction of every block
        layers = self.shape.num_layers
        attention = self.snap_attention(ratio * self.attention_universe)
        per_layer = target / layers - self.shape.norm_params() - self.attention_params(attention)
        per_mlp_channel = self.shape.mlp_params(1) - self.shape.mlp_params(0)
        width = (per_layer - self.mlp_params(0)) / per_mlp_channel
        low = self.snap_mlp(width if width <= self.mlp_step else width - self.mlp_step / 2)
        high = min(self.shape.intermediate_size, low + self.mlp_step)
        # the width grid is coarse: give every k-th layer one more step so the total lands on the budget
        best = None
        for wider in range(layers + 1):
            mlp = [high if (i * wider) // layers != ((i + 1) * wider) // layers else low for i in range(layers)]
            allocation = Allocation(attention=[attention] * layers, mlp=mlp)
            error = abs(self.block_params(allocation) - target)
            if best is None or error < best[0]:
                best = (error, allocation)
        return best[1]

    def global_threshold(self, attention_scores: list[torch.Tensor], mlp_scores: list[torch.Tensor],
                         target_ratio: float) -> tuple[Allocation, float]:
        """One threshold over (standardized) unit scores of all layers and both modules (FLAP's
        adaptive structure, Eq. 7): each layer keeps the units above it, snapped to the width grid
        (at least one step). The threshold is the one whose subnet comes closest to the budget.

        ``attention_scores[l]``: per-width-unit scores of layer ``l`` (KV heads, or pair ranks);
        ``mlp_scores[l]``: per-channel scores.
        """
        self.check_reachable(target_ratio)
        target = self.target_block_params(target_ratio)
        candidates = torch.cat([s.flatten() for s in attention_scores + mlp_scores]).to(torch.float64)
        candidates = torch.unique(torch.cat([candidates, candidates.new_tensor([-math.inf])]))  # sorted ascending

        def allocation_at(threshold: float) -> Allocation:
            att = [self.snap_attention(int((s > threshold).sum())) for s in attention_scores]
            mlp = [self.snap_mlp(int((s > threshold).sum())) for s in mlp_scores]
            return Allocation(att, mlp)

        # params decrease as the threshold rises: bisect for the last threshold still >= target
        lo, hi = 0, candidates.numel() - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.block_params(allocation_at(float(candidates[mid]))) >= target:
                lo = mid
            else:
                hi = mid - 1
        best = min((lo, min(lo + 1, candidates.numel() - 1)),
                   key=lambda i: abs(self.block_params(allocation_at(float(candidates[i]))) - target))
        threshold = float(candidates[best])
        return allocation_at(threshold), threshold

    # ------------------------------------------------------------------------------ spec
    def layer_spec(self, index: int, kv_channel_scores: torch.Tensor, mlp_scores: torch.Tensor,
                   attention_units: int, mlp_width: int) -> LayerSpec:
        """Keep a layer's top units by score: ``kv_channel_scores`` (num_kv_heads, head_dim) and
        ``mlp_scores`` (intermediate,)."""
        from optimum_subnet.algorithms import rope, structured

        shape = self.shape
        if self.attention_unit == "head":
            heads = structured.head_scores(kv_channel_scores)
            kv_heads = _top(heads, attention_units)
            channels = [list(range(shape.head_dim)) for _ in kv_heads]
        else:
            kv_heads = list(range(shape.num_key_value_heads))
            if shape.rope:
                pairs = structured.pair_scores(kv_channel_scores, rotary_dim=shape.rotary_dim)
                if shape.qk_norm:  # one q/k norm weight per layer: every head keeps the same channels
                    pairs = pairs.sum(0, keepdim=True).expand_as(pairs)
                channels = [rope.channels_of(_top(row, attention_units), shape.head_dim, shape.rotary_dim)
                            for row in pairs]
            else:
                channels = [_top(row, attention_units) for row in kv_channel_scores]
        return LayerSpec(source_index=index, kv_heads=kv_heads, attention_channels=channels,
                         mlp_channels=_top(mlp_scores, mlp_width), attention_out_bias=self.attention_out_bias,
                         mlp_out_bias=self.mlp_out_bias)

    def attention_width_scores(self, kv_channel_scores: torch.Tensor) -> torch.Tensor:
        """Scores of a layer's attention *width units* for the global threshold, descending: KV heads
        (head unit), or the k-th best pair averaged over the layer's KV heads (pair unit: widening a
        layer by one unit adds a pair to every KV head)."""
        from optimum_subnet.algorithms import structured

        if self.attention_unit == "head":
            return torch.sort(structured.head_scores(kv_channel_scores, "mean"), descending=True).values
        pairs = (structured.pair_scores(kv_channel_scores, "mean", self.shape.rotary_dim) if self.shape.rope
                 else kv_channel_scores)
        return torch.sort(pairs, dim=-1, descending=True).values.mean(0)


def _top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k largest scores, sorted (ties: lower index first)."""
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def build_spec(layout: UnitLayout, allocation: Allocation, attention_scores: list[torch.Tensor],
               mlp_scores: list[torch.Tensor], metadata: dict | None = None) -> SubnetSpec:
    layers = [layout.layer_spec(i, attention_scores[i], mlp_scores[i], a, m)
              for i, (a, m) in enumerate(zip(allocation.attention, allocation.mlp))]
    return SubnetSpec(shape=layout.shape, layers=layers, metadata=dict(metadata or {})).validate()
