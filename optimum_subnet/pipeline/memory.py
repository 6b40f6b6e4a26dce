"""Memory guard: estimate a run's peak memory before it starts, and refuse a run that cannot fit.

A run killed by the OOM killer after an hour loses that hour; the same run refused in the first
second with "reduce --num-samples" loses nothing. :func:`estimate_peak_memory` adds up, stage by
stage, the large tensors the pass really allocates on its compute device (all of them live there):

* **model weights**: the dense model, ``params x bytes(dtype)``, held for the whole run;
* **candidate / subnet weights**: the decoder blocks of one extracted subnet at the target ratio
  (embeddings and norms are shared with the dense model, not copied);
* **calibration activations**: the block-by-block driver keeps every calibration window's hidden
  states entering and leaving the current block: ``2 x num_samples x seq_len x hidden x bytes``;
* **importance statistics**: one block's Gram matrices in float64 (``hidden^2`` twice, attention
  width^2, MLP width^2) plus the Cholesky inverse of the largest (4 matrices of that size; the code holds 3
  since it damps its one copy in place and takes the sums, not the means: before that it held 5, and a
  30B shape's importance stage measured 17% over this estimate, benchmarks/results/offload_30b_h200.md);
* **reformation statistics**: for one projection (W_down is the largest) the two-fold dense /
  cross / subnet second moments and their combination in float64 (``3 x (I^2 + I I_s + I_s^2)``,
  ``I_s`` the widest layer's kept MLP width: a given spec's, else the whole MLP, which a search may keep) plus the solver's copies (:func:`solver_elements`: about
  ``5 I_s^2 + I I_s + hidden (I + 3 I_s)``, more with an intercept);
* **block activations**: one batch's intermediate tensors inside a block
  (``batch x seq x (2 hidden + attention + 2 kv + 3 mlp) x bytes``);
* **logits**: perplexity is computed on 2048-token chunks: ``chunk x vocab x 4 bytes x 2`` (logits
  and log-softmax) plus the batch's last hidden states;
* **runtime overhead**: a fixed 512 MiB. On CPU it covers what the run adds besides tensors: the
  ``datasets`` / ``pyarrow`` import and tokenizing the calibration text in one call (measured: 0.4 GB
  for the built-in 2.4 MB text with SmolLM2's tokenizer, kept by the allocator afterwards); on a GPU,
  the CUDA context and cuBLAS workspaces (typically 0.3-0.6 GB).

The peak is the largest stage total. Not counted: allocator fragmentation, small tensors, attention
score matrices (SDPA kernels do not materialize them), and tokenizing much more text than the
built-in set. Measured on SmolLM2-135M (float32, CPU, tiny settings): estimate 1.46 GiB, real growth
of the process from after loading to its peak 1.38 GiB. A run estimated above the budget is refused;
one above 85% of it gets a warning. ``OPTIMUM_SUBNET_MEMORY_LIMIT`` (e.g. ``16GiB``) overrides the
available figure, e.g. when a container limit is not visible to the process.

Weights memory-mapped from a safetensors file (transformers does so when it needs no dtype
conversion) are page cache, which the free-memory figure counts as available although the run will
touch every page; weights copied into the process are already missing from it. ``resident_weight_bytes``
tells the two apart, so the budget is the free memory plus the copied weights only.

**Offload plan** (:func:`plan_memory`): when the whole model does not fit on a GPU (``offload="auto"``)
or when asked to (``offload="on"``), the weights stay in CPU memory (or memory-mapped on disk) and
stream to the GPU block by block (:mod:`optimum_subnet.calibration.offload`). The estimate then counts
two dense blocks (the one computing and the one arriving; two dense + two subnet blocks during the
reformation) and the embeddings / LM head, which stay on the GPU, instead of the whole model; the
search evaluates its candidates in groups that share one stream of the dense blocks, and the group is
as large as the candidates' hidden states (``fitness windows x seq x hidden`` each) allow. Everything
else (calibration activations, statistics, logits) is the same as when resident. The statistics do not
shrink with offloading: at LLaMA-7B shape the reformation's float64 W_down moments and solver copies
for a layer that keeps its whole MLP are about 14 GiB.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from optimum_subnet.core.errors import ResourceError
from optimum_subnet.core.spec import ModelShape
from optimum_subnet.core.files import human_bytes, parse_bytes

logger = logging.getLogger(__name__)

MEMORY_LIMIT_ENV_VAR = "OPTIMUM_SUBNET_MEMORY_LIMIT"
#: Fixed allowance for libraries, data loading and (on a GPU) the CUDA context; see the module docstring.
RUNTIME_OVERHEAD = 512 * 2**20
WARN_FRACTION = 0.85
#: Token chunk of the perplexity computation (see ``evaluation.negative_log_likelihood``).
LOGIT_CHUNK = 2048

#: What a user can change to shrink each part (named in the refusal).
ADVICE = {
    "model weights": "use a smaller dtype (bfloat16 halves the weights) or a device with more memory",
    "candidate weights": "use a smaller dtype or a device with more memory",
    "calibration activations": "reduce data.num_samples or data.seq_len",
    "importance statistics": "use a device with more memory (the statistics grow with the model's widths)",
    "reformation statistics": 'set reformation.method="none", or use a device with more memory',
    "block activations": "reduce data.seq_len or the calibration batch size (data.batch_size)",
    "logits": "reduce data.eval_seq_len or the fitness/eval batch size (search.fitness_batch_size, data.eval_batch_size)",
    "streamed blocks": "use a device with more memory (two decoder blocks must fit)",
    "embeddings and head": "use a smaller dtype or a device with more memory",
    "candidate hidden states": "reduce search.fitness_windows or search.fitness_seq_len",
}
OFFLOAD_MODES = ("auto", "on", "off")


@dataclass
class MemoryEstimate:
    """Bytes per stage, each as named parts; ``peak`` is the largest stage."""

    device: str
    stages: dict[str, dict[str, int]] = field(default_factory=dict)

    def total(self, stage: str) -> int:
        return sum(self.stages[stage].values())

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=self.total)

    @property
    def peak(self) -> int:
        return self.total(self.peak_stage)

    def describe(self, parts: int = 3) -> str:
        """The peak stage's largest parts, e.g. ``calibration activations 4.0 GiB, model weights 2.5 GiB``."""
        largest = sorted(self.stages[self.peak_stage].items(), key=lambda kv: -kv[1])[:parts]
        return ", ".join(f"{name} {human_bytes(size)}" for name, size in largest if size)


