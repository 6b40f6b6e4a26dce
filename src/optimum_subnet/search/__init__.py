"""Training-free evolutionary search over per-layer widths, masks and depth."""

from .evolution import EvolutionarySearch, EvolutionSettings, SearchResult
from .fitness import FaithfulnessConstrainedFitness, PerplexityFitness
from .space import Genome, LayerGene, SearchSpace, paper_ranges

__all__ = [
    "EvolutionSettings",
    "EvolutionarySearch",
    "FaithfulnessConstrainedFitness",
    "Genome",
    "LayerGene",
    "PerplexityFitness",
    "SearchResult",
    "SearchSpace",
    "paper_ranges",
]
