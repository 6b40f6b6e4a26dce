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

import hashlib
import random
from typing import Sequence

import numpy as np

from optimum_subnet.algorithms import rope
from optimum_subnet.algorithms.budget import Budget, WidthGrid, nearest
from optimum_subnet.algorithms.masks import as_generator, importance_ranks, mutate_masks, resize_masks, top_masks
from optimum_subnet.core.config import ATTENTION_PRUNING, ATTENTION_WHOLE_TAKES_NO_RANGE
from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.spec import LayerSpec, ModelShape, SubnetSpec


class LayerGene:
    """One kept layer: per kept KV head its kept units (RoPE pairs or channels), ``attention`` (kept heads x
    width), the kept MLP channels ``mlp``, and which KV heads are kept (``heads``; ``None``: all of them).

    The masks are read-only numpy arrays (sorted indices), shared by every candidate that inherits
    the gene unchanged; equality and hashing go through a content digest computed once per gene. At
    LLaMA-7B shape a candidate holds ~350K indices: as Python tuples, building and comparing them cost
    as much as the fitness on a GPU."""

    __slots__ = ("attention", "mlp", "heads", "_digest")

    def __init__(self, attention, mlp, heads: Sequence[int] | None = None):
        attention = np.array(attention, dtype=np.int64, copy=None)
        self.attention = attention.reshape(len(attention), -1)
        self.mlp = np.array(mlp, dtype=np.int64, copy=None).reshape(-1)
        self.attention.setflags(write=False)
        self.mlp.setflags(write=False)
        self.heads = None if heads is None else tuple(int(h) for h in heads)
        self._digest = None

    @property
    def attention_width(self) -> int:
        return self.attention.shape[1]

    @property
    def mlp_width(self) -> int:
        return self.mlp.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attention.shape[0]

    def kept_heads(self) -> tuple[int, ...]:
        return self.heads if self.heads is not None else tuple(range(self.num_heads))

    @property
    def digest(self) -> bytes:
        """SHA-256 of the gene's content (sizes, kept heads, units, channels)."""
        if self._digest is None:
            h = hashlib.sha256()
            h.update(np.asarray([self.num_heads, self.attention_width, self.mlp_width, self.heads is not None],
                                dtype=np.int64).tobytes())
            h.update(np.asarray(self.heads or (), dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(self.attention).tobytes())
            h.update(np.ascontiguousarray(self.mlp).tobytes())
            self._digest = h.digest()
        return self._digest

    def __eq__(self, other) -> bool:
        return isinstance(other, LayerGene) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return (f"LayerGene(heads={self.heads}, attention={self.num_heads}x{self.attention_width}, "
                f"mlp={self.mlp_width}, digest={self.digest.hex()[:12]})")


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


def default_attention_pruning(shape: ModelShape) -> str:
    """The family's default attention space. Families with per-head q/k norms (Qwen3, Gemma3) leave attention
    whole: in-head pruning there is not function-preserving (the norm runs over the kept channels only), and on
    Gemma3-270M our search with attention whole beat the same search pruning inside heads at block ratios 0.9
    and 0.8 (``benchmarks/results/quality_gemma3.md``, ``ours`` vs ``ours@pair``). The loss comes from the pruned
    channels rather than the norm's changed statistics, and the same parameters cost far less taken from the MLP
    (``benchmarks/results/qk_norm_diagnostic_gemma3.md``).
    Qwen3 follows by structure (not measured). The others prune inside heads."""
    return "none" if shape.qk_norm else "in_head"


def resolve_attention_pruning(shape: ModelShape, choice: str, attention_range=None) -> str:
    """``choice`` with "auto" resolved: an explicit ``attention_range`` asks for in-head pruning."""
    if choice not in ATTENTION_PRUNING:
        raise SubnetError(f"attention_pruning must be one of {', '.join(ATTENTION_PRUNING)}, got {choice!r}")
    if choice != "auto":
        return choice
    return "in_head" if attention_range else default_attention_pruning(shape)


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
        attention_pruning: str = "auto",  # in_head | none | auto (the family's default)
        head_search: bool = False,  # layers may also drop whole KV heads (with their query groups)
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
        self.attention_pruning = resolve_attention_pruning(shape, attention_pruning, attention_range)
        if self.attention_pruning == "none":
            if attention_range and tuple(attention_range) != (1.0, 1.0):
                raise SubnetError(ATTENTION_WHOLE_TAKES_NO_RANGE)
            self.attention_range = (1.0, 1.0)
        else:
            self.attention_range = tuple(attention_range) if attention_range else (auto_attention, 1.0)
        self.mlp_range = tuple(mlp_range) if mlp_range else (auto_mlp, 1.0)

        # Attention units: RoPE pairs when the model rotates (a pair is 2 channels).
        grid = WidthGrid(shape, head_dim_multiple, mlp_multiple)
        self.attention_unit = grid.channels_per_unit
        self.attention_universe = grid.attention_universe
        self.head_dim_multiple, self.mlp_multiple = grid.head_dim_step, grid.mlp_step
        self.attention_widths = grid.attention_widths(self.attention_range)
        self.mlp_widths = grid.mlp_widths(self.mlp_range)
        self._positions = {"attention": {w: i for i, w in enumerate(self.attention_widths)},
                           "mlp": {w: i for i, w in enumerate(self.mlp_widths)}}
        # The budget window must be wider than one MLP step, or repair could overshoot both ways.
        step = shape.mlp_params(self.mlp_multiple) - shape.mlp_params(0)
        self.tolerance = max(tolerance, 0.6 * step / self.budget.counted_params)

        self.head_search = head_search and shape.num_key_value_heads > 1
        self.depth_search = depth_search
        self.min_depth = shape.num_layers if not depth_search else max(2, min_depth or shape.num_layers)

        # Importance in search units: pairs sum their two channels' scores. With one mask per layer
        # ("layer" sharing) every KV head ranks units by the layer's summed score, so all KV heads keep
        # the same rotary channels: ONNX Runtime's GroupQueryAttention can then rotate in-kernel.
        self.attention_scores: list[np.ndarray] = []  # per layer (num_kv_heads, units)
        for scores in attention_scores:
            scores = scores.double()
            if shape.rope:
                scores = rope.fold(scores, shape.rotary_dim)
            if self.mask_sharing == "layer":
                scores = scores.sum(dim=0, keepdim=True).expand(scores.shape[0], -1)
            self.attention_scores.append(scores.cpu().numpy().copy())
        self.mlp_scores: list[np.ndarray] = [s.double().cpu().numpy().copy() for s in mlp_scores]
        self.attention_ranks = [importance_ranks(scores) for scores in self.attention_scores]
        self.mlp_ranks = [importance_ranks(scores[None, :]) for scores in self.mlp_scores]
        if shape.rope:
            pairs = np.asarray(rope.pairs(shape.head_dim, shape.rotary_dim), dtype=np.int64)  # (units, 2)
            self._pair_channels = pairs
            self._unit_of_lower = np.full(shape.head_dim, -1, dtype=np.int64)
            self._unit_of_lower[pairs[:, 0]] = np.arange(len(pairs))
        # a KV head's score (whole head kept or dropped): the sum of its units' scores
        self.head_scores = [scores.sum(axis=1) for scores in self.attention_scores]
        self.attention_allocation = self.mlp_allocation = self.head_allocation = None
        if attention_allocation is not None and mlp_allocation is not None:
            # a whole KV head's allocation score: its channels' mean (FLAP by heads)
            self.head_allocation = [scores.double().mean(-1) for scores in attention_allocation]
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
            remedy = ("prune attention inside heads (search.attention_pruning = \"in_head\"), widen the MLP range "
                      "or allow depth pruning" if self.attention_pruning == "none"
                      else "widen the attention/MLP ranges or allow depth pruning")
            raise SubnetError(
                f"target ratio {target_ratio} is unreachable in this search space (smallest subnet keeps "
                f"{self.budget.ratio(minimum):.3f}); {remedy}"
            )

    # ------------------------------------------------------------------------------- accounting
    def _width_params(self, heads: int, attention_width: int, mlp_width: int) -> int:
        return (self.shape.norm_params()
                + self.shape.attention_params(heads, attention_width * self.attention_unit, self.out_bias)
                + self.shape.mlp_params(mlp_width, self.out_bias))

    def layer_params(self, gene: LayerGene | None) -> int:
        if gene is None:
            return 0
        return self._width_params(gene.num_heads, gene.attention_width, gene.mlp_width)

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
    def layer_gene(self, layer: int, attention_width: int, mlp_width: int, heads: int | None = None) -> LayerGene:
        """The importance-top gene of a layer at the given widths (paper's initialization); ``heads``: keep
        only that many KV heads, the most important ones."""
        kept = None
        if heads is not None and heads < self.shape.num_key_value_heads:
            order = np.argsort(-self.head_scores[layer], kind="stable")
            kept = tuple(sorted(order[:heads].tolist()))
        ranks = self.attention_ranks[layer] if kept is None else self.attention_ranks[layer][list(kept)]
        return LayerGene(top_masks(ranks, attention_width), top_masks(self.mlp_ranks[layer], mlp_width)[0], kept)

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

    def global_initial(self, unit: str = "channel") -> Genome:
        """Adaptive initial subnet (FLAP's global structure, An et al. 2024, Eq. 7): one threshold over
        the standardized allocation scores of every layer and both modules; each layer keeps the
        units above it, snapped to its width grid (within the ranges); the threshold is the one whose
        subnet lands closest to the budget, which repair then meets exactly. ``unit="head"`` (with head
        search): attention units are whole KV heads, kept at full width (FLAP by heads)."""
        import torch

        if self.attention_allocation is None:
            raise SubnetError("this search space has no allocation scores for a global initialization")
        by_heads = unit == "head"
        if by_heads and not self.head_search:
            raise SubnetError("a global initialization by heads needs a search space with head search")
        attention_allocation = self.head_allocation if by_heads else self.attention_allocation
        candidates = torch.unique(torch.cat(attention_allocation + self.mlp_allocation))

        def genome_at(threshold: float) -> Genome:
            genes = []
            for i in range(self.shape.num_layers):
                mlp = nearest(self.mlp_widths, int((self.mlp_allocation[i] > threshold).sum()))
                if by_heads:
                    heads = max(1, int((attention_allocation[i] > threshold).sum()))
                    genes.append(self.layer_gene(i, self.attention_widths[-1], mlp, heads))
                else:
                    attention = int((attention_allocation[i] > threshold).sum())
                    genes.append(self.layer_gene(i, nearest(self.attention_widths, attention), mlp))
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
        layers, preferring layers not in ``frozen`` (the ones a mutation just changed). ``None`` if the
        granularity cannot land inside the budget.

        The steps are taken on the widths alone (integers); each layer that moved is then resized
        once, dropping or adding channels by importance: the same subnet as resizing at every step
        (the direction never changes), without touching thousands of channels per step."""
        genes = list(genome)
        low, high = self.target_params - self._slack(), self.target_params + self._slack()
        total = self.params(genome)
        if low <= total <= high:
            return tuple(genes)
        kept = [i for i, g in enumerate(genes) if g is not None]
        widths = {"attention": {i: genes[i].attention_width for i in kept},
                  "mlp": {i: genes[i].mlp_width for i in kept}}
        frozen = set(frozen)
        moved: set[int] = set()
        direction = 0
        # grid positions of every kept layer's widths (-1 off the grid, e.g. a loaded spec's: slow path)
        position = {c: np.array([self._positions[c].get(widths[c][i], -1) for i in kept]) for c in widths}
        on_grid = all((p >= 0).all() for p in position.values())
        unfrozen = np.array([i not in frozen for i in kept], dtype=bool)
        for _ in range(20 * len(genes) * (len(self.mlp_widths) + len(self.attention_widths))):
            if low <= total <= high:
                break
            step = -1 if total > high else 1
            if direction and step != direction:
                return None  # overshot both ways: no width combination lands within the budget
            direction = step
            for component in ("mlp", "attention"):
                current = widths[component]
                if on_grid:
                    moves = position[component] + step
                    can = (moves >= 0) & (moves < len(self._grid(component)))
                    preferred = np.flatnonzero(can & unfrozen)
                    if not len(preferred):
                        preferred = np.flatnonzero(can)
                    options = [kept[j] for j in preferred.tolist()]
                else:
                    options = [i for i in kept if self._can_step(component, current[i], step)]
                    options = [i for i in options if i not in frozen] or options
                if options:
                    i = rng.choice(options)
                    break
            else:
                return None
            heads = genes[i].num_heads
            before = self._width_params(heads, widths["attention"][i], widths["mlp"][i])
            current[i] = self._neighbour(component, current[i], step)
            if on_grid:
                position[component][kept.index(i)] += step
            total += self._width_params(heads, widths["attention"][i], widths["mlp"][i]) - before
            moved.add(i)
        else:
            return None
        for i in moved:
            genes[i] = self._resized(i, genes[i], widths["attention"][i], widths["mlp"][i])
        return tuple(genes)

    def _grid(self, component: str) -> list[int]:
        return self.mlp_widths if component == "mlp" else self.attention_widths

    def _can_step(self, component: str, width: int, step: int) -> bool:
        position = self._positions[component].get(width)
        widths = self._grid(component)
        if position is None:  # off-grid width (e.g. from a loaded spec): a grid width must lie that way
            return widths[-1] > width if step > 0 else widths[0] < width
        return 0 <= position + step < len(widths)

    def _neighbour(self, component: str, width: int, step: int) -> int:
        position = self._positions[component].get(width)
        widths = self._grid(component)
        if position is None:  # off-grid: snap towards the step
            candidates = [w for w in widths if (w > width if step > 0 else w < width)]
            return min(candidates) if step > 0 else max(candidates)
        return widths[position + step]

    def _resized(self, layer: int, gene: LayerGene, attention_width: int, mlp_width: int) -> LayerGene:
        """``gene`` at other widths: channels dropped or added by importance."""
        attention, mlp = gene.attention, gene.mlp
        if attention_width != gene.attention_width:
            ranks = self.attention_ranks[layer][list(gene.kept_heads())]
            attention = resize_masks(attention, attention_width, ranks)
        if mlp_width != gene.mlp_width:
            mlp = resize_masks(mlp[None, :], mlp_width, self.mlp_ranks[layer])[0]
        return LayerGene(attention, mlp, gene.heads)

    # -------------------------------------------------------------------------------- operators
    def mutate(self, genome: Genome, rng: random.Random, *, depth_prob: float, ratio_prob: float, mask_prob: float,
               overlap: float, reference: Genome | None = None) -> Genome | None:
        """The paper's mutation: depth (whole blocks), per-layer ratios, per-layer masks (Sec. 3.3).

        Decisions are drawn from ``rng``; the masks' members from one numpy generator per mutation,
        seeded from ``rng`` (so ``rng``'s state alone makes a search reproducible)."""
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
        generator = None
        for i, gene in enumerate(genes):
            if gene is None:
                continue
            attention_width, mlp_width = gene.attention_width, gene.mlp_width
            if rng.random() < ratio_prob:
                attention_width = rng.choice(self.attention_widths)
            if rng.random() < ratio_prob:
                mlp_width = rng.choice(self.mlp_widths)
            attention, mlp = gene.attention, gene.mlp
            heads = gene.kept_heads()
            new_heads = self.head_search and rng.random() < ratio_prob
            new_attention = attention_width != gene.attention_width or rng.random() < mask_prob
            new_mlp = mlp_width != gene.mlp_width or rng.random() < mask_prob
            if not (new_attention or new_mlp or new_heads):
                continue
            if generator is None:
                generator = as_generator(rng)
            if new_heads:  # another number of KV heads, overlapping the kept ones; new heads by importance
                gene = self._with_heads(i, gene, rng.randint(1, self.shape.num_key_value_heads), overlap, generator)
                attention, heads = gene.attention, gene.kept_heads()
            if new_attention:
                rows = attention[:1] if self.mask_sharing == "layer" else attention
                weights = None
                if self.mask_fill == "importance":
                    weights = self.attention_scores[i][list(heads)][: len(rows)]
                attention = mutate_masks(rows, self.attention_universe, attention_width, overlap, generator, weights)
                if self.mask_sharing == "layer":
                    attention = np.repeat(attention, gene.num_heads, axis=0)
            if new_mlp:
                weights = self.mlp_scores[i][None, :] if self.mask_fill == "importance" else None
                mlp = mutate_masks(mlp[None, :], self.shape.intermediate_size, mlp_width, overlap, generator,
                                   weights)[0]
            new = LayerGene(attention, mlp, gene.heads)
            if new != genome[i]:
                genes[i] = new
                changed.add(i)
        return self.repair(tuple(genes), rng, frozen=sorted(changed))

    def _with_heads(self, layer: int, gene: LayerGene, count: int, overlap: float, generator) -> LayerGene:
        """``gene`` keeping ``count`` KV heads: a random ``overlap`` share of the kept ones stays (with its
        masks), the rest is drawn in proportion to head importance; a new head keeps its top units at the
        layer's width (the shared mask with layer sharing)."""
        old = np.asarray(gene.kept_heads(), dtype=np.int64)
        if count == len(old):
            return gene
        weights = np.maximum(self.head_scores[layer], 1e-12)[None, :]
        heads = mutate_masks(old[None, :], self.shape.num_key_value_heads, count, overlap, generator, weights)[0]
        rows = []
        for h in heads.tolist():
            where = np.flatnonzero(old == h)
            if len(where):
                rows.append(gene.attention[where[0]])
            elif self.mask_sharing == "layer":
                rows.append(gene.attention[0])
            else:
                rows.append(top_masks(self.attention_ranks[layer][h : h + 1], gene.attention_width)[0])
        kept = None if count == self.shape.num_key_value_heads else tuple(heads.tolist())
        return LayerGene(np.stack(rows), gene.mlp, kept)

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
    def to_spec(self, genome: Genome, metadata: dict | None = None, compact: bool = False) -> SubnetSpec:
        """The genome's spec; ``compact``: index lists as read-only numpy arrays (the search's candidates:
        at 7B shape converting ~350K indices to Python ints costs more than building the subnet)."""
        layers = []
        for index, gene in enumerate(genome):
            if gene is None:
                continue
            if compact:
                channels, mlp = self._channels(gene), gene.mlp
            else:
                channels, mlp = self._channels(gene).tolist(), gene.mlp.tolist()
            layers.append(
                LayerSpec(
                    source_index=index,
                    kv_heads=list(gene.kept_heads()),
                    attention_channels=channels,
                    mlp_channels=mlp,
                    attention_out_bias=self.out_bias,
                    mlp_out_bias=self.out_bias,
                )
            )
        return SubnetSpec(shape=self.shape, layers=layers, metadata=dict(metadata or {}))

    def _channels(self, gene: LayerGene) -> np.ndarray:
        """Per kept KV head its kept channels (a unit's two channels for RoPE), sorted; (heads, channels)."""
        if not self.shape.rope:
            return gene.attention
        channels = np.sort(self._pair_channels[gene.attention].reshape(gene.num_heads, -1), axis=1)
        channels.setflags(write=False)
        return channels

    def from_spec(self, spec: SubnetSpec) -> Genome:
        genes: list[LayerGene | None] = [None] * self.shape.num_layers
        for layer in spec.layers:
            channels = np.asarray(layer.attention_channels, dtype=np.int64).reshape(len(layer.attention_channels), -1)
            if self.shape.rope:
                units = self._unit_of_lower[channels]
                units = np.sort(units[units >= 0].reshape(len(channels), -1), axis=1)
            else:
                units = channels
            all_heads = list(layer.kv_heads) == list(range(self.shape.num_key_value_heads))
            genes[layer.source_index] = LayerGene(units, layer.mlp_channels, None if all_heads else layer.kv_heads)
        return tuple(genes)

    def describe(self) -> dict:
        return {
            "target_ratio": self.target_ratio,
            "ratio_of": self.budget.ratio_of,
            "block_target_ratio": self.block_target,
            "attention_pruning": self.attention_pruning,
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
            "head_search": self.head_search,
        }


def _median(widths: Sequence[int]) -> int:
    return sorted(widths)[len(widths) // 2]
