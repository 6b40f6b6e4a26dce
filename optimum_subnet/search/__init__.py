"""Training-free evolutionary search over per-layer widths, masks and depth."""

from optimum_subnet.search.evolution import ENGINE_SETTINGS, EvolutionarySearch, SearchResult
from optimum_subnet.search.space import Genome, LayerGene, SearchSpace, paper_ranges

__all__ = [
    "ENGINE_SETTINGS",
    "EvolutionarySearch",
    "Genome",
    "LayerGene",
    "SearchResult",
    "SearchSpace",
    "paper_ranges",
]
