"""Configuration of the subnet pass, as dataclasses that round-trip to JSON.

``SubnetConfig.preset("fast" | "paper", target_ratio)`` gives the two documented starting points:

* ``paper``: the paper's search (100 candidates x 50 generations, fitness on 2048-token windows,
  128 x 2048-token calibration samples). Sized for a GPU.
* ``fast``: small enough that a 0.8 search of SmolLM2-135M, evaluations included, finishes in
  about a quarter of an hour on a 2-core CPU.

``preset("auto", ...)`` picks ``paper`` when a GPU is visible and ``fast`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from optimum_subnet.core.errors import SubnetError
from optimum_subnet.core.jsonconfig import JsonConfig

#: How our search prunes attention (``SearchConfig.attention_pruning``): "in_head" (RoPE pairs inside the heads,
#: the paper's space), "none" (left whole: MLP widths and depth only), "auto" (the family's default,
#: ``search.space.default_attention_pruning``).
ATTENTION_PRUNING = ("auto", "in_head", "none")
ATTENTION_WHOLE_TAKES_NO_RANGE = ('search.attention_pruning = "none" leaves attention whole: it takes no '
                                  "search.attention_range")

#: How the search screens a candidate (``SearchConfig.screening_method``).
SCREENING_METHODS = ("auto", "subnet", "masked")


def resolve_screening_method(method: str, device: str, streamed: bool = False, masks_approximate: bool = False) -> str:
    """``method`` with "auto" resolved: "masked" on a GPU (the dense forward under masks is cheaper there than
    building each candidate), "subnet" on the CPU, with streamed blocks (an offloaded run, where masked
    screening cannot run), or where masks only approximate the subnet (in-head pruning under q/k norms)."""
    if method != "auto":
        return method
    on_gpu = str(device).startswith("cuda")
    return "masked" if on_gpu and not streamed and not masks_approximate else "subnet"


CONFIG_NAME = "subnet_optimization.json"
#: "ours" and the baselines of :mod:`optimum_subnet.stages.baselines` (kept here so configs validate without torch)
METHODS = ("ours", "flap", "wanda-sp", "magnitude", "random")


@dataclass
class SearchConfig:
    """Evolutionary search (Shen et al. 2024, Sec. 3.3 and 4.1; names follow METHOD.md)."""

    population_size: int = 100  # N
    num_mutations: int = 50  # N_m
    num_crossovers: int = 30  # N_c
    top_k: int = 10  # k
    generations: int = 50
    mask_overlap: float = 0.8  # alpha
    max_tries: int = 1000  # eta
    initial_ratio_mutation_prob: float = 0.3  # P_s0
    initial_mask_mutation_prob: float = 0.6  # P_m0
    depth_mutation_prob: float = 0.1  # P_d
    ratio_mutation_prob: float = 0.1  # P_s
    mask_mutation_prob: float = 0.3  # P_m
    #: How attention is pruned (one of ATTENTION_PRUNING): "auto" is whole for families with per-head q/k
    #: norms (Qwen3, Gemma3), in-head for the others (``search.space.default_attention_pruning`` says why).
    attention_pruning: str = "auto"
    #: [min, max] kept fraction of each layer's attention channels / MLP channels; None: the paper's
    #: ranges for the target (see ``search.space.paper_ranges``).
    attention_range: list[float] | None = None
    mlp_range: list[float] | None = None
    #: "auto": depth search only for targets <= 0.7, as in the paper.
    depth_search: str = "auto"
    #: Whole KV heads (with their query groups) may be dropped besides channels inside heads (not in the
    #: paper): "on", "off", or "auto" (on for targets <= 0.6). With it, the global initial subnet by heads
    #: (FLAP's head structure) is a third starting candidate.
    kv_head_search: str = "off"
    min_depth_ratio: float = 0.875  # 28/32 layers in the paper
    head_dim_multiple: int = 8
    mlp_multiple: int = 64
    ratio_tolerance: float = 0.002
    #: How a mask mutation fills its new members: "uniform" (paper) or "importance"-weighted.
    mask_fill: str = "uniform"
    #: One attention channel mask per KV head ("kv_head", the paper) or one per layer shared by all KV
    #: heads ("layer"): then every head keeps the same rotary frequencies, so ONNX Runtime's
    #: GroupQueryAttention applies RoPE in-kernel (with head sizes that are multiples of 16), which
    #: decodes faster than the explicit per-head rotation a "kv_head" subnet needs.
    attention_mask_sharing: str = "kv_head"
    #: Channel metric that ranks channels and seeds the search: "fluctuation" (FLAP's weighted input
    #: variance, measured much better on SmolLM2) or "obs" (the paper's Eq. 2-4).
    importance: str = "fluctuation"
    #: Initial subnet: "uniform" (the paper: the same ratio in every layer), "global" (one standardized
    #: threshold over all layers and modules, FLAP's adaptive structure) or "best" (both evaluated on the
    #: fitness windows, the better seeds the search).
    initialization: str = "best"
    fitness_windows: int = 4
    fitness_seq_len: int = 2048
    fitness_batch_size: int = 4
    #: Screening (successive halving, not in the paper; 1.0 = off): each generation's new candidates are
    #: ranked by perplexity on the first ``screening_windows`` fitness windows cut to ``screening_seq_len``
    #: tokens, and only this fraction gets the full fitness. Cuts the search cost on large models.
    screening_keep: float = 1.0
    screening_windows: int = 1
    screening_seq_len: int = 512
    #: How a candidate is screened: "subnet" (its subnet is built, and kept for its full evaluation) or
    #: "masked" (the dense model runs with the candidate's pruned channels zeroed by hooks: no construction,
    #: which costs ~0.1 s of Python per 32-layer candidate, but the dense model's forward). The same values
    #: up to summation order except inside heads of q/k-norm families, where masking approximates. "auto"
    #: (:func:`resolve_screening_method`): masked on a GPU, where it screens 2.1x faster at LLaMA-7B shape,
    #: subnet on the CPU, where it is 1.4x slower (benchmarks/results/screening_methods_*.md).
    screening_method: str = "auto"
    #: Fresh fitness windows every generation (not in the paper): generation g scores on its own random
    #: draw of ``fitness_windows`` calibration windows, and the top-k is scored again on them.
    fitness_refresh: bool = False
    #: "perplexity" of the text (the paper) or "distillation": mean KL divergence from the dense model's
    #: next-token distribution to the candidate's on the fitness windows.
    fitness_metric: str = "perplexity"
    #: Final choice (not in the paper; 0 = off: the best fitness wins): the top-k and both initial subnets
    #: are scored by perplexity on this many calibration windows that neither the search nor the
    #: reformation saw, and the best is kept, so the search never returns a subnet worse there than the
    #: initial ones.
    selection_windows: int = 0
    selection_seq_len: int = 512
    #: With ``selection_windows``: choose *after* reformation instead (not in the paper; off by default): the
    #: chosen subnet and the initial subnets are each reformed, and the best reformed one on the selection
    #: windows is kept, so the pass never returns a subnet whose reformed version is worse there than a
    #: reformed initial one (one reformation per initial subnet more). Measured at 0.5 on SmolLM2, where the
    #: searched subnet reformed no better than the reformed uniform start in three of three seeds
    #: (benchmarks/results/generalization_ablation_05.md).
    selection_after_reformation: bool = False


@dataclass
class DataConfig:
    dataset: str = "enwiki-extract"
    text_column: str = "text"
    num_samples: int = 128  # calibration windows (importance + reformation)
    seq_len: int = 2048
    batch_size: int = 8
    eval_dataset: str | None = None  # default: the held-out side of ``dataset``
    eval_seq_len: int = 512
    eval_max_windows: int | None = None  # None: every window of the held-out set
    eval_batch_size: int = 4


@dataclass
class ReformationConfig:
    """Weight rectification (Sec. 3.4). ``closed_form`` is exact least squares; ``admm`` the paper's."""

    method: str = "closed_form"
    #: Fit an intercept with the closed form (a bias on W_O and W_down, hidden_size parameters each per
    #: layer, counted in the budget): the least-squares version of FLAP's bias compensation. Off by
    #: default: on SmolLM2 at 0.8 it measured no gain (held-out perplexity 50.2 with, 49.9 without).
    bias: bool = False
    #: Ridge of the closed form relative to mean(diag H'); None: chosen per projection on held-out windows.
    damp: float | None = None
    rho: float = 1.0
    iterations: int = 30