def estimate_peak_memory(shape: ModelShape, config, dtype_bytes: int, device: str = "cpu",
                         search: bool = True, offload: bool = False, candidate_group: int = 1,
                         widest_mlp: int | None = None) -> MemoryEstimate:
    """Stage-by-stage estimate for ``config`` (a :class:`SubnetConfig`) on a model of ``shape``.

    ``search=False`` leaves out the importance pass and the search (a given spec is only reformed).
    ``offload``: the blocks are streamed (see the module docstring); ``candidate_group`` candidates
    share one stream of the dense blocks during the search. ``widest_mlp``: the largest MLP width any
    layer of the subnet keeps, which sizes the reformation's statistics (they are computed one layer at
    a time, so the widest layer is the peak); unknown before a search, it defaults to the whole MLP: the
    search may keep a layer whole (at LLaMA-7B shape, target 0.5, an estimate from the average kept width
    was 4.1 GiB under the GPU's peak in both the resident and the offloaded run).
    """
    s, d = config.search, config.data
    b = dtype_bytes
    hidden, mlp = shape.hidden_size, shape.intermediate_size
    attention = shape.num_attention_heads * shape.head_dim
    kv = shape.num_key_value_heads * shape.head_dim
    from optimum_subnet.algorithms.budget import Budget

    block_ratio = min(1.0, max(0.0, Budget(shape, config.target_ratio, config.ratio_of).block_target_ratio))
    widest = mlp if widest_mlp is None else min(mlp, widest_mlp)

    weights = shape.dense_params() * b
    candidate = int(shape.dense_block_params() * block_ratio * b)
    stream = d.num_samples * d.seq_len * hidden * b

    def block(batch: int, seq: int) -> int:
        return batch * seq * (2 * hidden + attention + 2 * kv + 3 * mlp) * b

    def logits(batch: int, seq: int) -> int:
        return min(LOGIT_CHUNK, batch * (seq - 1)) * shape.vocab_size * 4 * 2 + batch * seq * hidden * b

    def perplexity_stage(batch: int, seq: int, extra: dict[str, int]) -> dict[str, int]:
        return {"model weights": weights, **extra, "block activations": block(batch, seq),
                "logits": logits(batch, seq)}

    eval_batch = min(d.eval_batch_size, d.eval_max_windows or d.eval_batch_size)
    stages = {
        "dense evaluation": perplexity_stage(eval_batch, d.eval_seq_len, {}),
        "reformation": {
            "model weights": weights,
            "candidate weights": candidate,
            "calibration activations": 2 * stream,
            "reformation statistics": 8 * (3 * (mlp * mlp + mlp * widest + widest * widest)
                                           + solver_elements(hidden, mlp, widest, config.reformation_bias)),
            "block activations": 2 * block(d.batch_size, d.seq_len),
        },
        "final evaluation": perplexity_stage(eval_batch, d.eval_seq_len, {"candidate weights": candidate}),
    }
    if config.reformation.method == "none":
        stages["reformation"]["reformation statistics"] = 0
    if search and s.selection_after_reformation:  # the best reformed subnet is kept while the next is reformed
        stages["reformation"]["candidate weights"] = 2 * candidate
    if search:
        largest = max(hidden, attention, mlp)
        stages["importance"] = {
            "model weights": weights,
            "calibration activations": 2 * stream,
            "importance statistics": 8 * (2 * hidden * hidden + attention * attention + mlp * mlp)
                                     + 4 * 8 * largest * largest,
            "block activations": block(d.batch_size, d.seq_len) + d.batch_size * d.seq_len * largest * 4,
        }
        stages["search"] = perplexity_stage(s.fitness_batch_size, s.fitness_seq_len, {"candidate weights": candidate})
    if offload:
        dense_block = shape.dense_block_params() // shape.num_layers * b  # one decoder block
        resident = {"streamed blocks": 2 * dense_block, "embeddings and head": shape.embedding_params() * b}
        for name, parts in stages.items():
            parts.pop("model weights")
            if name == "reformation":  # a (dense, subnet) layer pair computing and the next one arriving
                parts.pop("candidate weights")
                parts.update(resident, **{"streamed blocks": 2 * (dense_block + int(dense_block * block_ratio))})
            elif name == "search":  # one candidate layer sliced at a time from the streamed dense block
                states = s.fitness_windows * s.fitness_seq_len * hidden * b
                parts.update(resident, **{"candidate weights": int(dense_block * block_ratio),
                                          "candidate hidden states": (max(1, candidate_group) + 1) * states})
            else:
                parts.pop("candidate weights", None)
                parts.update(resident)
    for parts in stages.values():
        parts["runtime overhead"] = RUNTIME_OVERHEAD
    return MemoryEstimate(device=device, stages=stages)


