"""The search space: per-layer attention and MLP masks, depth, and the parameter budget.

A candidate (``Genome``) holds, for each dense layer, either ``None`` (layer dropped) or a
:class:`LayerGene`: per KV head the kept attention units, and the kept MLP channels. Attention
units are RoPE *pairs* ``(i, i + head_dim/2)`` for rotary models (so the kept channels keep their
frequencies) and every KV head of a layer keeps the same number of them (one head size per layer).

Widths are rounded to hardware-friendly multiples (``head_dim_multiple`` channels per head,
``mlp_multiple`` MLP channels) so that subnets are fast in real kernels, not only small.
Budget: every candidate's inheriting ratio (all parameters, as the paper counts) must lie within
``tolerance`` of the target; candidates are *repaired* into the budget constructively (MLP widths of
other layers nudged step by step, importance-ordered) instead of being rejected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from optimum_subnet.algorithms import rope
from optimum_subnet.algorithms.budget import Budget, WidthGrid, nearest
from .masks import importance_order, mutate_mask, resize_by_importance, top_k
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.spec import LayerSpec, ModelShape, SubnetSpec


@dataclass(frozen=True)
class LayerGene:
    attention: tuple[tuple[int, ...], ...]  # per KV head: kept units (RoPE pairs or channels)
    mlp: tuple[int, ...]

    @property
    def attention_width(self) -> int:
        return len(self.attention[0])

    @property
    def mlp_width(self) -> int:
        return len(self.mlp)


Genome = tuple  # tuple[LayerGene | None, ...], one entry per dense layer


#: The paper's ranges for LLaMA (Sec. 4.1), keyed by the decoder blocks' target ratio:
#: (minimum block ratio, attention min ratio, MLP min ratio).
PAPER_RANGES = ((0.85, 0.9, 0.6), (0.75, 0.8, 0.4), (0.65, 0.7, 0.25), (0.0, 0.6, 0.1))


def paper_ranges(block_ratio: float) -> tuple[float, float]:
    """(attention min, MLP min) for a block-level target. The paper states 90/80/60/50% brackets;
    we key them on the *block* ratio (embeddings are 4% of LLaMA-7B but 21% of SmolLM2-135M) and
    interpolate a 70% bracket."""
    for threshold, attention, mlp in PAPER_RANGES:
        if block_ratio >= threshold:
            return attention, mlp
    return PAPER_RANGES[-1][1:]


class SearchSpace:
    def __init__(
        self,
        shape: ModelShape,
        attention_scores,  # per layer: (num_kv_heads x head_dim) tensor
        mlp_scores,  # per layer: (intermediate,) tensor
        target_ratio: float,
        attention_range: tuple[float, float] | None = None,
        mlp_range: tuple[float, float] | None = None,
        head_dim_multiple: int = 8,
        mlp_multiple: int = 64,
        depth_search: bool = False,
        min_depth: int | None = None,
        tolerance: float = 0.002,
        mask_fill: str = "uniform",
        mask_sharing: str = "kv_head",
        attention_allocation=None,  # per layer: (num_kv_heads x head_dim), comparable across layers
        mlp_allocation=None,  # per layer: (intermediate,), comparable with the attention ones
        out_bias: bool = False,  # W_O / W_down carry a bias (reformation with an intercept): counted in the budget
        ratio_of: str = "all",  # the target counts all parameters (the paper) or the decoder blocks
    ):
        self.budget = Budget(shape, target_ratio, ratio_of)
        if mask_fill not in ("uniform", "importance"):
            raise SubnetError(f"mask_fill must be 'uniform' or 'importance', got {mask_fill!r}")
        if mask_sharing not in ("kv_head", "layer"):
            raise SubnetError(f"attention mask sharing must be 'kv_head' or 'layer', got {mask_sharing!r}")
        # one q/k norm weight per layer (Qwen3, Gemma3): every KV head must keep the same channels
        self.mask_sharing = "layer" if shape.qk_norm else mask_sharing
        self.out_bias = out_bias
        self.shape = shape
        self.target_ratio = target_ratio
        self.tolerance = tolerance
        self.mask_fill = mask_fill
        self.dense_params = shape.dense_params()
        self.target_params = self.budget.target_params
        self.block_target = self.budget.block_target_ratio
        auto_attention, auto_mlp = paper_ranges(self.block_target)
        self.attention_range = tuple(attention_range) if attention_range else (auto_attention, 1.0)
        self.mlp_range = tuple(mlp_range) if mlp_range else (auto_mlp, 1.0)

        # Attention units: RoPE pairs when the model rotates (a pair is 2 channels).
        grid = WidthGrid(shape, head_dim_multiple, mlp_multiple)
        self.attention_unit = grid.channels_per_unit
        self.attention_universe = grid.attention_universe
        self.head_dim_multiple, self.mlp_multiple = grid.head_dim_step, grid.mlp_step
        self.attention_widths = grid.attention_widths(self.attention_range)
        self.mlp_widths = grid.mlp_widths(self.mlp_range)
        # The budget window must be wider than one MLP step, or repair could overshoot both ways.
        step = shape.mlp_params(self.mlp_multiple) - shape.mlp_params(0)
        self.tolerance = max(tolerance, 0.6 * step / self.budget.counted_params)

        self.depth_search = depth_search
        self.min_depth = shape.num_layers if not depth_search else max(2, min_depth or shape.num_layers)

        # Importance in search units: pairs sum their two channels' scores. With one mask per layer
        # ("layer" sharing) every KV head ranks units by the layer's summed score, so all KV heads keep
        # the same rotary channels: ONNX Runtime's GroupQueryAttention can then rotate in-kernel.
        self.attention_scores = []
        for scores in attention_scores:
            scores = scores.double()
            if shape.rope:
                scores = rope.fold(scores, shape.rotary_dim)
            if self.mask_sharing == "layer":
                scores = scores.sum(dim=0, keepdim=True).expand(scores.shape[0], -1)
            self.attention_scores.append(scores.tolist())
        self.mlp_scores = [s.double().tolist() for s in mlp_scores]
        self.attention_order = [[importance_order(head) for head in layer] for layer in self.attention_scores]
        self.mlp_order = [importance_order(scores) for scores in self.mlp_scores]
        self.attention_allocation = self.mlp_allocation = None
        if attention_allocation is not None and mlp_allocation is not None:
            # a layer's k-th attention width unit: the k-th best unit of each KV head, averaged (widening a
            # layer by one unit adds one to every KV head); pairs average their two channels
            units = []
            for scores in attention_allocation:
                scores = scores.double()
                if shape.rope:
                    scores = rope.fold(scores, shape.rotary_dim, "mean")
                units.append(scores.sort(dim=-1, descending=True).values.mean(0))
            self.attention_allocation = units
            self.mlp_allocation = [m.double() for m in mlp_allocation]

        minimum = self.params(self._extreme(self.attention_widths[0], self.mlp_widths[0], self.min_depth))
        if minimum > self.target_params * (1 + 1e-9) + self._slack():
            raise SubnetError(
                f"target ratio {target_ratio} is unreachable in this search space (smallest subnet keeps "
                f"{self.budget.ratio(minimum):.3f}); widen the attention/MLP ranges or allow depth pruning"
            )

    # ------------------------------------------------------------------------------- accounting
    def layer_params(self, gene: LayerGene | None) -> int:
        if gene is None:
            return 0
        return (
            self.shape.norm_params()
            + self.shape.attention_params(len(gene.attention), gene.attention_width * self.attention_unit,
                                          self.out_bias)
            + self.shape.mlp_params(gene.mlp_width, self.out_bias)
        )

    def params(self, genome: Genome) -> int:
        return self.shape.embedding_params() + sum(self.layer_params(g) for g in genome)

    def ratio(self, genome: Genome) -> float:
        """The genome's kept fraction, counted as the budget counts (all parameters or the blocks)."""
        return self.budget.ratio(self.params(genome))

    def _slack(self) -> float:
        return self.budget.slack(self.tolerance)

    def within_budget(self, genome: Genome) -> bool:
        return abs(self.params(genome) - self.target_params) <= self._slack()

    # ---------------------------------------------------------------------------- construction
    def layer_gene(self, layer: int, attention_width: int, mlp_width: int) -> LayerGene:
        """The importance-top gene of a layer at the given widths (paper's initialization)."""
        attention = tuple(top_k(head_scores, attention_width, order)
                          for head_scores, order in zip(self.attention_scores[layer], self.attention_order[layer]))
        return LayerGene(attention=attention, mlp=top_k(self.mlp_scores[layer], mlp_width, self.mlp_order[layer]))

    def _extreme(self, attention_width: int, mlp_width: int, depth: int) -> Genome:
        genes = [self.layer_gene(i, attention_width, mlp_width) for i in range(self.shape.num_layers)]
        for i in self._droppable_order()[: self.shape.num_layers - depth]:
            genes[i] = None
        return tuple(genes)

    def _droppable_order(self) -> list[int]:
        """Layers that depth pruning may drop (never the first or last), middle-out."""
        n = self.shape.num_layers
        inner = list(range(1, n - 1))
        return sorted(inner, key=lambda i: (abs(i - (n - 1) / 2), i))

    def initial(self) -> Genome:
        """Uniform subnet: the same ratio gamma in every block (clipped to the ranges), top-gamma
        channels by importance, gamma found by bisection, then repaired into the budget."""
        lo, hi = 0.0, 1.0
        for _ in range(50):
            gamma = (lo + hi) / 2
            if self.params(self._uniform(gamma)) > self.target_params:
                hi = gamma
            else:
                lo = gamma
        genome = self._uniform(lo)
        repaired = self.repair(genome, random.Random(0))
        return repaired if repaired is not None else genome

    def global_initial(self) -> Genome:
        """Adaptive initial subnet (FLAP's global structure, An et al. 2024, Eq. 7): one threshold over
        the standardized allocation scores of every layer and both modules; each layer keeps the
        units above it, snapped to its width grid (within the ranges); the threshold is the one whose
        subnet lands closest to the budget, which repair then meets exactly."""
        import torch

        if self.attention_allocation is None:
            raise SubnetError("this search space has no allocation scores for a global initialization")
        candidates = torch.unique(torch.cat(self.attention_allocation + self.mlp_allocation))

        def genome_at(threshold: float) -> Genome:
            genes = []
            for i in range(self.shape.num_layers):
                attention = int((self.attention_allocation[i] > threshold).sum())
                mlp = int((self.mlp_allocation[i] > threshold).sum())
                genes.append(self.layer_gene(i, nearest(self.attention_widths, attention),
                                             nearest(self.mlp_widths, mlp)))
            return tuple(genes)

        lo, hi = 0, candidates.numel() - 1  # params fall as the threshold rises
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.params(genome_at(float(candidates[mid]))) >= self.target_params:
                lo = mid
            else:
                hi = mid - 1
        options = [genome_at(float(candidates[i])) for i in {lo, min(lo + 1, candidates.numel() - 1)}]
        genome = min(options, key=lambda g: abs(self.params(g) - self.target_params))
        repaired = self.repair(genome, random.Random(0))
        return repaired if repaired is not None else genome

    def _uniform(self, gamma: float) -> Genome:
        attention = nearest(self.attention_widths, gamma * self.attention_universe)
        mlp = nearest(self.mlp_widths, gamma * self.shape.intermediate_size)
        return tuple(self.layer_gene(i, attention, mlp) for i in range(self.shape.num_layers))

    # --------------------------------------------------------------------------------- repair
    def repair(self, genome: Genome, rng: random.Random, frozen: Sequence[int] = ()) -> Genome | None:
        """Bring a genome into the budget by stepping MLP widths (then attention widths) of random
        layers, preferring layers not in ``frozen`` (the ones a mutation just changed). Channels are
        dropped or added by importance. ``None`` if the granularity cannot land inside the budget."""
        genes = list(genome)
        low, high = self.target_params - self._slack(), self.target_params + self._slack()
        total = self.params(tuple(genes))
        direction = 0
        for _ in range(20 * len(genes) * (len(self.mlp_widths) + len(self.attention_widths))):
            if low <= total <= high:
                return tuple(genes)
            step = -1 if total > high else 1
            if direction and step != direction:
                return None  # overshot both ways: no width combination lands within the budget
            direction = step
            choice = self._pick_step(genes, step, rng, frozen)
            if choice is None:
                return None
            index, gene = choice
            total += self.layer_params(gene) - self.layer_params(genes[index])
            genes[index] = gene
        return None

    def _pick_step(self, genes, step, rng, frozen):
        for component in ("mlp", "attention"):
            options = [i for i, g in enumerate(genes) if g is not None and self._can_step(g, component, step)]
            preferred = [i for i in options if i not in frozen] or options
            if preferred:
                i = rng.choice(preferred)
                return i, self._step(i, genes[i], component, step)
        return None

    def _can_step(self, gene: LayerGene, component: str, step: int) -> bool:
        widths = self.mlp_widths if component == "mlp" else self.attention_widths
        width = gene.mlp_width if component == "mlp" else gene.attention_width
        position = _position(widths, width)
        if position is None:  # off-grid width (e.g. from a loaded spec): a grid width must lie that way
            return any(w > width for w in widths) if step > 0 else any(w < width for w in widths)
        return 0 <= position + step < len(widths)

    def _step(self, layer: int, gene: LayerGene, component: str, step: int) -> LayerGene:
        if component == "mlp":
            width = _neighbour(self.mlp_widths, gene.mlp_width, step)
            return LayerGene(gene.attention, resize_by_importance(gene.mlp, width, self.mlp_scores[layer],
                                                                  self.mlp_order[layer]))
        width = _neighbour(self.attention_widths, gene.attention_width, step)
        attention = tuple(
            resize_by_importance(head, width, self.attention_scores[layer][h], self.attention_order[layer][h])
            for h, head in enumerate(gene.attention)
        )
        return LayerGene(attention, gene.mlp)

    # -------------------------------------------------------------------------------- operators
    def mutate(self, genome: Genome, rng: random.Random, *, depth_prob: float, ratio_prob: float, mask_prob: float,
               overlap: float, reference: Genome | None = None) -> Genome | None:
        """The paper's mutation: depth (whole blocks), per-layer ratios, per-layer masks (Sec. 3.3)."""
        genes = list(genome)
        changed: set[int] = set()
        if self.depth_search and rng.random() < depth_prob:
            kept = [i for i, g in enumerate(genes) if g is not None]
            dropped = [i for i, g in enumerate(genes) if g is None]
            droppable = [i for i in self._droppable_order() if genes[i] is not None]
            if dropped and (len(kept) <= self.min_depth or not droppable or rng.random() < 0.5):
                i = rng.choice(dropped)
                source = reference[i] if reference is not None and reference[i] is not None else None
                genes[i] = source or self.layer_gene(i, self.attention_widths[-1], _median(self.mlp_widths))
                changed.add(i)
            elif droppable and len(kept) > self.min_depth:
                i = rng.choice(droppable)
                genes[i] = None
                changed.add(i)
        for i, gene in enumerate(genes):
            if gene is None:
                continue
            attention_width, mlp_width = gene.attention_width, gene.mlp_width
            if rng.random() < ratio_prob:
                attention_width = rng.choice(self.attention_widths)
            if rng.random() < ratio_prob:
                mlp_width = rng.choice(self.mlp_widths)
            attention, mlp = gene.attention, gene.mlp
            if attention_width != gene.attention_width or rng.random() < mask_prob:
                heads = gene.attention[:1] if self.mask_sharing == "layer" else gene.attention
                attention = tuple(
                    mutate_mask(head, self.attention_universe, attention_width, overlap, rng,
                                self.attention_scores[i][h] if self.mask_fill == "importance" else None)
                    for h, head in enumerate(heads)
                )
                if self.mask_sharing == "layer":
                    attention = attention * len(gene.attention)
            if mlp_width != gene.mlp_width or rng.random() < mask_prob:
                mlp = mutate_mask(gene.mlp, self.shape.intermediate_size, mlp_width, overlap, rng,
                                  self.mlp_scores[i] if self.mask_fill == "importance" else None)
            new = LayerGene(attention, mlp)
            if new != gene:
                genes[i] = new
                changed.add(i)
        return self.repair(tuple(genes), rng, frozen=sorted(changed))

    def crossover(self, a: Genome, b: Genome, rng: random.Random) -> Genome | None:
        """Swap whole blocks' (ratio, mask) between two parents (uniform per-layer choice)."""
        genes = [x if rng.random() < 0.5 else y for x, y in zip(a, b)]
        kept = sum(g is not None for g in genes)
        if kept < self.min_depth:
            restore = [i for i, g in enumerate(genes) if g is None and (a[i] is not None or b[i] is not None)]
            for i in rng.sample(restore, min(len(restore), self.min_depth - kept)):
                genes[i] = a[i] if a[i] is not None else b[i]
        return self.repair(tuple(genes), rng)

    # -------------------------------------------------------------------------------- spec I/O
    def to_spec(self, genome: Genome, metadata: dict | None = None) -> SubnetSpec:
        layers = []
        hd, rd = self.shape.head_dim, self.shape.rotary_dim
        for index, gene in enumerate(genome):
            if gene is None:
                continue
            if self.shape.rope:
                channels = [rope.channels_of(head, hd, rd) for head in gene.attention]
            else:
                channels = [list(head) for head in gene.attention]
            layers.append(
                LayerSpec(
                    source_index=index,
                    kv_heads=list(range(self.shape.num_key_value_heads)),
                    attention_channels=channels,
                    mlp_channels=list(gene.mlp),
                    attention_out_bias=self.out_bias,
                    mlp_out_bias=self.out_bias,
                )
            )
        return SubnetSpec(shape=self.shape, layers=layers, metadata=dict(metadata or {}))

    def from_spec(self, spec: SubnetSpec) -> Genome:
        genes: list[LayerGene | None] = [None] * self.shape.num_layers
        hd, rd = self.shape.head_dim, self.shape.rotary_dim
        for layer in spec.layers:
            if layer.num_kv_heads != self.shape.num_key_value_heads:
                raise SubnetError("search space keeps every KV head; spec prunes heads")
            if self.shape.rope:
                attention = tuple(rope.units_of(head, hd, rd) for head in layer.attention_channels)
            else:
                attention = tuple(tuple(head) for head in layer.attention_channels)
            genes[layer.source_index] = LayerGene(attention, tuple(layer.mlp_channels))
        return tuple(genes)

    def describe(self) -> dict:
        return {
            "target_ratio": self.target_ratio,
            "ratio_of": self.budget.ratio_of,
            "block_target_ratio": self.block_target,
            "attention_range": list(self.attention_range),
            "mlp_range": list(self.mlp_range),
            "attention_head_dims": [w * self.attention_unit for w in self.attention_widths],
            "mlp_widths": list(self.mlp_widths),
            "depth_search": self.depth_search,
            "min_depth": self.min_depth,
            "tolerance": self.tolerance,
            "head_dim_multiple": self.head_dim_multiple,
            "mlp_multiple": self.mlp_multiple,
            "mask_fill": self.mask_fill,
            "mask_sharing": self.mask_sharing,
        }


def _position(widths: Sequence[int], width: int) -> int | None:
    try:
        return list(widths).index(width)
    except ValueError:
        return None


def _neighbour(widths: Sequence[int], width: int, step: int) -> int:
    position = _position(widths, width)
    if position is None:  # off-grid width (e.g. from a loaded spec): snap towards the step
        candidates = [w for w in widths if (w > width if step > 0 else w < width)]
        return min(candidates) if step > 0 else max(candidates)
    return widths[position + step]


def _median(widths: Sequence[int]) -> int:
    return sorted(widths)[len(widths) // 2]