@dataclass
class BaselineConfig:
    """Settings of the structured-pruning baselines (``SubnetConfig.method`` other than ``ours``).

    ``None`` means each method's own choice (:mod:`optimum_subnet.stages.baselines.methods`): FLAP uses a
    global (adaptive) structure and bias compensation, the others a uniform structure without bias.
    ``attention_unit``: ``head`` (whole KV heads with their query group, as the papers prune) or
    ``pair`` (RoPE channel pairs inside the heads, our method's search space).
    """

    attention_unit: str = "head"
    structure: str | None = None
    bias_compensation: bool | None = None


@dataclass
class FaithfulnessConfig:
    """Does the subnet rely on the same prompt evidence as the dense model? AtMan relevance maps of
    both on BoolQ prompts, compared by Spearman rank correlation and top-k overlap
    (:mod:`optimum_subnet.evaluation.faithfulness`). ``prompts = 0`` turns the report section off.

    The default (4 short prompts, token granularity) adds about a minute to a SmolLM2-135M search on
    a 2-core CPU. ``min_spearman`` makes it a search constraint: candidates whose mean Spearman on
    ``constraint_prompts`` prompts is below it are rejected (an AtMan run per candidate; off by default).
    """

    prompts: int = 4
    max_passage_chars: int = 200
    max_tokens: int = 128  # prompt + target, also capped by the model's max_position_embeddings
    seed: int = 0
    top_k: int = 5
    granularity: str = "token"
    suppression_factor: float = 0.9
    mode: str = "multiplicative"
    batch_size: int = 8
    min_spearman: float | None = None
    constraint_prompts: int = 2

    @property
    def enabled(self) -> bool:
        return self.prompts > 0 or self.min_spearman is not None

    def validate(self) -> "FaithfulnessConfig":
        checks = [
            (self.prompts >= 0, f"faithfulness prompts must be >= 0, got {self.prompts}"),
            (self.max_passage_chars >= 1, "faithfulness max_passage_chars must be >= 1"),
            (self.max_tokens >= 2, "faithfulness max_tokens must be >= 2"),
            (self.top_k >= 1, f"faithfulness top_k must be >= 1, got {self.top_k}"),
            (self.min_spearman is None or -1.0 <= self.min_spearman <= 1.0,
             f"min_spearman must be in [-1, 1], got {self.min_spearman}"),
            (self.constraint_prompts >= 1, "faithfulness constraint_prompts must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise SubnetError(message)
        self.atman_config()  # validates the AtMan fields
        return self

    def atman_config(self):
        from optimum_subnet.explain.explainer import AtManConfig

        return AtManConfig(suppression_factor=self.suppression_factor, mode=self.mode, granularity=self.granularity,
                           batch_size=self.batch_size)


@dataclass
class SubnetConfig(JsonConfig):
    CONFIG_NAME: ClassVar[str] = CONFIG_NAME
    SECTIONS: ClassVar[dict[str, type]] = {"search": SearchConfig, "data": DataConfig, "reformation": ReformationConfig,
                                           "faithfulness": FaithfulnessConfig, "baseline": BaselineConfig}
    DESCRIPTION: ClassVar[str] = "subnet configuration"

    target_ratio: float = 0.8
    #: what the ratio is a fraction of: "all" parameters (the paper; embeddings and LM head included) or the
    #: decoder "blocks" (for models whose embeddings are most of the parameters, e.g. Gemma3-270M)
    ratio_of: str = "all"
    preset: str = "paper"
    #: "ours" (importance + evolutionary search + reformation) or a baseline: flap, wanda-sp, magnitude, random
    method: str = "ours"
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    importance_damp: float = 0.01
    #: Where the weights live (README "Large models and several GPUs"): "auto" keeps the model on the
    #: device when the run fits there and otherwise streams its blocks from CPU memory, one at a time
    #: with the next one prefetched (GPU only); "on" always streams them; "off" never does.
    offload: str = "auto"
    search: SearchConfig = field(default_factory=SearchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reformation: ReformationConfig = field(default_factory=ReformationConfig)
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self):
        if not isinstance(self.preset, str):
            # The ``preset`` classmethod below shadows this field's default in the class body, so the
            # dataclass default is that method; fall back to the documented default instead (a bound
            # method here made ``to_dict`` unserializable: --config files without "preset" crashed
            # when the run saved its configuration, after all the work).
            self.preset = "paper"
        self.validate()

    def validate(self) -> "SubnetConfig":
        if not isinstance(self.target_ratio, (int, float)) or not 0 < self.target_ratio <= 1:
            raise SubnetError(f"target ratio must be in (0, 1], got {self.target_ratio}")
        s, d, r = self.search, self.data, self.reformation
        checks = [
            (self.ratio_of in ("all", "blocks"),
             f"the target ratio counts 'all' parameters or the decoder 'blocks', got {self.ratio_of!r}"),
            (s.population_size >= 2, f"population size must be >= 2, got {s.population_size}"),
            (s.generations >= 0, f"generations must be >= 0, got {s.generations}"),
            (1 <= s.top_k <= s.population_size, f"top_k must be in 1..population_size, got {s.top_k}"),
            (s.num_mutations + s.num_crossovers <= s.population_size,
             "num_mutations + num_crossovers must not exceed the population size"),
            (0 < s.mask_overlap <= 1, f"mask_overlap must be in (0, 1], got {s.mask_overlap}"),
            (s.depth_search in ("auto", "on", "off"), f"depth_search must be auto, on or off, got {s.depth_search!r}"),
            (s.attention_pruning in ATTENTION_PRUNING,
             f"attention_pruning must be one of {', '.join(ATTENTION_PRUNING)}, got {s.attention_pruning!r}"),
            (not (s.attention_pruning == "none" and s.attention_range and list(s.attention_range) != [1.0, 1.0]),
             ATTENTION_WHOLE_TAKES_NO_RANGE),
            (s.kv_head_search in ("auto", "on", "off"),
             f"kv_head_search must be auto, on or off, got {s.kv_head_search!r}"),
            (s.attention_mask_sharing in ("kv_head", "layer"),
             f"attention_mask_sharing must be kv_head or layer, got {s.attention_mask_sharing!r}"),
            (s.head_dim_multiple >= 1 and s.mlp_multiple >= 1, "width multiples must be >= 1"),
            (s.importance in ("fluctuation", "obs"), f"importance must be fluctuation or obs, got {s.importance!r}"),
            (s.initialization in ("best", "uniform", "global"),
             f"initialization must be best, uniform or global, got {s.initialization!r}"),
            (s.fitness_windows >= 1 and s.fitness_seq_len >= 2, "fitness needs at least one window of >= 2 tokens"),
            (0 < s.screening_keep <= 1, f"screening_keep must be in (0, 1], got {s.screening_keep}"),
            (1 <= s.screening_windows <= s.fitness_windows and s.screening_seq_len >= 2,
             "screening needs 1..fitness_windows windows of >= 2 tokens"),
            (s.screening_method in SCREENING_METHODS,
             f"screening_method must be {', '.join(SCREENING_METHODS[:-1])} or {SCREENING_METHODS[-1]}, "
             f"got {s.screening_method!r}"),
            (s.fitness_metric in ("perplexity", "distillation"),
             f"fitness_metric must be perplexity or distillation, got {s.fitness_metric!r}"),
            (s.selection_windows >= 0 and s.selection_seq_len >= 2,
             "selection_windows must be >= 0 (0: off) and selection_seq_len >= 2"),
            (not s.selection_after_reformation or s.selection_windows > 0,
             "selection_after_reformation chooses on the selection windows: set selection_windows > 0"),
            (d.num_samples >= 1, f"calibration needs at least one sample, got {d.num_samples}"),
            (d.seq_len >= 2 and d.eval_seq_len >= 2, "sequence lengths must be at least 2 tokens"),
            (d.eval_max_windows is None or d.eval_max_windows >= 1,
             f"eval_max_windows must be >= 1 (or None: every window), got {d.eval_max_windows}"),
            (d.batch_size >= 1 and d.eval_batch_size >= 1, "batch sizes must be >= 1"),
            (r.method in ("closed_form", "admm", "none"), f"unknown reformation method {r.method!r}"),
            (self.dtype in ("float32", "float16", "bfloat16"), f"unknown dtype {self.dtype!r}"),
            (self.offload in ("auto", "on", "off"), f"offload must be auto, on or off, got {self.offload!r}"),
            (self.method in METHODS, f"unknown method {self.method!r}; use one of {', '.join(METHODS)}"),
            (self.baseline.attention_unit in ("head", "pair"),
             f"baseline attention_unit must be head or pair, got {self.baseline.attention_unit!r}"),
            (self.baseline.structure in (None, "uniform", "global"),
             f"baseline structure must be uniform or global, got {self.baseline.structure!r}"),
            (not (self.uses_bias_compensation and r.method != "none"),
             "bias compensation and reformation both rectify W_O / W_down: set the reformation to none "
             '(reformation.method="none") or leave bias compensation off'),
        ]
        for ok, message in checks:
            if not ok:
                raise SubnetError(message)
        self.faithfulness.validate()
        return self

    @property
    def reformation_bias(self) -> bool:
        """Whether the reformation fits W_O / W_down biases (closed form with an intercept)."""
        return self.reformation.method == "closed_form" and self.reformation.bias and not self.uses_bias_compensation

    @property
    def uses_bias_compensation(self) -> bool:
        if self.method == "ours":
            return False
        if self.baseline.bias_compensation is not None:
            return self.baseline.bias_compensation
        # FLAP's default; a reformation (a least-squares version of the same compensation) replaces it
        return self.method == "flap" and self.reformation.method == "none"

    # -------------------------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, target_ratio: float, method: str = "ours", **overrides: Any) -> "SubnetConfig":
        """A documented starting point. With a baseline ``method`` the reformation defaults to
        ``none`` (each baseline as its paper defines it; pass ``reformation__method`` to add ours)."""
        if method != "ours" and "reformation__method" not in overrides:
            overrides["reformation__method"] = "none"
        return cls._preset(name, target_ratio, method=method, **overrides)

    @classmethod
    def _preset(cls, name: str, target_ratio: float, **overrides: Any) -> "SubnetConfig":
        if name == "auto":
            import torch

            name = "paper" if torch.cuda.is_available() else "fast"
        if name == "paper":
            config = cls(target_ratio=target_ratio, preset="paper")
        elif name == "fast":
            config = cls(
                target_ratio=target_ratio,
                preset="fast",
                search=SearchConfig(population_size=16, num_mutations=8, num_crossovers=4, top_k=4, generations=10,
                                    fitness_windows=4, fitness_seq_len=256),
                data=DataConfig(num_samples=32, seq_len=256, batch_size=8, eval_seq_len=512, eval_max_windows=24),
            )
        else:
            raise SubnetError(f"unknown preset {name!r}; use fast, paper or auto")
        return config.replace(**overrides)