def solver_elements(out_features: int, in_features: int, kept: int, bias: bool) -> int:
    """Float64 elements the closed-form solve of one projection (``least_squares.closed_form``, or
    ``closed_form_with_bias`` with an intercept) and its output error hold beside the moments: the means
    of the cross (in x |S|) and kept (|S|^2) moments, the identity, the damped matrix, its Cholesky factor
    and the copy of it that ``cholesky_solve`` makes (with an intercept the augmented copies: 8 |S|^2 and
    the cross twice), and the dense, prior, right-hand-side and fitted weights (out x (in + 3 |S|)).
    Counted from the code; on the GPU the 7B run ran out of memory allocating that last copy (issue 17)."""
    squares, crosses = (8, 2) if bias else (5, 1)
    return squares * kept * kept + crosses * in_features * kept + out_features * (in_features + 3 * kept)


@dataclass
class MemoryPlan:
    """Where the weights live during a run, and the estimate that chose it (see :func:`plan_memory`)."""

    offload: bool
    estimate: MemoryEstimate
    budget: int
    source: str
    #: candidates that share one stream of the dense blocks in the search (offload only)
    candidate_group: int = 1
    #: bytes the whole model would need resident (what did not fit, when offloading automatically)
    resident_peak: int = 0
    reason: str = ""

    def describe(self) -> dict:
        return {"plan": "offload" if self.offload else "resident", "device": self.estimate.device,
                "estimated_peak_bytes": self.estimate.peak, "estimated_peak_stage": self.estimate.peak_stage,
                "estimated_stage_bytes": {name: self.estimate.total(name) for name in self.estimate.stages},
                "budget_bytes": self.budget, "budget_source": self.source, "resident_peak_bytes": self.resident_peak,
                "candidate_group": self.candidate_group if self.offload else None, "reason": self.reason}


