"""``AtManExplainer``: per-token (word, sentence) relevance of a prompt for a target continuation.

    >>> from optimum_subnet.explain import AtManConfig, AtManExplainer
    >>> explainer = AtManExplainer(model, tokenizer, AtManConfig(granularity="word"))
    >>> explanation = explainer.explain("The capital of France is", " Paris")
    >>> explanation.top(3)

Cost: one forward pass of prompt + target per unit plus one unmanipulated pass, batched
``batch_size`` at a time, with no backward pass (Deiseroth et al. 2023): memory stays that of a
forward pass of ``batch_size`` sequences. Only the target positions' logits are computed.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from optimum_subnet.core.errors import SubnetError
from optimum_subnet.explain.atman import (GRANULARITIES, MODES, cosine_similarity_matrix, group_tokens, relevance_from_losses,
                    suppression_factors)
from optimum_subnet.explain.attention import Suppression, atman_attention

logger = logging.getLogger(__name__)


@dataclass
class AtManConfig:
    """AtMan settings. Defaults follow the paper: f = 0.9, correlated threshold kappa = 0.6."""

    suppression_factor: float = 0.9  # f: suppressed scores keep (1 - f)
    mode: str = "multiplicative"  # or "log_bias" (see optimum_subnet.explain.atman)
    granularity: str = "token"  # what one suppression removes: token, word or sentence
    correlated: bool = False  # also suppress tokens with similar input embeddings (Sec. 3.3)
    kappa: float = 0.6  # cosine threshold of the correlated extension
    batch_size: int = 8  # manipulated sequences per forward pass
    query_chunk: int | None = 512  # queries per attention step (bounds the score matrix); None: all

    def __post_init__(self):
        self.validate()

    def validate(self) -> "AtManConfig":
        checks = [
            (0.0 <= self.suppression_factor <= 1.0, f"suppression factor must be in [0, 1], got {self.suppression_factor}"),
            (self.mode in MODES, f"unknown AtMan mode {self.mode!r}; use one of {', '.join(MODES)}"),
            (self.granularity in GRANULARITIES,
             f"unknown granularity {self.granularity!r}; use one of {', '.join(GRANULARITIES)}"),
            (0.0 < self.kappa <= 1.0, f"kappa must be in (0, 1], got {self.kappa}"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.query_chunk is None or self.query_chunk >= 1, f"query chunk must be >= 1, got {self.query_chunk}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SubnetError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AtManConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SubnetError(f"unknown AtMan option(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass
class ExplainedUnit:
    text: str
    relevance: float
    start: int
    end: int
    tokens: list[int] = field(default_factory=list)  # positions in the model input


@dataclass
class Explanation:
    """Relevance of each prompt unit for the target; ``to_dict()`` is the ``explanation.json`` format."""

    prompt: str
    target: str
    units: list[ExplainedUnit]
    target_loss: float  # mean cross-entropy of the target tokens, unmanipulated
    granularity: str = "token"
    config: dict[str, Any] = field(default_factory=dict)
    model: str | None = None

    @property
    def relevance(self) -> list[float]:
        return [u.relevance for u in self.units]

    def top(self, k: int = 5) -> list[ExplainedUnit]:
        return sorted(self.units, key=lambda u: -u.relevance)[:k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "target": self.target,
            "tokens": [{"token": u.text, "relevance": u.relevance, "start": u.start, "end": u.end} for u in self.units],
            "granularity": self.granularity,
            "target_loss": self.target_loss,
            "model": self.model,
            "atman": self.config,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Explanation":
        units = [ExplainedUnit(t["token"], float(t["relevance"]), t.get("start", 0), t.get("end", 0))
                 for t in data["tokens"]]
        return cls(data["prompt"], data["target"], units, float(data.get("target_loss", float("nan"))),
                   data.get("granularity", "token"), data.get("atman", {}), data.get("model"))


class AtManExplainer:
    """Explains causal-LM predictions with AtMan; works on any model whose attention goes through
    transformers' attention interface (stock LLaMA-family models and ``subnet_llama`` subnets)."""

    def __init__(self, model, tokenizer=None, config: AtManConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = (config or AtManConfig()).validate()

    # ------------------------------------------------------------------------------- text level
    def tokenize(self, prompt: str, target: str) -> tuple[list[int], list[tuple[int, int]], list[int]]:
        """``(prompt_ids, prompt_offsets, target_ids)``; prompt and target are tokenized separately so
        that the target's tokens are exactly those of ``target``."""
        if self.tokenizer is None:
            raise SubnetError("explaining text needs a tokenizer")
        if not prompt.strip():
            raise SubnetError("the prompt is empty")
        if not getattr(self.tokenizer, "is_fast", False):
            raise SubnetError("AtMan explanations need a fast tokenizer (one that reports character offsets)")
        encoded = self.tokenizer(prompt, return_offsets_mapping=True)
        target_ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        if not target_ids:
            raise SubnetError("the target is empty after tokenization; give the continuation to explain")
        special = set(self.tokenizer.all_special_ids)
        offsets = [(0, 0) if i in special and s == e else (int(s), int(e))
                   for i, (s, e) in zip(encoded["input_ids"], encoded["offset_mapping"])]
        return list(encoded["input_ids"]), offsets, list(target_ids)

    def explain(self, prompt: str, target: str) -> Explanation:
        prompt_ids, offsets, target_ids = self.tokenize(prompt, target)
        units = group_tokens(prompt, offsets, self.config.granularity)
        if not units:
            raise SubnetError("the prompt has no tokens to explain")
        base, relevance = self.explain_ids(prompt_ids + target_ids, len(target_ids), [list(u.tokens) for u in units])
        explained = [ExplainedUnit(prompt[u.start:u.end], float(r), u.start, u.end, list(u.tokens))
                     for u, r in zip(units, relevance.tolist())]
        return Explanation(prompt, target, explained, base, self.config.granularity, self.config.to_dict(),
                           getattr(self.model.config, "name_or_path", None) or None)

    # ------------------------------------------------------------------------------- id level
    def explain_ids(self, input_ids: list[int] | torch.Tensor, num_target: int,
                    units: list[list[int]] | None = None) -> tuple[float, torch.Tensor]:
        """``(target loss, relevance per unit)`` for one sequence whose last ``num_target`` ids are the
        target. ``units``: lists of positions suppressed together (default: every prompt position)."""
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
        length = ids.numel()
        if not 1 <= num_target < length:
            raise SubnetError(f"need at least one prompt and one target token (got {length - num_target} and "
                              f"{num_target})")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and length > limit:
            raise SubnetError(f"prompt + target is {length} tokens; the model accepts at most {limit}")
        prompt_positions = list(range(length - num_target))
        units = [[p] for p in prompt_positions] if units is None else units
        if any(not u or min(u) < 0 or max(u) >= length - num_target for u in units):
            raise SubnetError("every unit must be a non-empty list of prompt positions")
        similarity = None
        if self.config.correlated:
            with torch.no_grad():
                weight = self.model.get_input_embeddings().weight
                similarity = cosine_similarity_matrix(weight[ids.to(weight.device)]).cpu()
        explained = sorted({p for u in units for p in u})
        factors = suppression_factors(units, length, self.config.suppression_factor, explained, similarity,
                                      self.config.kappa)
        factors = torch.cat([torch.zeros(1, length), factors])  # row 0: the unmanipulated pass
        losses = self.target_losses(ids, num_target, factors)
        return float(losses[0]), relevance_from_losses(losses[0], losses[1:])

    @torch.no_grad()
    def target_losses(self, input_ids: torch.Tensor, num_target: int, factors: torch.Tensor) -> torch.Tensor:
        """Mean target cross-entropy of ``input_ids`` under each row of suppression ``factors``
        ``(rows, length)``, ``batch_size`` rows per forward pass; float32 on the CPU."""
        device = next(self.model.parameters()).device
        ids = input_ids.to(device)
        targets = ids[-num_target:]
        losses = []
        with atman_attention(self.model):
            for rows in factors.split(self.config.batch_size):
                batch = ids.expand(rows.shape[0], -1)
                manipulation = Suppression(rows.to(device), self.config.mode, self.config.query_chunk)
                # logits of the last num_target + 1 positions; the final one predicts past the target
                logits = self.model(input_ids=batch, use_cache=False, logits_to_keep=num_target + 1,
                                    atman=manipulation).logits[:, :-1].float()
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.repeat(rows.shape[0]),
                                       reduction="none").view(rows.shape[0], num_target).mean(dim=1)
                losses.append(loss.cpu())
        out = torch.cat(losses)
        if not torch.isfinite(out).all():
            raise SubnetError("non-finite target loss: the model produces NaN/inf logits on this prompt")
        return out


__all__ = ["AtManConfig", "AtManExplainer", "ExplainedUnit", "Explanation"]
