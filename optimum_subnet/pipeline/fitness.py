"""Fitness of a candidate spec: perplexity of its physically extracted subnet on calibration windows.

The search engine hands out :class:`~optimum_subnet.core.spec.SubnetSpec` candidates; this is where they
meet the model (surgery + perplexity), outside :mod:`optimum_subnet.search`.
"""

from __future__ import annotations

import torch

from optimum_subnet.evaluation.perplexity import perplexity
from optimum_subnet.stages.surgery import extract_subnet


class PerplexityFitness:
    """``fitness(spec) -> perplexity`` (lower is better).

    Each call cuts the real subnet out of the dense model (kept rows/columns copied, embeddings and
    norms shared), so a candidate costs its own, smaller forward pass rather than the dense one.
    """

    def __init__(self, model, adapter, windows: torch.Tensor, batch_size: int,
                 screening_windows: torch.Tensor | None = None):
        self.model = model
        self.adapter = adapter
        self.windows = windows
        self.batch_size = batch_size
        self.screening_windows = screening_windows

    def subnet(self, spec):
        """The candidate's subnet (search candidates are valid by construction: not re-validated)."""
        return extract_subnet(self.model, spec, self.adapter, validate=False)

    @torch.no_grad()
    def __call__(self, spec) -> float:
        return perplexity(self.subnet(spec), self.windows, self.batch_size)

    @torch.no_grad()
    def screen(self, spec) -> float:
        """Cheap proxy for the search's screening round: perplexity on the short screening windows."""
        if self.screening_windows is None:
            raise ValueError("this fitness was built without screening windows")
        return perplexity(self.subnet(spec), self.screening_windows, self.batch_size)


class FaithfulnessConstrainedFitness(PerplexityFitness):
    """Perplexity fitness that rejects (fitness ``inf``) candidates whose AtMan relevance maps drift
    from the dense model's: mean Spearman below ``min_spearman`` on the scorer's prompts.

    ``scorer`` is a :class:`optimum_subnet.evaluation.faithfulness.FaithfulnessScorer` holding the dense
    model's relevance maps, computed once.
    """

    def __init__(self, model, adapter, windows: torch.Tensor, batch_size: int, scorer, min_spearman: float,
                 screening_windows: torch.Tensor | None = None):
        super().__init__(model, adapter, windows, batch_size, screening_windows)
        self.scorer = scorer
        self.min_spearman = min_spearman
        self.rejected = 0
        self.scores: list[float | None] = []

    @torch.no_grad()
    def __call__(self, spec) -> float:
        subnet = self.subnet(spec)
        score = self.scorer.score(subnet)["spearman"]
        self.scores.append(score)
        if score is None or score < self.min_spearman:
            self.rejected += 1
            return float("inf")
        return perplexity(subnet, self.windows, self.batch_size)
