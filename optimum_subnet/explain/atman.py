"""AtMan's math, free of models and tokenizers (Deiseroth et al., NeurIPS 2023, "AtMan: Understanding
Transformer Predictions Through Memory Efficient Attention Manipulation", Sec. 3).

AtMan explains a prediction by suppressing one input unit's attention in every layer and head and
measuring how much the target's cross-entropy rises. Two ways to suppress key ``k`` by a factor
``f_k`` in [0, 1] (``f = 0``: no change) are implemented, and they are **not** the same function:

* **multiplicative** (the paper's Eq. 4, and Aleph Alpha's API with ``control_log_additive=False``):
  shift each pre-softmax score row to a zero minimum over the keys the query may attend to, then
  multiply the suppressed columns by ``1 - f_k``::

      s'_qk = (s_qk - m_q) * (1 - f_k),   m_q = min over valid k' of s_qk'

  Softmax ignores per-row constants, so this equals the *additive, score-dependent* bias
  ``s_qk - f_k (s_qk - m_q)``, which is what :func:`multiplicative_scores` computes (it is exactly
  ``s`` when ``f = 0``). The bias depends on the scores, so it cannot be handed to a fused SDPA
  kernel as a precomputed mask: it needs the score matrix (we compute it in query chunks).

* **log_bias** (the API's default ``control_log_additive=True``): add ``log(1 - f_k)`` to column
  ``k``. That is exactly "multiply the key's unnormalized weight ``exp(s_qk)`` by ``1 - f_k`` and
  renormalize": ``p'_qk = (1 - f_k) p_qk / sum_k' (1 - f_k') p_qk'``. A per-key constant, so it is
  an ordinary additive attention mask (SDPA, ONNX).

What is equivalent: both are the identity at ``f = 0``, touch only the suppressed columns, keep
causality, and lower the suppressed key's weight monotonically in ``f``. They coincide for a query
exactly when the key's shifted score ``s_qk - m_q`` equals ``-log(1 - f) / f`` (2.558 at f = 0.9).
Otherwise they differ: the multiplicative form damps a key more the more the query attends to it and
not at all when the key already has the row's minimum score, and at ``f = 1`` it lowers the key to
the row minimum instead of removing it; the log-bias form damps every query's weight on the key by
the same factor and removes it at ``f = 1``. Relevance maps of the two forms are therefore close but
not identical; :mod:`tests.unit.test_atman_math` pins these identities down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

GRANULARITIES = ("token", "word", "sentence")
MODES = ("multiplicative", "log_bias")


# ------------------------------------------------------------------------------ score manipulation
def multiplicative_scores(scores: torch.Tensor, valid: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """The paper's form, as ``s - f * (s - m)`` (= ``(s - m)(1 - f)`` up to the per-row constant ``m``).

    ``scores``: pre-softmax scores (already scaled), ``(..., q, k)``; ``valid``: bool, broadcastable,
    True where the query may attend to the key; ``factors``: ``(..., 1, k)`` suppression per key.
    The row minimum is taken over valid keys only: including future keys would let a suppressed
    token change the attention of queries before it (a causality leak). Entries at invalid
    positions are returned unchanged; the caller masks them.
    """
    high = torch.finfo(scores.dtype).max
    row_min = scores.masked_fill(~valid, high).amin(dim=-1, keepdim=True)
    return scores - factors * (scores - row_min)


def log_bias(factors: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive per-key bias ``log(1 - f)``; ``f = 1`` gives a large finite negative (not -inf, so a
    query whose only visible key is suppressed still has a defined softmax)."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.log1p(-factors.to(compute)).clamp(min=torch.finfo(dtype).min / 4).to(dtype)


# ----------------------------------------------------------------------------------- relevance
def relevance_from_losses(base_loss: float | torch.Tensor, suppressed_losses: torch.Tensor) -> torch.Tensor:
    """AtMan's relevance of a unit: how much suppressing it raises the target cross-entropy (Eq. 5).
    Positive: the prediction relied on the unit; negative: the unit worked against the target."""
    return suppressed_losses - base_loss


def cosine_similarity_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of (n, d) input embeddings, in float32."""
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return e @ e.T


