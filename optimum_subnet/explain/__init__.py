"""Explanations without backpropagation (AtMan, Deiseroth et al. 2023) and the faithfulness of a
compressed model to its dense model.

* :class:`AtManExplainer` / :class:`AtManConfig` / :class:`Explanation`: relevance of prompt tokens,
  words or sentences for a target continuation.
* :mod:`.attention`: the registered ``"atman"`` attention function (the hook).
* :mod:`.faithfulness`: Spearman rank correlation and top-k overlap of relevance maps, BoolQ prompts.
* :mod:`.render`: HTML and PNG pictures.
"""

from optimum_subnet.explain.atman import GRANULARITIES, MODES
from optimum_subnet.explain.attention import ATMAN_ATTENTION, Suppression, atman_attention, register_atman_attention
from optimum_subnet.explain.explainer import AtManConfig, AtManExplainer, ExplainedUnit, Explanation
from optimum_subnet.evaluation.faithfulness import FaithfulnessConfig, FaithfulnessScorer, boolq_prompts, faithfulness, spearman, top_k_overlap

__all__ = [
    "ATMAN_ATTENTION",
    "AtManConfig",
    "AtManExplainer",
    "ExplainedUnit",
    "Explanation",
    "FaithfulnessConfig",
    "FaithfulnessScorer",
    "GRANULARITIES",
    "MODES",
    "Suppression",
    "atman_attention",
    "boolq_prompts",
    "faithfulness",
    "register_atman_attention",
    "spearman",
    "top_k_overlap",
]