class StagePeaks:
    """Peak memory allocated on a CUDA device during each stage of a run, named as the estimate's
    stages, so the report shows the estimate next to what the run really held (on other devices it
    records nothing: their allocators keep no peak)."""

    def __init__(self, device):
        import torch

        self.device = torch.device(device)
        self.enabled = self.device.type == "cuda" and torch.cuda.is_available()
        self.peaks: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str):
        if not self.enabled:
            yield
            return
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield
        finally:
            torch.cuda.synchronize(self.device)
            self.peaks[name] = max(self.peaks.get(name, 0), int(torch.cuda.max_memory_allocated(self.device)))


def plan_memory(shape: ModelShape, config, dtype_bytes: int, device: str, budget: int, source: str,
                search: bool = True, mode: str | None = None, widest_mlp: int | None = None) -> MemoryPlan:
    """Resident if the whole run fits ``budget``; otherwise, on a GPU with ``mode`` (default
    ``config.offload``) ``"auto"``, offloaded (blocks streamed) if that fits; ``"on"`` always offloads
    (on the CPU the transfer is a no-op: the same code path, for tests), ``"off"`` never does.
    Refuses (:class:`ResourceError`, one line) a run that fits in neither way."""
    mode = mode or getattr(config, "offload", "auto")
    if mode not in OFFLOAD_MODES:
        raise ResourceError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {mode!r}")
    resident = estimate_peak_memory(shape, config, dtype_bytes, device, search=search, widest_mlp=widest_mlp)
    gpu = str(device).startswith("cuda")
    if mode == "off" or (mode == "auto" and (resident.peak <= budget or not gpu)):
        check_memory(resident, budget, source)
        return MemoryPlan(False, resident, budget, source, resident_peak=resident.peak, reason="fits" if
                          resident.peak <= budget else "")
    # offloaded: the largest candidate group whose hidden states fit (at most a generation's candidates)
    group = max(1, config.search.population_size)
    estimate = estimate_peak_memory(shape, config, dtype_bytes, device, search=search, offload=True,
                                    candidate_group=group, widest_mlp=widest_mlp)
    if search and estimate.peak > budget:
        per_candidate = config.search.fitness_windows * config.search.fitness_seq_len * shape.hidden_size * dtype_bytes
        group = max(1, min(group, group - math.ceil((estimate.peak - budget) / max(1, per_candidate))))
        estimate = estimate_peak_memory(shape, config, dtype_bytes, device, search=search, offload=True,
                                        candidate_group=group, widest_mlp=widest_mlp)
    if mode == "auto" and estimate.peak > budget:
        peak_stage = estimate.peak_stage
        parts = {k: v for k, v in estimate.stages[peak_stage].items() if k != "runtime overhead"}
        largest = max(parts, key=parts.get)
        raise ResourceError(
            f"not enough memory on {device}: the whole model needs {human_bytes(resident.peak)} at its peak and "
            f"even with its blocks streamed from CPU memory the run needs {human_bytes(estimate.peak)} "
            f"({peak_stage}: {estimate.describe()}) but {human_bytes(budget)} is available ({source}); "
            f"{ADVICE[largest]}")
    check_memory(estimate, budget, source)
    reason = "offload requested" if mode == "on" else f"the whole run needs {human_bytes(resident.peak)} at its peak"
    if mode != "on":
        logger.warning("The model does not fit on %s (%s, %s available: %s): it stays in CPU memory and its blocks "
                       "are streamed", device, reason, human_bytes(budget), source)
    logger.info("Memory plan: weights stay in CPU memory and stream to %s one block at a time (%s); estimated "
                "peak %s (%s), the search evaluates %d candidates per stream of the blocks", device, reason,
                human_bytes(estimate.peak), estimate.peak_stage, group)
    return MemoryPlan(True, estimate, budget, source, candidate_group=group, resident_peak=resident.peak,
                      reason=reason)