def suppression_factors(units: list[list[int]], length: int, factor: float, explained: list[int] | None = None,
                        similarity: torch.Tensor | None = None, kappa: float = 0.6) -> torch.Tensor:
    """One row of per-position suppression factors per unit, ``(len(units), length)``.

    A unit's own tokens get ``factor``. With ``similarity`` (the correlated-token extension, AtMan
    Sec. 3.3), every other explained position ``k`` whose input embedding has cosine similarity
    ``c >= kappa`` with some token of the unit is suppressed by ``factor * c`` (the largest such
    ``c``), so that a repeated or near-synonymous token cannot carry the suppressed information
    around the suppression. ``explained`` lists the positions that may be suppressed at all (the
    prompt tokens; never the target tokens that are being scored); ``similarity`` is
    ``(length, length)``.
    """
    rows = torch.zeros(len(units), length, dtype=torch.float32)
    allowed = torch.zeros(length, dtype=torch.bool)
    allowed[explained if explained is not None else list(range(length))] = True
    for row, members in enumerate(units):
        if similarity is not None:
            c = similarity[members].max(dim=0).values.clamp(min=0.0, max=1.0)
            correlated = (c >= kappa) & allowed
            rows[row, correlated] = factor * c[correlated]
        rows[row, members] = factor
    return rows


# --------------------------------------------------------------------------------- granularity
@dataclass(frozen=True)
class Unit:
    """What one suppression removes: a token, a word or a sentence of the prompt."""

    start: int  # character span in the prompt
    end: int
    tokens: tuple[int, ...]  # token positions in the input ids


_WORD = re.compile(r"\S+")
# A sentence runs to a terminator (. ! ? or a line break) followed by whitespace, or to the end.
_SENTENCE = re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|(?=\n)|$)", re.DOTALL)


def text_spans(text: str, granularity: str) -> list[tuple[int, int]]:
    """Character spans of the words (whitespace-separated) or sentences of ``text``. A sentence ends at
    ``.``, ``!`` or ``?`` followed by whitespace, or at a line break; a rule, not a parser, so an
    abbreviation such as "Dr." ends a sentence too."""
    if granularity == "word":
        return [m.span() for m in _WORD.finditer(text)]
    if granularity == "sentence":
        return [m.span() for m in _SENTENCE.finditer(text)]
    raise ValueError(f"no spans for granularity {granularity!r}")


def group_tokens(text: str, offsets: list[tuple[int, int]], granularity: str,
                 positions: list[int] | None = None) -> list[Unit]:
    """Units of the prompt for one granularity.

    ``offsets[i]`` is the character span of token ``i`` (``(0, 0)`` or empty: a special token, never a
    unit). ``positions[i]`` is that token's index in the model input (default ``i``). A token belongs to
    the word/sentence holding its first non-space character; whitespace-only tokens join the
    preceding unit (the next one at the very start).
    """
    positions = list(range(len(offsets))) if positions is None else positions
    content = [(i, s, e) for i, (s, e) in enumerate(offsets) if e > s]
    if granularity == "token":
        return [Unit(s, e, (positions[i],)) for i, s, e in content]
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}")
    spans = text_spans(text, granularity)
    members: list[list[int]] = [[] for _ in spans]
    pending: list[int] = []  # whitespace tokens before the first unit
    for i, s, e in content:
        stripped = len(text[s:e]) - len(text[s:e].lstrip())
        anchor = s + stripped if stripped < e - s else None
        index = None
        if anchor is not None:
            index = next((u for u, (a, b) in enumerate(spans) if a <= anchor < b), None)
        if index is None:  # whitespace-only token, or outside every span
            index = max((u for u, (a, _) in enumerate(spans) if a <= s), default=None)
        if index is None:
            pending.append(positions[i])
            continue
        members[index].append(positions[i])
    if pending and members:
        members[0] = pending + members[0]
    units = []
    for (a, b), toks in zip(spans, members):
        if toks:
            units.append(Unit(a, b, tuple(toks)))
    return units
