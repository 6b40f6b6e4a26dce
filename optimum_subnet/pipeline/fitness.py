"""Fitness of candidate specs: their physically extracted subnets, scored on calibration windows.

The search engine hands out lists of :class:`~optimum_subnet.core.spec.SubnetSpec` candidates (all the
new ones of a generation, ``many`` / ``screen_many``); this is where they meet the model (surgery + a loss), outside
:mod:`optimum_subnet.search`. Metrics (``metric``):

* ``perplexity``: of the text (the paper's fitness);
* ``distillation``: mean KL divergence, per predicted token, from the dense model's next-token
  distribution to the subnet's (knowledge-distillation loss, Hinton et al. 2015): it measures how far
  a candidate drifts from the model it inherits from on every token, not only on the observed one.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from optimum_subnet.evaluation.perplexity import perplexity
from optimum_subnet.stages.surgery import extract_subnet, masked_as

METRICS = ("perplexity", "distillation")


class PerplexityFitness:
    """``fitness.many(specs) -> [perplexity, ...]`` (lower is better); ``fitness(spec)`` for one.

    Each candidate's subnet is cut out of the dense model (kept rows/columns copied, embeddings and
    norms shared), so a candidate costs its own, smaller forward pass rather than the dense one.

    Built once: subnets built for the screening round (:meth:`screen_many`) are kept, best-screened first,
    within ``keep_built_bytes`` of their weights, and the full evaluation of the same spec object
    reuses them instead of cutting them again (``builds`` / ``reused`` count both).

    Masked screening (``masked_screening``): the screening round runs the dense model with each candidate's
    pruned channels zeroed (:func:`~optimum_subnet.stages.surgery.masked_as`) instead of building it; nothing
    is kept for the full evaluation then.

    Fresh windows: with ``window_sets`` (``generation -> windows``) :meth:`refresh` switches to another
    draw of fitness windows (the screening windows are cut from them as before).
    """

    metric = "perplexity"

    def __init__(self, model, adapter, windows: torch.Tensor, batch_size: int,
                 screening_windows: torch.Tensor | None = None, *,
                 window_sets: Callable[[int], torch.Tensor] | None = None,
                 keep_built_bytes: int | None = None, on_scored: Callable[[], None] | None = None,
                 masked_screening: bool = False):
        self.model = model
        self.adapter = adapter
        self.windows = windows
        self.batch_size = batch_size
        self.screening_windows = screening_windows
        self.window_sets = window_sets
        self.keep_built_bytes = default_keep_bytes(model) if keep_built_bytes is None else keep_built_bytes
        self.on_scored = on_scored
        self.masked_screening = masked_screening
        self.builds = 0
        self.reused = 0
        self._held: dict[int, tuple] = {}  # id(spec) -> (spec, subnet, screening score, bytes)

    # ------------------------------------------------------------------------------ candidates
    def subnet(self, spec):
        """The candidate's subnet (search candidates are valid by construction: not re-validated)."""
        held = self._held.pop(id(spec), None)
        if held is not None and held[0] is spec:
            self.reused += 1
            return held[1]
        self.builds += 1
        return extract_subnet(self.model, spec, self.adapter, validate=False)

    def _hold(self, spec, subnet, score: float) -> None:
        """Keep a screened subnet for its full evaluation, dropping the worst-screened ones past the budget."""
        size = spec.block_params() * next(self.model.parameters()).element_size()
        self._held[id(spec)] = (spec, subnet, score, size)
        while sum(entry[3] for entry in self._held.values()) > self.keep_built_bytes and self._held:
            worst = max(self._held, key=lambda k: self._held[k][2])
            del self._held[worst]

    # --------------------------------------------------------------------------------- scoring
    def measure(self, subnet, windows: torch.Tensor) -> float:
        return perplexity(subnet, windows, self.batch_size)

    @torch.no_grad()
    def score(self, spec) -> float:
        """One candidate's fitness on the current windows."""
        return self.measure(self.subnet(spec), self.windows)

    def __call__(self, spec) -> float:
        return self.score(spec)

    @torch.no_grad()
    def many(self, specs) -> list[float]:
        """The fitness of each spec (a generation's new candidates, in order)."""
        values = []
        for spec in specs:
            values.append(self.score(spec))
            if self.on_scored is not None:
                self.on_scored()
        self._held.clear()
        return values

    @torch.no_grad()
    def screen(self, spec) -> float:
        """One candidate's screening proxy (its subnet is not kept)."""
        if self.screening_windows is None:
            raise ValueError("this fitness was built without screening windows")
        if self.masked_screening:
            with masked_as(self.model, spec, self.adapter):
                return self.measure(self.model, self.screening_windows)
        return self.measure(self.subnet(spec), self.screening_windows)

    @torch.no_grad()
    def screen_many(self, specs) -> list[float]:
        """Cheap proxy for the search's screening round: the metric on the short screening windows."""
        if self.screening_windows is None:
            raise ValueError("this fitness was built without screening windows")
        if self.masked_screening:
            return [self.screen(spec) for spec in specs]
        values = []
        for spec in specs:
            subnet = self.subnet(spec)
            value = self.measure(subnet, self.screening_windows)
            self._hold(spec, subnet, value if math.isfinite(value) else math.inf)
            values.append(value)
        return values

    def refresh(self, generation: int) -> None:
        """Score on generation ``generation``'s windows from now on."""
        if self.window_sets is None:
            raise ValueError("this fitness was built without window sets")
        windows = self.window_sets(generation)
        if self.screening_windows is not None:
            self.screening_windows = windows[: self.screening_windows.shape[0], : self.screening_windows.shape[1]]
        self.windows = windows