def mapped_safetensors_ranges() -> list[tuple[int, int]] | None:
    """Address ranges of the safetensors files this process has memory-mapped (None: unreadable)."""
    try:
        import psutil

        return [tuple(int(x, 16) for x in m.addr.split("-"))
                for m in psutil.Process().memory_maps(grouped=False)
                if m.path.removesuffix(" (deleted)").endswith(".safetensors")]
    except Exception:  # psutil cannot read the mappings on this platform
        return None


def is_memory_mapped(tensor, ranges: list[tuple[int, int]] | None = None) -> bool:
    """Whether ``tensor``'s storage lies inside a memory-mapped safetensors file (weights read from disk
    on use; pinning them would copy them all into RAM)."""
    ranges = mapped_safetensors_ranges() if ranges is None else ranges
    pointer = tensor.untyped_storage().data_ptr()
    return bool(ranges) and any(start <= pointer < end for start, end in ranges)


def resident_weight_bytes(model) -> int:
    """Bytes of ``model``'s weights held in the process's own memory: every storage that does not lie
    inside a memory-mapped safetensors file. If the mappings cannot be read, 0 (the weights then
    count as still needed)."""
    mapped = mapped_safetensors_ranges()
    if mapped is None:
        return 0
    seen, resident = set(), 0
    for parameter in model.parameters():
        storage = parameter.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        if not any(start <= storage.data_ptr() < end for start, end in mapped):
            resident += storage.nbytes()
    return resident


def _cgroup_available() -> int | None:
    """Memory left under a cgroup (v2 or v1) limit, if the process runs under one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def memory_budget(device: str, resident: int = 0) -> tuple[int, str]:
    """Bytes the run may use on ``device`` at its peak, and where the figure comes from.

    ``resident`` is what the run already holds there (the dense model, when it was loaded on that
    device): it is part of the estimate, so it is added back to the free memory. The
    ``OPTIMUM_SUBNET_MEMORY_LIMIT`` override is the whole budget.
    """
    override = os.environ.get(MEMORY_LIMIT_ENV_VAR)
    if override:
        return parse_bytes(override), f"${MEMORY_LIMIT_ENV_VAR}"
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free) + resident, f"free on {device}"
    import psutil

    free = int(psutil.virtual_memory().available)
    cgroup = _cgroup_available()
    if cgroup is not None and cgroup < free:
        return cgroup + resident, "available under the container's memory limit"
    return free + resident, "available RAM"


def check_memory(estimate: MemoryEstimate, budget: int, source: str = "available") -> None:
    """Refuse (one line, naming what to reduce) if the estimated peak exceeds ``budget`` bytes."""
    peak = estimate.peak
    if peak > budget:
        parts = {k: v for k, v in estimate.stages[estimate.peak_stage].items() if k != "runtime overhead"}
        largest = max(parts, key=parts.get)  # the largest part a user can shrink
        raise ResourceError(
            f"not enough memory on {estimate.device}: the run needs at least {human_bytes(peak)} at its peak "
            f"({estimate.peak_stage}: {estimate.describe()}) but {human_bytes(budget)} is available "
            f"({source}); {ADVICE[largest]}"
        )
    level = logging.WARNING if peak > WARN_FRACTION * budget else logging.INFO
    logger.log(level, "Estimated peak memory %s on %s (%s), %s available (%s)", human_bytes(peak), estimate.device,
               estimate.peak_stage, human_bytes(budget), source)