class DistillationFitness(PerplexityFitness):
    """Mean KL(dense || subnet) per predicted token on the fitness windows (nats; lower is better).

    The dense model's log-probabilities are computed once per window set and kept (float16, windows x
    tokens x vocabulary; about 100 MB for SmolLM2 on 4 x 256 tokens)."""

    metric = "distillation"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reference: dict[tuple, torch.Tensor] = {}

    def reference(self, windows: torch.Tensor) -> torch.Tensor:
        key = (windows.data_ptr(), tuple(windows.shape), tuple(windows.stride()))
        if key not in self._reference:
            if len(self._reference) >= 4:  # old window sets (fitness_refresh)
                self._reference.clear()
            self._reference[key] = _log_probs(self.model, windows, self.batch_size).to(torch.float16)
        return self._reference[key]

    def measure(self, subnet, windows: torch.Tensor) -> float:
        return distillation_loss(subnet, windows, self.reference(windows), self.batch_size)


@torch.no_grad()
def _log_probs(model, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Next-token log-probabilities at every predicting position: (windows, seq_len - 1, vocab), float32."""
    from optimum_subnet.families import get_adapter_for_subnet

    device = next(model.parameters()).device
    adapter = get_adapter_for_subnet(model.config)
    out = []
    for batch in windows.split(max(1, batch_size)):
        hidden = adapter.final_hidden_states(model, batch.to(device))[:, :-1]
        out.append(F.log_softmax(adapter.logits(model, hidden).float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def distillation_loss(model, windows: torch.Tensor, reference: torch.Tensor, batch_size: int) -> float:
    """Mean over predicted tokens of KL(reference || model): ``reference`` holds the teacher's
    log-probabilities, (windows, seq_len - 1, vocab)."""
    total, count, start = 0.0, 0, 0
    for batch in windows.split(max(1, batch_size)):
        student = _log_probs(model, batch, batch.shape[0])
        teacher = reference[start : start + batch.shape[0]].float()
        start += batch.shape[0]
        total += float((teacher.exp() * (teacher - student)).sum())
        count += student.shape[0] * student.shape[1]
    value = total / count
    return value if math.isfinite(value) else math.inf


def default_keep_bytes(model) -> int:
    """How much of the device's free memory the screening may keep built subnets in: half of it on a
    GPU, a quarter of the available RAM on the CPU (a shared machine)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        import psutil

        return int(psutil.virtual_memory().available * 0.25)
    except ImportError:  # pragma: no cover
        return 2 * 2**30


class FaithfulnessConstrainedFitness(PerplexityFitness):
    """Perplexity fitness that rejects (fitness ``inf``) candidates whose AtMan relevance maps drift
    from the dense model's: mean Spearman below ``min_spearman`` on the scorer's prompts.

    ``scorer`` is a :class:`optimum_subnet.evaluation.faithfulness.FaithfulnessScorer` holding the dense
    model's relevance maps, computed once.
    """

    def __init__(self, model, adapter, windows: torch.Tensor, batch_size: int, scorer, min_spearman: float,
                 screening_windows: torch.Tensor | None = None, **kwargs):
        super().__init__(model, adapter, windows, batch_size, screening_windows, **kwargs)
        self.scorer = scorer
        self.min_spearman = min_spearman
        self.rejected = 0
        self.scores: list[float | None] = []

    @torch.no_grad()
    def score(self, spec) -> float:
        subnet = self.subnet(spec)
        score = self.scorer.score(subnet)["spearman"]
        self.scores.append(score)
        if score is None or score < self.min_spearman:
            self.rejected += 1
            return float("inf")
        return self.measure(subnet, self.windows)
